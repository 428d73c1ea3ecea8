package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/prometheus/config"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
)

// allocate runs while this replica leads: it discovers the targets, keeps
// the assignment up to date with targets and members, and publishes each new
// allocation for the API. It stops, and withdraws the allocation, when
// leadership ends.
func (e *allocatorExtension) allocate(ctx context.Context) {
	defer e.allocation.Store(nil)
	logger := e.set.Logger
	disc, err := discovery.New(e.s.prometheus, e.cfg.filterStrategy(), logger, prometheus.NewRegistry())
	if err != nil {
		logger.Error("Cannot start service discovery", zap.Error(err))
		return
	}
	alloc, err := allocation.New(e.cfg.AllocationStrategy, allocation.WithFallback(e.cfg.AllocationFallbackStrategy))
	if err != nil {
		logger.Error("Cannot create the allocator", zap.Error(err))
		return
	}
	discCtx, stopDiscovery := context.WithCancel(ctx)
	discDone := make(chan struct{})
	go func() {
		defer close(discDone)
		if err := disc.Run(discCtx); err != nil && discCtx.Err() == nil {
			logger.Error("Service discovery stopped", zap.Error(err))
		}
	}()
	defer func() {
		stopDiscovery()
		<-discDone
	}()
	changes, unsubscribe := e.notifier.subscribe()
	defer unsubscribe()
	crJobs, stopCR := e.watchPrometheusCR(ctx)
	defer stopCR()

	a := allocator{ext: e, alloc: alloc, configs: scrapeConfigsByJob(e.s.prometheus)}
	a.setMembers()
	// Until the first discovery the allocation is pending: the scrape configs
	// and jobs are served, the shares are not (an empty share would make every
	// member drop its targets); members answer theirs from their last copy.
	a.publish(ctx, time.Now(), true)
	discovered := false
	crKnown := crJobs == nil // with prometheus_cr, shares wait for its jobs
	for {
		var start time.Time
		select {
		case <-ctx.Done():
			return
		case jobs := <-crJobs:
			start = time.Now()
			a.setPrometheusCRJobs(disc, jobs)
			crKnown = true
			if !discovered {
				a.publish(ctx, start, true)
				continue
			}
		case snap := <-disc.Snapshots():
			start = time.Now()
			a.setTargets(snap)
			discovered = crKnown
		case <-changes:
			start = time.Now()
			if !a.setMembers() || !discovered {
				continue
			}
		}
		a.publish(ctx, start, false)
	}
}

// allocator is the leader's state for one term.
type allocator struct {
	ext     *allocatorExtension
	alloc   allocation.Allocator
	configs map[string]*promconfig.ScrapeConfig
	members []string
	targets discovery.Snapshot
	owners  map[uint64]string // last published owner per target
}

// scrapeConfigsByJob indexes the jobs, those of scrape_config_files included.
func scrapeConfigsByJob(cfg *promconfig.Config) map[string]*promconfig.ScrapeConfig {
	configs, _ := cfg.GetScrapeConfigs() // loaded and checked at startup
	out := make(map[string]*promconfig.ScrapeConfig, len(configs))
	for _, sc := range configs {
		out[sc.JobName] = sc
	}
	return out
}

// setMembers hands the current members to the allocator and reports whether they changed.
func (a *allocator) setMembers() bool {
	view := a.ext.View()
	names := make([]string, 0, len(view.Members))
	members := make([]allocation.Member, 0, len(view.Members))
	for _, m := range view.Members {
		names = append(names, m.Identity)
		members = append(members, allocation.Member{Name: m.Identity, Node: m.Node})
	}
	if slices.Equal(names, a.members) {
		return false
	}
	if err := a.alloc.SetMembers(members); err != nil {
		a.ext.set.Logger.Error("Cannot set members", zap.Error(err))
		return false
	}
	a.members = names
	return true
}

func (a *allocator) setTargets(snap discovery.Snapshot) {
	a.targets = snap
	n := 0
	for _, ts := range snap.Jobs {
		n += len(ts)
	}
	targets := make([]allocation.Target, 0, n)
	for _, ts := range snap.Jobs {
		for _, t := range ts {
			targets = append(targets, allocation.Target{Hash: t.Hash, Node: t.Node})
		}
	}
	a.alloc.SetTargets(targets)
	a.ext.telemetry.TargetallocatorTargets.Record(context.Background(), int64(n))
}

// publish builds the allocation the API serves from the allocator's state;
// start is when the change that led to it arrived.
func (a *allocator) publish(ctx context.Context, start time.Time, pending bool) {
	var targets []allocatorapi.Target
	owners := make(map[uint64]string, len(a.owners))
	perCollector := make(map[string]int64, len(a.members))
	for _, m := range a.members {
		perCollector[m] = 0
	}
	moved := int64(0)
	for job, ts := range a.targets.Jobs {
		for _, t := range ts {
			owner, _ := a.alloc.Owner(t.Hash)
			targets = append(targets, allocatorapi.Target{Job: job, Labels: t.Labels, Owner: owner})
			owners[t.Hash] = owner
			if prev, ok := a.owners[t.Hash]; ok && prev != owner {
				moved++
			}
			if owner != "" {
				perCollector[owner]++
			}
		}
	}
	view := a.ext.View()
	published, err := allocatorapi.NewAllocation(view.Epoch, view.Identity, a.members, a.configs, targets)
	if err != nil {
		a.ext.set.Logger.Error("Cannot encode the allocation", zap.Error(err))
		return
	}
	published.Pending = pending
	a.owners = owners
	a.ext.allocation.Store(published)
	if pending {
		return
	}
	tb := a.ext.telemetry
	tb.TargetallocatorAllocationDuration.Record(ctx, time.Since(start).Seconds())
	tb.TargetallocatorTargetsMoved.Add(ctx, moved)
	for m, n := range perCollector {
		tb.TargetallocatorTargetsPerCollector.Record(ctx, n, metric.WithAttributes(attribute.String("collector_id", m)))
	}
	a.ext.set.Logger.Debug("Allocated targets", zap.Int("targets", len(targets)), zap.Int("members", len(a.members)), zap.Int64("moved", moved))
}
