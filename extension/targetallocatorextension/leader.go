package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/leader"
)

// allocate runs while this replica leads: it discovers the targets, keeps
// the assignment up to date with targets and members, and publishes each new
// allocation for the API (internal/leader). It stops, and withdraws the
// allocation, when leadership ends.
func (e *allocatorExtension) allocate(ctx context.Context) {
	changes, unsubscribe := e.notifier.subscribe()
	defer unsubscribe()
	crJobs, stopCR := e.watchPrometheusCR(ctx)
	defer stopCR()
	cfg := leader.Config{
		Jobs:       crJobs,
		Prometheus: e.s.prometheus,
		Filter:     e.cfg.filterStrategy(),
		Strategy:   e.cfg.AllocationStrategy,
		Fallback:   e.cfg.AllocationFallbackStrategy,
		Logger:     e.set.Logger,
		Registerer: e.sd.term(),
	}
	defer e.sd.end()
	leader.Run(ctx, cfg, e.leaderGroup, changes, func(a *allocatorapi.Allocation, r leader.Report) {
		e.allocation.Store(a)
		if a == nil || r.Start.IsZero() {
			return
		}
		tb := e.telemetry
		tb.TargetallocatorAllocationDuration.Record(ctx, time.Since(r.Start).Seconds())
		tb.TargetallocatorTargetsMoved.Add(ctx, int64(r.Moved))
		tb.TargetallocatorTargets.Record(ctx, int64(r.Targets))
		for m, n := range r.PerCollector {
			tb.TargetallocatorTargetsPerCollector.Record(ctx, int64(n), metric.WithAttributes(attribute.String("collector_id", m)))
		}
	})
}

// leaderGroup is the group as the leader's term sees it.
func (e *allocatorExtension) leaderGroup() leader.Group {
	view := e.View()
	g := leader.Group{Epoch: view.Epoch, Identity: view.Identity, Members: make([]allocation.Member, 0, len(view.Members))}
	for _, m := range view.Members {
		g.Members = append(g.Members, allocation.Member{Name: m.Identity, Node: m.Node})
	}
	return g
}
