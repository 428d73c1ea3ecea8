// Command demo runs the local demo behind `make demo`: three collectors that
// share six Prometheus targets without a separate Target Allocator. It
// starts a real control plane (etcd and kube-apiserver from bin/), six demo
// targets (127.0.0.1:9090-9092 and 127.0.0.2:9090-9092, jobs otc0..otc5,
// each exposing a TargetAllocator_total counter), and three members of
// otelcol-embedded-ta as one StatefulSet-like group, otcta-collector-0..2,
// each with a prometheus exporter of its own. It prints each member's pid and
// where its status page is, then the group and the merged scrape result
// whenever they change, keeps running until Ctrl-C, and then stops
// everything it started.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/demotarget"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

const (
	members   = 3
	group     = "otcta-collector"
	namespace = "default"
	// Member i serves the allocator API on 8080+i, its prometheus exporter
	// on 8889+10·i and its own metrics on 8888+10·i.
	apiPort       = 8080
	exporterPort  = 8889
	telemetryPort = 8888
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	otelcol, err := filepath.Abs("bin/otelcol-embedded-ta")
	if err != nil {
		return err
	}
	targets, err := demotarget.StartDemo()
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range targets {
			_ = t.Close()
		}
	}()
	fmt.Println("Started the six demo targets:", strings.Join(demotarget.DemoAddrs, " "))

	fmt.Println("Starting the control plane (etcd, kube-apiserver) ...")
	cp, err := kubetest.Start()
	if err != nil {
		return err
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stop control plane:", err)
		}
	}()
	work, err := os.MkdirTemp("", "embedded-ta-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	kubeconfig := filepath.Join(work, "kubeconfig")
	if err := clientcmd.WriteToFile(kubetest.Kubeconfig(cp.Config, namespace), kubeconfig); err != nil {
		return err
	}

	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
		fmt.Println("Stopped the members, the targets and the control plane.")
	}()
	for i := range members {
		name := fmt.Sprintf("%s-%d", group, i)
		logPath := filepath.Join(work, name+".log")
		logFile, err := os.Create(logPath)
		if err != nil {
			return err
		}
		defer logFile.Close()
		cmd := exec.Command(otelcol, "--config", "examples/local/replica.yaml")
		cmd.Env = append(os.Environ(),
			"POD_NAME="+name,
			"KUBECONFIG="+kubeconfig,
			"ALLOCATOR_ENDPOINT=127.0.0.1:"+strconv.Itoa(apiPort+i),
			"EXPORTER_ENDPOINT=127.0.0.1:"+strconv.Itoa(exporterPort+10*i),
			"TELEMETRY_PORT="+strconv.Itoa(telemetryPort+10*i),
		)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		fmt.Printf("Started %s (pid %d): status page http://127.0.0.1:%d/  exporter http://127.0.0.1:%d/metrics  log %s\n",
			name, cmd.Process.Pid, apiPort+i, exporterPort+10*i, logPath)
	}

	// Show the group and the merged scrape result once all six targets are
	// scraped, then again whenever the leader or the listing changes.
	shown := ""
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Println("\nStopping ...")
			return nil
		case <-ticker.C:
		}
		v, ok := status()
		if !ok || v.Leader == "" {
			continue
		}
		listing := merged()
		if len(listing) < 2*len(demotarget.DemoAddrs) {
			continue
		}
		state := v.Leader + strings.Join(listing, "\n")
		if state == shown {
			continue
		}
		shown = state
		fmt.Printf("\nGroup %s: leader %s (epoch %d), members:\n", v.Group, v.Leader, v.Epoch)
		for _, m := range v.Members {
			fmt.Printf("  %-20s %-16s lease renewed %s ago\n", m.Identity, m.Endpoint, m.LeaseAge)
		}
		fmt.Println("\nMerged scrape result (curl <exporter>/metrics | grep -E '(target_info|TargetAllocator_total)'):")
		for _, line := range listing {
			fmt.Println(" ", line)
		}
		fmt.Println("\nStop a member to watch its targets move: kill -9 <pid> (a crash) or kill <pid> (a graceful stop);")
		fmt.Println("the demo does not restart it. Ctrl-C stops the demo.")
	}
}

// status asks any member that answers for its view of the group.
func status() (targetallocatorextension.View, bool) {
	var v targetallocatorextension.View
	client := http.Client{Timeout: time.Second}
	for i := range members {
		resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(apiPort+i) + "/status")
		if err != nil {
			continue
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err == nil {
			return v, true
		}
	}
	return v, false
}

// merged is the union of the members' exported demo series, each line
// prefixed with the member that scraped it.
func merged() []string {
	var out []string
	client := http.Client{Timeout: time.Second}
	for i := range members {
		resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(exporterPort+10*i) + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "TargetAllocator_total{") || strings.HasPrefix(line, "target_info{") {
				out = append(out, fmt.Sprintf("%s-%d: %s", group, i, line))
			}
		}
		resp.Body.Close()
	}
	slices.SortFunc(out, func(a, b string) int {
		return strings.Compare(a[strings.Index(a, ": "):], b[strings.Index(b, ": "):])
	})
	return out
}
