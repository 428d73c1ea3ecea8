package e2e

import (
	"context"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"sigs.k8s.io/yaml"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

// expectedOwners computes, with the allocation package itself, which member
// the consistent-hashing strategy gives each demo series to.
func expectedOwners(t *testing.T, members []string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(replicaConfig)
	require.NoError(t, err)
	var file struct {
		Extensions map[string]struct {
			Config map[string]any `json:"config"`
		} `json:"extensions"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(strings.ReplaceAll(string(raw), "${env:SCRAPE_INTERVAL:-5s}", "1s")), &file))
	cfg, err := discovery.LoadConfig(file.Extensions["target_allocator"].Config)
	require.NoError(t, err)
	d, err := discovery.New(cfg, discovery.FilterRelabelConfig, zap.NewNop(), prometheus.NewRegistry())
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	var snap discovery.Snapshot
	for n := 0; n < len(demoSeries); {
		select {
		case snap = <-d.Snapshots():
		case <-ctx.Done():
			t.Fatal("no snapshot of the demo's targets")
		}
		n = 0
		for _, ts := range snap.Jobs {
			n += len(ts)
		}
	}
	alloc, err := allocation.New(allocation.ConsistentHashing)
	require.NoError(t, err)
	var ms []allocation.Member
	for _, m := range members {
		ms = append(ms, allocation.Member{Identity: m})
	}
	require.NoError(t, alloc.SetMembers(ms))
	var targets []allocation.Target
	for _, ts := range snap.Jobs {
		for _, tg := range ts {
			targets = append(targets, allocation.Target{Hash: tg.Hash})
		}
	}
	alloc.SetTargets(targets)
	out := map[string]string{}
	for job, ts := range snap.Jobs {
		for _, tg := range ts {
			owner, ok := alloc.MemberOf(tg.Hash)
			require.True(t, ok)
			out[job+" "+tg.Labels().Get("__address__")] = owner
		}
	}
	return out
}

// waitOwners waits until the members scrape exactly as want says.
func waitOwners(t *testing.T, procs []*process, want map[string]string, within time.Duration) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, _, err := scrapedBy(procs)
		if assert.NoError(c, err) {
			assert.Equal(c, want, got)
		}
	}, within, 250*time.Millisecond)
	t.Logf("measured: %d replicas: %v", len(procs), want)
}

func names(procs []*process) []string {
	out := make([]string, 0, len(procs))
	for _, p := range procs {
		out = append(out, p.name)
	}
	return out
}

// Scale 3 → 4 → 2: the targets move as consistent-hashing says, each is
// scraped by exactly one member, and none is lost.
func TestScaleUpAndDown(t *testing.T) {
	startDemoTargets(t)
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	procs := startGroup(t, kubeconfig, "otcta-collector", 3, replicaConfig, fast...)
	settled(t, procs, 60*time.Second)
	owners := union(t, procs, demoSeries, 60*time.Second)
	assert.Equal(t, expectedOwners(t, names(procs)), owners, "3 replicas")
	t.Logf("measured: 3 replicas: %v", owners)

	procs = append(procs, startProcess(t, kubeconfig, "otcta-collector-3", replicaConfig, fast...))
	settled(t, procs, 30*time.Second)
	waitOwners(t, procs, expectedOwners(t, names(procs)), 30*time.Second)

	// Scale down as a StatefulSet does: the highest ordinals first.
	for _, p := range []*process{procs[3], procs[2]} {
		p.terminate()
	}
	procs = procs[:2]
	settled(t, procs, 30*time.Second)
	waitOwners(t, procs, expectedOwners(t, names(procs)), 30*time.Second)
}

// A rolling restart, one member after the other as a StatefulSet rolls:
// no target goes unscraped for longer than refresh_interval + 2 scrape
// intervals, and in steady state none is scraped twice.
func TestRollingRestart(t *testing.T) {
	targets := startDemoTargets(t)
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	procs := startGroup(t, kubeconfig, "otcta-collector", 3, replicaConfig, fast...)
	settled(t, procs, 60*time.Second)
	union(t, procs, demoSeries, 60*time.Second)

	start := time.Now()
	for i := len(procs) - 1; i >= 0; i-- { // a StatefulSet rolls from the highest ordinal
		old := procs[i]
		require.NoError(t, old.cmd.Process.Signal(syscall.SIGTERM))
		select {
		case <-old.done:
		case <-time.After(stopTimeout):
			t.Fatalf("%s did not stop", old.name)
		}
		procs[i] = startProcess(t, kubeconfig, old.name, replicaConfig, fast...)
		settled(t, procs, 30*time.Second) // the pod is ready before the next one rolls
		union(t, procs, demoSeries, 30*time.Second)
	}
	end := time.Now()
	// refresh_interval + 2 scrape intervals, plus the stock receiver's update delays.
	bound := refreshInterval + 2*scrapeInterval + stockDelay
	for addr, target := range targets {
		gap := target.MaxGap(start, end)
		t.Logf("measured: %s longest gap during the rolling restart %s (bound %s)", addr, gap.Round(time.Millisecond), bound)
		assert.LessOrEqual(t, gap, bound, "%s went unscraped too long", addr)
	}
	assertSteadyState(t, procs, targets)
}
