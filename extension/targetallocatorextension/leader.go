package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/leader"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// allocate runs while this member leads: a term of internal/leader discovers
// the targets and sends each new allocation, which the API serves from then
// on. When leadership ends, the term stops and the allocation is withdrawn.
func (e *allocatorExtension) allocate(ctx context.Context) {
	crJobs, stopCR := e.watchPrometheusCR(ctx)
	defer stopCR()
	discoveryMetrics := e.sd.term()
	defer e.sd.end()
	term, err := leader.New(leader.Config{
		Epoch:          e.elector.Leader().Transitions,
		Identity:       e.s.identity,
		Members:        e.allocationMembers,
		MembersChanged: e.membersChanged,
		Jobs:           crJobs,
		Prometheus:     e.s.prometheus,
		Filter:         e.cfg.filterStrategy(),
		Strategy:       e.cfg.AllocationStrategy,
		Fallback:       e.cfg.AllocationFallbackStrategy,
		Logger:         e.set.Logger,
		Registerer:     discoveryMetrics,
	})
	if err != nil {
		e.set.Logger.Error("Cannot allocate targets while leading", zap.Error(err))
		return
	}
	go term.Run(ctx)
	for a := range term.Allocations() { // closed once Run has stopped
		e.allocation.Store(a)
		e.record(ctx, a)
	}
	e.allocation.Store(nil)
}

// record reports an allocation in the component's telemetry.
func (e *allocatorExtension) record(ctx context.Context, a *shares.Allocation) {
	if a.Pending {
		return
	}
	tb := e.telemetry
	sum := a.Summary()
	tb.TargetallocatorAllocationDuration.Record(ctx, time.Since(a.Changed).Seconds())
	tb.TargetallocatorTargetsMoved.Add(ctx, int64(a.Moved))
	tb.TargetallocatorTargets.Record(ctx, int64(sum.Targets))
	for _, m := range sum.Members {
		tb.TargetallocatorTargetsPerMember.Record(ctx, int64(m.Targets), metric.WithAttributes(attribute.String("member", m.Identity)))
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
