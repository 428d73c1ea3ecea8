package leader

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	promconfig "github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// staticConfig is a Prometheus config of jobs with n static targets each.
func staticConfig(t *testing.T, n int, jobs ...string) *promconfig.Config {
	t.Helper()
	var scrapeConfigs []any
	for _, job := range jobs {
		var targets []any
		for i := range n {
			targets = append(targets, fmt.Sprintf("127.0.0.1:%d", 9000+i))
		}
		scrapeConfigs = append(scrapeConfigs, map[string]any{"job_name": job, "static_configs": []any{map[string]any{"targets": targets}}})
	}
	cfg, err := discovery.LoadConfig(map[string]any{"scrape_configs": scrapeConfigs})
	require.NoError(t, err)
	return cfg
}

// next returns the term's next allocation; the wait guards against a hang,
// it measures nothing.
func next(t *testing.T, term *Term) *shares.Allocation {
	t.Helper()
	select {
	case a, ok := <-term.Allocations():
		require.True(t, ok, "the term ended")
		return a
	case <-time.After(30 * time.Second):
		t.Fatal("no allocation")
		return nil
	}
}

func memberList(names ...string) []allocation.Member {
	out := make([]allocation.Member, len(names))
	for i, n := range names {
		out[i] = allocation.Member{Identity: n}
	}
	return out
}

// A term sends a pending allocation first (scrape configs, no shares), then
// one per change, each of the term's epoch; a change of members moves
// targets to the newcomer; each carries the recent allocations, newest
// first; the channel closes when the term ends.
func TestTermSendsAllocations(t *testing.T) {
	members := memberList("m-0", "m-1")
	changed := make(chan struct{}, 1)
	term, err := New(Config{
		Epoch: 7, Identity: "m-0",
		Members:        func() []allocation.Member { return slices.Clone(members) },
		MembersChanged: changed,
		Prometheus:     staticConfig(t, 30, "a", "b"),
		Filter:         discovery.FilterRelabelConfig,
		Strategy:       allocation.ConsistentHashing,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go term.Run(ctx)

	a := next(t, term)
	assert.False(t, a.Pending, "without Prometheus Operator resources, every job is known at once")
	assert.Equal(t, map[string]bool{"a": true, "b": true}, a.Unreported, "no job's shares before its discovery reports")
	assert.False(t, a.Reported("a"))
	assert.Equal(t, []string{"a", "b"}, a.Jobs())
	assert.Equal(t, 7, a.Epoch)
	assert.Equal(t, "m-0", a.Leader)
	assert.Equal(t, shares.CauseMembers, a.Cause, "a term begins with its members")

	a = next(t, term)
	require.Empty(t, a.Unreported)
	assert.Equal(t, 60, a.Summary().Targets)
	assert.Equal(t, shares.CauseTargets, a.Cause)
	assert.Equal(t, []string{"m-0", "m-1"}, a.Members)
	assert.False(t, a.Changed.IsZero())

	members = append(members, allocation.Member{Identity: "m-2"})
	changed <- struct{}{}
	b := next(t, term)
	assert.Equal(t, []string{"m-0", "m-1", "m-2"}, b.Members)
	assert.Equal(t, shares.CauseMembers, b.Cause)
	sum := b.Summary()
	assert.Positive(t, sum.Members[2].Targets, "the newcomer gets targets")
	assert.Equal(t, sum.Members[2].Targets, b.Moved, "only the newcomer's targets moved")
	require.NotEmpty(t, b.Recent)
	last := b.Recent[0]
	assert.Equal(t, shares.RecentAllocation{Changed: b.Changed, Made: last.Made, Cause: b.Cause, Moved: b.Moved, Handoffs: b.Handoffs}, last,
		"the recent allocations begin with this one")
	assert.False(t, last.Made.Before(last.Changed), "an allocation is made after its change arrived")
	assert.Contains(t, b.Recent[1:], a.Recent[0], "and go on with the earlier ones")
	assert.LessOrEqual(t, len(b.Recent), recentAllocations)
	assert.Equal(t, 10, recentAllocations, "the extension's README says the last 10")
	for _, job := range []string{"a", "b"} {
		for _, m := range []string{"m-0", "m-1"} {
			for _, target := range b.Share(job, m).Targets() {
				assert.Contains(t, a.Share(job, m).Targets(), target, "a target moved between the old members")
			}
		}
	}

	cancel()
	for range term.Allocations() {
	}
}

// With Prometheus Operator jobs to come, every allocation stays pending
// until they arrive, even after discovery has reported the configured jobs:
// scrape configs published before would lack the resources' jobs. The
// resources' jobs are then unreported until their discovery reports.
func TestTermWaitsForResourceJobs(t *testing.T) {
	jobs := make(chan []*promconfig.ScrapeConfig, 1)
	term, err := New(Config{
		Epoch: 1, Identity: "m-0",
		Members:    func() []allocation.Member { return memberList("m-0") },
		Prometheus: staticConfig(t, 3, "static"),
		Jobs:       jobs,
		Filter:     discovery.FilterRelabelConfig,
		Strategy:   allocation.ConsistentHashing,
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go term.Run(ctx)

	require.True(t, next(t, term).Pending)
	for deadline := time.After(2 * time.Second); ; { // discovery reports the static job in about 100 ms
		select {
		case a := <-term.Allocations():
			require.True(t, a.Pending, "an allocation that is not pending before the resources' jobs arrived")
			continue
		case <-deadline:
		}
		break
	}

	cr := staticConfig(t, 2, "serviceMonitor/ns/app/0").ScrapeConfigs[0]
	jobs <- []*promconfig.ScrapeConfig{cr}
	a := next(t, term)
	assert.False(t, a.Pending, "the new scrape configs are served at once")
	assert.Equal(t, shares.CauseJobs, a.Cause)
	assert.Equal(t, []string{"serviceMonitor/ns/app/0", "static"}, a.Jobs())
	assert.True(t, a.Unreported["serviceMonitor/ns/app/0"], "the resource's shares once its discovery reports")
	for a = next(t, term); a.Summary().Targets < 5; a = next(t, term) {
		require.False(t, a.Pending)
	}
	assert.Empty(t, a.Unreported)
	assert.Equal(t, []shares.JobCount{{Name: "serviceMonitor/ns/app/0", Targets: 2}, {Name: "static", Targets: 3}}, a.Summary().Jobs)
}

// A series-weighted term serves nothing (its allocations are pending)
// until every member has reported its series, then serves the assignment
// the reports show: a new leader keeps the previous one.
func TestSeriesWeightedTermKeepsTheReportedAssignment(t *testing.T) {
	members := memberList("m-0", "m-1", "m-2")
	series := make(chan Series, 1)
	term, err := New(Config{
		Epoch: 3, Identity: "m-0",
		Members:    func() []allocation.Member { return slices.Clone(members) },
		Prometheus: staticConfig(t, 30, "a", "b"),
		Filter:     discovery.FilterRelabelConfig,
		Strategy:   allocation.SeriesWeighted,
		Series:     series,
		SeriesWait: time.Hour, // the reports come first
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go term.Run(ctx)

	a := next(t, term)
	for ; a.Summary().Targets < 60; a = next(t, term) {
		require.True(t, a.Pending)
	}
	require.True(t, a.Pending, "served before the members reported")
	// The previous leader's assignment: each target one member further
	// than this term's own first answer, which it must not serve.
	names := a.Members
	wantMember := map[uint64]string{}
	reports := Series{}
	for i, m := range names {
		prev := names[(i+1)%len(names)]
		reports[prev] = map[string]map[string]int64{}
		for _, job := range a.Jobs() {
			reports[prev][job] = map[string]int64{}
			for _, tg := range a.Share(job, m).Targets() {
				reports[prev][job][report.TargetKey(tg.Labels())] = 100
				wantMember[tg.Hash] = prev
			}
		}
	}
	series <- Series{"m-0": reports["m-0"]} // some, then all
	series <- reports
	b := next(t, term)
	require.False(t, b.Pending)
	assert.Equal(t, shares.CauseMeasurements, b.Cause)
	require.Len(t, wantMember, 60)
	for _, job := range b.Jobs() {
		for _, m := range b.Members {
			for _, tg := range b.Share(job, m).Targets() {
				assert.Equal(t, wantMember[tg.Hash], m, "target %x", tg.Hash)
			}
		}
	}
	for _, mc := range b.Summary().Members {
		assert.Equal(t, int64(100*mc.Targets), mc.Series, mc.Identity)
	}
	cancel()
	for range term.Allocations() {
	}
}
