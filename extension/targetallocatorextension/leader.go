package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"math"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/leader"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// allocate runs while this member leads: a term of internal/leader discovers
// the targets and sends each new allocation, which the API serves from then
// on. When leadership ends, the term stops and the allocation is withdrawn.
func (e *allocatorExtension) allocate(ctx context.Context) {
	// The leader alone watches every member Lease: the term starts once
	// they are listed.
	if err := e.members.Lead(ctx); err != nil {
		return // leadership ended first
	}
	crJobs, stopCR := e.watchPrometheusCR(ctx)
	defer stopCR()
	discoveryMetrics := e.sd.term()
	defer e.sd.end()
	reports := make(chan report.Report)
	e.reports.Store(&termReports{ch: reports, done: ctx.Done()})
	defer e.reports.Store(nil)
	series := e.seriesReports.startTerm()
	defer e.seriesReports.endTerm()
	term := e.newTerm(ctx, leader.Config{
		Epoch:          e.elector.Leader().Transitions,
		Identity:       e.s.identity,
		Members:        e.allocationMembers,
		MembersChanged: e.membersChanged,
		Jobs:           crJobs,
		Prometheus:     e.s.prometheus,
		Filter:         e.cfg.filterStrategy(),
		Reports:        reports,
		Strategy:       e.cfg.AllocationStrategy,
		Fallback:       e.cfg.AllocationFallbackStrategy,
		Logger:         e.set.Logger,
		Registerer:     discoveryMetrics,

		MaxTargetsPerMember: e.cfg.MaxTargetsPerCollector,
		MaxSeriesPerMember:  e.cfg.MaxSeriesPerCollector,
		Series:              series,
		SeriesWait:          2 * e.seriesInterval(),
	})
	if term == nil {
		return // leadership ended first
	}
	go term.Run(ctx)
	for a := range term.Allocations() { // closed once Run has stopped
		e.seriesReports.forget(a.IsMember)
		prev := e.allocation.Swap(a)
		e.allocationChanged()
		e.record(ctx, a)
		// A change of the resources' jobs is the TA's event; their first
		// jobs of a term are its initial load, which it does not count.
		if a.Cause == shares.CauseJobs && prev != nil && !prev.Pending {
			e.metrics.Event(allocatorapi.SourcePrometheusCR)
		}
	}
	e.allocation.Store(nil)
	e.allocationChanged()
}

// opTerm names the start of a leader's term in the component's status.
const opTerm = "leader term"

// newTerm prepares the term, and retries, less and less often, for as long
// as it fails and this member leads: what fails may mend (a file of
// scrape_config_files that does not parse for a moment while its ConfigMap
// is updated), and meanwhile the members answer from their copies. It returns
// nil once ctx is done.
func (e *allocatorExtension) newTerm(ctx context.Context, cfg leader.Config) *leader.Term {
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: 30 * time.Second}
	for {
		term, err := leader.New(cfg)
		e.health.set(opTerm, err)
		if err == nil {
			return term
		}
		retry := backoff.Step() // health logs the first failure and the recovery
		select {
		case <-ctx.Done():
			e.health.set(opTerm, nil) // not leading: nothing fails
			return nil
		case <-time.After(retry):
			e.set.Logger.Debug("Retrying the leader's term", zap.Error(err))
		}
	}
}

// record reports an allocation in the component's telemetry.
func (e *allocatorExtension) record(ctx context.Context, a *shares.Allocation) {
	if a.Pending {
		return
	}
	e.metrics.Allocated(a)
	tb := e.telemetry
	sum := a.Summary()
	tb.TargetallocatorAllocationDuration.Record(ctx, time.Since(a.Changed).Seconds())
	tb.TargetallocatorTargetsMoved.Add(ctx, int64(a.Moved))
	tb.TargetallocatorTargets.Record(ctx, int64(sum.Targets))
	tb.TargetallocatorTargetsUnassigned.Record(ctx, int64(sum.Unassigned))
	tb.TargetallocatorTargetsOverLimit.Record(ctx, int64(sum.OverLimit))
	for _, m := range sum.Members {
		member := metric.WithAttributes(attribute.String("member", m.Identity))
		tb.TargetallocatorTargetsPerMember.Record(ctx, int64(m.Targets), member)
		tb.TargetallocatorSeriesPerMember.Record(ctx, m.Series, member)
	}
}

// allocationMembers are the group's members as allocation sees them.
func (e *allocatorExtension) allocationMembers() []allocation.Member {
	members := e.members.Members()
	out := make([]allocation.Member, len(members))
	for i, m := range members {
		out[i] = allocation.Member{Identity: m.Identity, Node: m.Node}
	}
	return out
}

// Allocation implements allocatorapi.Source: the allocation to answer from
// while this member leads, else nil.
func (e *allocatorExtension) Allocation() *shares.Allocation {
	if e.elector == nil || !e.elector.IsLeader() {
		return nil
	}
	return e.allocation.Load()
}
