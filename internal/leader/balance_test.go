package leader

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// seedAddrs are the demo's six targets (internal/demotarget.SeedAddrs),
// one a job, as examples/local/replica.yaml scrapes them.
var seedAddrs = []string{
	"127.0.0.1:9090", "127.0.0.1:9091", "127.0.0.1:9092",
	"127.0.0.2:9090", "127.0.0.2:9091", "127.0.0.2:9092",
}

// oneTargetJobs is a Prometheus config of one-target jobs otc0, otc1, ...,
// with examples/local/replica.yaml's global settings: the scrape interval
// and timeout are part of each target's labels, so of its hash.
func oneTargetJobs(t *testing.T, addrs []string) map[string]any {
	t.Helper()
	var jobs []any
	for i, addr := range addrs {
		jobs = append(jobs, map[string]any{
			"job_name":       fmt.Sprintf("otc%d", i),
			"static_configs": []any{map[string]any{"targets": []any{addr}}},
		})
	}
	return map[string]any{
		"global":         map[string]any{"scrape_interval": "5s", "scrape_timeout": "5s"},
		"scrape_configs": jobs,
	}
}

// runTerm starts a term of the config and members, and returns its first
// allocation in which every job has reported.
func runTerm(t *testing.T, cfg Config) (*Term, *shares.Allocation) {
	t.Helper()
	term, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		for range term.Allocations() {
		}
	})
	go term.Run(ctx)
	for {
		if a := next(t, term); len(a.Unreported) == 0 && !a.Pending {
			return term, a
		}
	}
}

// The demo's six one-target jobs over its three members: 2, 2, 2 (it
// ended 3, 2, 1); and more one-target jobs: every member's count within one
// of every other's, with the default strategy.
func TestTermBalancesOneTargetJobs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []string
	}{
		{"the demo", seedAddrs},
		{"20 jobs", func() (out []string) {
			for i := range 20 {
				out = append(out, fmt.Sprintf("127.0.1.%d:9100", i))
			}
			return out
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prom, err := discovery.LoadConfig(oneTargetJobs(t, tc.addrs))
			require.NoError(t, err)
			_, a := runTerm(t, Config{
				Epoch: 1, Identity: "otcta-collector-0",
				Members: func() []allocation.Member {
					return memberList("otcta-collector-0", "otcta-collector-1", "otcta-collector-2")
				},
				Prometheus: prom,
				Filter:     discovery.FilterRelabelConfig,
			})
			var counts []int
			for _, m := range a.Summary().Members {
				counts = append(counts, m.Targets)
			}
			t.Logf("targets per member: %v", counts)
			assert.LessOrEqual(t, slices.Max(counts)-slices.Min(counts), 1, "targets per member: %v", counts)
			assert.Equal(t, len(tc.addrs), a.Summary().Targets)
		})
	}
}

// Targets beyond max_targets_per_collector are unassigned, counted in the
// summary, and logged once per change of their number, not per allocation.
func TestTermLogsTheLimitOnce(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	members := memberList("m-0", "m-1")
	changed := make(chan struct{}, 1)
	term, a := runTerm(t, Config{
		Epoch: 1, Identity: "m-0",
		Members:             func() []allocation.Member { return slices.Clone(members) },
		MembersChanged:      changed,
		Prometheus:          staticConfig(t, 15, "a", "b"),
		Filter:              discovery.FilterRelabelConfig,
		MaxTargetsPerMember: 10,
		Logger:              zap.New(core),
	})
	sum := a.Summary()
	assert.Equal(t, 30, sum.Targets)
	assert.Equal(t, 10, sum.Unassigned)
	assert.Equal(t, 10, sum.OverLimit)
	for _, m := range sum.Members {
		assert.Equal(t, 10, m.Targets)
	}
	over := logs.FilterMessageSnippet("max_targets_per_collector")
	require.Equal(t, 1, over.Len(), "one line however many allocations: %v", over.All())
	assert.Equal(t, zapcore.WarnLevel, over.All()[0].Level)
	assert.Equal(t, int64(10), over.All()[0].ContextMap()["unassigned"])

	members = append(members, allocation.Member{Identity: "m-2"})
	changed <- struct{}{}
	a = next(t, term)
	assert.Zero(t, a.Summary().OverLimit)
	assert.Zero(t, a.Summary().Unassigned)
	members = append(members, allocation.Member{Identity: "m-3"})
	changed <- struct{}{}
	next(t, term)
	over = logs.FilterMessageSnippet("max_targets_per_collector")
	require.Equal(t, 2, over.Len(), "a line when the number changed, none when it did not: %v", over.All())
	assert.Equal(t, zapcore.InfoLevel, over.All()[1].Level)
}

// A target pinned by its __embedded_ta_member label, set by relabeling,
// goes to that member; while no member has that identity it is placed as
// if unpinned, which is logged once.
func TestTermPinsATarget(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	prom, err := discovery.LoadConfig(map[string]any{"scrape_configs": []any{map[string]any{
		"job_name": "heavy",
		"static_configs": []any{
			map[string]any{"targets": []any{"10.0.0.1:8080"}, "labels": map[string]any{"__meta_size": "huge"}},
			map[string]any{"targets": []any{"10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.4:8080"}},
		},
		"relabel_configs": []any{map[string]any{
			"source_labels": []any{"__meta_size"}, "regex": "huge",
			"target_label": allocation.PinLabel, "replacement": "m-2",
		}},
	}}})
	require.NoError(t, err)
	members := memberList("m-0", "m-1")
	changed := make(chan struct{}, 1)
	term, a := runTerm(t, Config{
		Epoch: 1, Identity: "m-0",
		Members:        func() []allocation.Member { return slices.Clone(members) },
		MembersChanged: changed,
		Prometheus:     prom,
		Filter:         discovery.FilterRelabelConfig,
		Logger:         zap.New(core),
	})
	assert.Zero(t, a.Summary().Unassigned, "pinned to no member: placed as if unpinned")
	require.Equal(t, 1, logs.FilterMessageSnippet("no member").Len())

	members = append(members, allocation.Member{Identity: "m-2"})
	changed <- struct{}{}
	a = next(t, term)
	var held []string
	for _, tg := range a.Share("heavy", "m-2").Targets() {
		held = append(held, tg.Labels().Get("__address__"))
	}
	assert.Contains(t, held, "10.0.0.1:8080", "m-2 holds the target pinned to it")
	assert.LessOrEqual(t, len(held), 2, "and, as the pinned target counts in its load, at most one other of the four")
	assert.Equal(t, 2, logs.FilterMessageSnippet("no member").Len(), "and a line once it is a member")
}
