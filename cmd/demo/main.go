// Command demo runs the local demo behind `make demo`: a real control plane
// (etcd and kube-apiserver from bin/), and three replicas of
// otelcol-embedded-ta as one StatefulSet-like group, otcta-collector-0..2.
// It prints where each replica answers and the group as the replicas see
// it, keeps running until Ctrl-C, and then stops everything it started.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

const (
	replicas  = 3
	group     = "otcta-collector"
	namespace = "default"
	// Replica i serves the allocator API on 8080+i and its own metrics on 8888+i.
	apiPort       = 8080
	telemetryPort = 8888
	otlpPort      = 4317
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
		fmt.Println("Stopped the replicas and the control plane.")
	}()
	for i := range replicas {
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
			"OTLP_ENDPOINT=127.0.0.1:"+strconv.Itoa(otlpPort+i),
			"TELEMETRY_PORT="+strconv.Itoa(telemetryPort+i),
		)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		fmt.Printf("Started %s: status http://127.0.0.1:%d/status, metrics http://127.0.0.1:%d/metrics, log %s\n",
			name, apiPort+i, telemetryPort+i, logPath)
	}

	// Show the group once it has settled, then whenever its leader changes.
	shown := ""
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Println("\nStopping ...")
			return nil
		case <-ticker.C:
		}
		v, ok := status(apiPort)
		if !ok || v.Leader == "" || len(v.Members) == 0 || v.Leader == shown {
			continue
		}
		shown = v.Leader
		fmt.Printf("\nGroup %s in namespace %s: leader %s (epoch %d), %d members:\n", v.Group, v.Namespace, v.Leader, v.Epoch, len(v.Members))
		for _, m := range v.Members {
			fmt.Printf("  %-20s %-18s lease renewed %s ago\n", m.Identity, m.Endpoint, m.LeaseAge)
		}
		fmt.Println("Kill the leader's process to watch another replica take over; Ctrl-C stops the demo.")
	}
}

func status(port int) (targetallocatorextension.View, bool) {
	var v targetallocatorextension.View
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/status")
	if err != nil {
		return v, false
	}
	defer resp.Body.Close()
	return v, resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&v) == nil
}
