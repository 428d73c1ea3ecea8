// Package e2e runs the ocb-built otelcol-embedded-ta as real processes
// against a real local control plane, the way a user runs a StatefulSet.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/testaddr"
)

var (
	controlPlane *kubetest.Env
	otelcol      string
)

func TestMain(m *testing.M) {
	var err error
	otelcol, err = filepath.Abs("../bin/otelcol-embedded-ta")
	if err == nil {
		_, err = os.Stat(otelcol)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the distribution is missing, run `make otelcol`:", err)
		os.Exit(1)
	}
	kubetest.Main(m, &controlPlane, printFaultTable)
}

// process is one collector replica running as its own process.
type process struct {
	name      string
	endpoint  string // allocator API
	exporter  string // the prometheus exporter: what this member scraped
	telemetry string // the collector's own metrics
	health    string // the health_check extension, where a test's config has one (HEALTH_ENDPOINT)
	cmd       *exec.Cmd
	log       string
	exited    chan error
	done      chan struct{} // closed when the process has exited
	// apiScheme and apiClient reach the allocator API when it is secured
	// ("https", a client with the CA and a certificate; a token): by default
	// plain HTTP with a one-second timeout.
	apiScheme string
	apiClient *http.Client
}

// replicaConfig is the configuration of the demo's replicas.
const replicaConfig = "../examples/local/replica.yaml"

// startProcess starts one member named name with the given configuration
// file; extraEnv adds to its environment.
func startProcess(t *testing.T, kubeconfig, name, config string, extraEnv ...string) *process {
	t.Helper()
	return startProcessArgs(t, kubeconfig, name, []string{"--config", config}, extraEnv...)
}

// startProcessArgs starts one member named name with the given
// command-line arguments (--config, once or more).
func startProcessArgs(t *testing.T, kubeconfig, name string, args []string, extraEnv ...string) *process {
	t.Helper()
	p := &process{
		name:      name,
		endpoint:  testaddr.Free(t),
		exporter:  testaddr.Free(t),
		telemetry: testaddr.Free(t),
		log:       filepath.Join(t.TempDir(), name+".log"),
		exited:    make(chan error, 1),
		done:      make(chan struct{}),
	}
	_, telemetryPort, _ := net.SplitHostPort(p.telemetry)
	logFile, err := os.Create(p.log)
	require.NoError(t, err)
	p.cmd = exec.Command(otelcol, args...)
	p.cmd.Env = append(os.Environ(),
		"POD_NAME="+name,
		"KUBECONFIG="+kubeconfig,
		"ALLOCATOR_ENDPOINT="+p.endpoint,
		"EXPORTER_ENDPOINT="+p.exporter,
		"TELEMETRY_PORT="+telemetryPort,
	)
	p.cmd.Env = append(p.cmd.Env, extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	require.NoError(t, p.cmd.Start())
	go func() {
		p.exited <- p.cmd.Wait()
		close(p.done)
		logFile.Close()
	}()
	group := testGroups.add(t, p)
	t.Cleanup(func() {
		// Every member of the test gets SIGTERM at once: leaving together,
		// none waits to hand its share over to another.
		for _, q := range group() {
			select {
			case <-q.done:
			default:
				_ = q.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		p.terminate()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("log of %s:\n%s", name, tail(string(b), 40))
		}
	})
	return p
}

// stopTimeout is how long a member may take to stop after SIGTERM before it
// gets SIGKILL, as terminationGracePeriodSeconds: a graceful stop hands the
// member's share over first, which takes its receiver's refresh_interval
// and the stock receiver's delays (10 s), bounded by refresh_interval + 30 s.
const stopTimeout = 40 * time.Second

// testGroups are the processes each test started.
var testGroups = &processGroups{byTest: map[*testing.T][]*process{}}

type processGroups struct {
	mu     sync.Mutex
	byTest map[*testing.T][]*process
}

// add records p as one of t's processes and returns a function that lists
// them.
func (g *processGroups) add(t *testing.T, p *process) func() []*process {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.byTest[t] = append(g.byTest[t], p)
	return func() []*process {
		g.mu.Lock()
		defer g.mu.Unlock()
		return slices.Clone(g.byTest[t])
	}
}

// terminate stops the process as Kubernetes does: SIGTERM, then SIGKILL.
func (p *process) terminate() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *process) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	<-p.exited
}

// status reads /status; ok is false while the process does not answer.
func (p *process) status() (v targetallocatorextension.View, ok bool) {
	client, scheme := p.apiClient, p.apiScheme
	if client == nil {
		client, scheme = &http.Client{Timeout: time.Second}, "http"
	}
	resp, err := client.Get(scheme + "://" + p.endpoint + "/status")
	if err != nil {
		return v, false
	}
	defer resp.Body.Close()
	return v, resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&v) == nil
}

// metric reads one of the collector's own metrics, summed over its series.
func (p *process) metric(name string) (float64, error) {
	resp, err := http.Get("http://" + p.telemetry + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sum, found := 0.0, false
	var seen []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "targetallocator") && !strings.HasPrefix(line, "#") {
			seen = append(seen, line)
		}
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, err
		}
		sum, found = sum+v, true
	}
	if !found {
		return 0, fmt.Errorf("%s not exposed; exposed: %v", name, seen)
	}
	return sum, nil
}

// settled waits until the processes agree on one leader among them and on
// their member list, and returns the leader. A process that exits fails the
// test at once.
func settled(t *testing.T, procs []*process, within time.Duration) *process {
	t.Helper()
	var want []string
	for _, p := range procs {
		want = append(want, p.name)
	}
	slices.Sort(want)
	deadline := time.Now().Add(within)
	for {
		for _, p := range procs {
			select {
			case <-p.done:
				t.Fatalf("%s exited:\n%s", p.name, tail(readFile(p.log), 20))
			default:
			}
		}
		leader, err := agreed(procs, want)
		if err == nil {
			return leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("the group did not settle within %s: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// agreed returns the leader if every process names it, the leader lists
// want as members, and each follower the leader and itself (the leader
// alone watches every member Lease) and the group's size as the leader
// wrote it.
func agreed(procs []*process, want []string) (*process, error) {
	var leader *process
	var leaders []string
	for _, p := range procs {
		v, ok := p.status()
		if !ok {
			return nil, fmt.Errorf("%s does not answer /status", p.name)
		}
		var members []string
		for _, m := range v.Members {
			members = append(members, m.Identity)
		}
		seen := want
		if !v.IsLeader {
			seen = slices.Sorted(slices.Values([]string{v.Leader, p.name}))
		}
		if !slices.Equal(seen, members) || v.GroupSize != len(want) {
			return nil, fmt.Errorf("%s sees members %v of %d, want %v of %d", p.name, members, v.GroupSize, seen, len(want))
		}
		leaders = append(leaders, v.Leader)
		if v.IsLeader {
			leader = p
		}
	}
	switch {
	case len(slices.Compact(leaders)) != 1:
		return nil, fmt.Errorf("replicas name different leaders: %v", leaders)
	case leader == nil:
		return nil, errors.New("no replica leads")
	case leader.name != leaders[0]:
		return nil, fmt.Errorf("%s leads but the group names %s", leader.name, leaders[0])
	}
	return leader, nil
}

// newLeader waits until one of procs leads and returns how long after since.
func newLeader(t *testing.T, procs []*process, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	require.Eventually(t, func() bool {
		for _, p := range procs {
			if v, ok := p.status(); ok && v.IsLeader {
				took = time.Since(since)
				return true
			}
		}
		return false
	}, within, 20*time.Millisecond, "no new leader within %s", within)
	return took
}

func TestProcessesElectAndSurviveSIGKILL(t *testing.T) {
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	procs := startGroup(t, kubeconfig, "otcta-collector", 3, replicaConfig)
	leader := settled(t, procs, 60*time.Second)
	survivors := slices.DeleteFunc(slices.Clone(procs), func(p *process) bool { return p == leader })

	// Component telemetry: the leader says so, and every member counts 3 members.
	for _, p := range procs {
		want := 0.0
		if p == leader {
			want = 1
		}
		assert.EventuallyWithT(t, func(c *assert.CollectT) {
			v, err := p.metric("otelcol_targetallocator_leader")
			assert.NoError(c, err)
			assert.Equal(c, want, v, "otelcol_targetallocator_leader of %s", p.name)
			v, err = p.metric("otelcol_targetallocator_members")
			assert.NoError(c, err)
			assert.Equal(c, 3.0, v, "otelcol_targetallocator_members of %s", p.name)
		}, 10*time.Second, 200*time.Millisecond)
	}

	killed := time.Now()
	leader.kill(t)
	failover := newLeader(t, survivors, killed, 30*time.Second)
	// lease: duration 5s, retry_period 1s (examples/local/replica.yaml), +1s slack.
	bound := 5*time.Second + time.Second + time.Second
	t.Logf("measured failover after SIGKILL of the leader: %s (bound %s)", failover.Round(time.Millisecond), bound)
	assert.LessOrEqual(t, failover, bound)

	settled(t, survivors, 10*time.Second)
	t.Logf("measured: the killed member left the survivors' member lists %s after SIGKILL", time.Since(killed).Round(time.Millisecond))
}

func TestProcessGracefulStopHandsOver(t *testing.T) {
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	procs := startGroup(t, kubeconfig, "otcta-collector", 3, replicaConfig)
	leader := settled(t, procs, 60*time.Second)
	survivors := slices.DeleteFunc(slices.Clone(procs), func(p *process) bool { return p == leader })

	stopped := time.Now()
	require.NoError(t, leader.cmd.Process.Signal(syscall.SIGTERM))
	handover := newLeader(t, survivors, stopped, 3*time.Second)
	t.Logf("measured graceful handover after SIGTERM of the leader: %s", handover.Round(time.Millisecond))
	// It steps down at once, then hands its share over (make before
	// break) before it leaves the group: bounded by stopTimeout.
	select {
	case err := <-leader.exited:
		assert.NoError(t, err, "the stopped leader did not exit cleanly")
	case <-time.After(stopTimeout):
		t.Error("the stopped leader did not exit")
	}
	settled(t, survivors, 2*time.Second)
}

func TestProcessRefusesInvalidConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(`
extensions:
  target_allocator:
    identity: otcta-collector-0
    namespace: default
    lease: {duration: 10s, renew_deadline: 10s, retry_period: 2s}
    colector_selector: {matchLabels: {app: x}} # a typo: every TA key is accepted, an unknown one is not
receivers: {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:0}}}}
exporters: {debug: {}}
service:
  extensions: [target_allocator]
  pipelines: {metrics: {receivers: [otlp], exporters: [debug]}}
`), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, otelcol, "validate", "--config", cfg).CombinedOutput()
	require.Error(t, err, "validate accepted an invalid config:\n%s", out)
	assert.Contains(t, string(out), "colector_selector")

	cfg2 := filepath.Join(t.TempDir(), "bad-lease.yaml")
	require.NoError(t, os.WriteFile(cfg2, []byte(strings.Replace(`
extensions:
  target_allocator:
    identity: otcta-collector-0
    namespace: default
    lease: {duration: 10s, renew_deadline: 10s, retry_period: 2s}
receivers: {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:0}}}}
exporters: {debug: {}}
service:
  extensions: [target_allocator]
  pipelines: {metrics: {receivers: [otlp], exporters: [debug]}}
`, "\t", "  ", -1)), 0o600))
	out, err = exec.CommandContext(ctx, otelcol, "--config", cfg2).CombinedOutput()
	require.Error(t, err, "the collector started with renew_deadline = duration:\n%s", out)
	assert.Contains(t, string(out), "lease::renew_deadline")
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
