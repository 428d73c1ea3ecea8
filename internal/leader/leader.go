// Package leader is a leader's term: it runs service discovery, keeps the
// allocation up to date with the targets and the members, and publishes
// each new allocation for the API.
//
// A change costs in proportion to what it changes: discovery hands over
// whole snapshots, but a job whose targets did not change is passed over by
// a pointer comparison, a changed job is diffed in one merge of two sorted
// lists, the allocator is updated with the difference only, and only the
// shares (one job, one collector) whose targets changed are rebuilt; the
// others, and their encoded answers, are shared with the previous
// allocation. See state.go.
package leader

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/prometheus/config"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
)

// Config is what a term needs.
type Config struct {
	// Prometheus holds the scrape configs, from discovery.LoadConfig.
	Prometheus *promconfig.Config
	// Jobs, when not nil, delivers more jobs (those of Prometheus Operator
	// resources), each time all of them: they join Prometheus's jobs, which
	// win a clash of names. Shares wait for the first delivery.
	Jobs   <-chan []*promconfig.ScrapeConfig
	Filter discovery.FilterStrategy
	// Strategy and Fallback name the allocation strategies.
	Strategy, Fallback string
	Logger             *zap.Logger
	// Registerer takes the term's discovery metrics: a registry of this
	// term's own (see discovery.New); nil keeps them private.
	Registerer prometheus.Registerer
}

// Group is the group as the leader sees it at one moment.
type Group struct {
	Epoch    int
	Identity string
	// Members in any order.
	Members []allocation.Member
}

// Report describes one published allocation, for telemetry.
type Report struct {
	// Start is when the change that led to it arrived; zero for the pending
	// allocation published before the first discovery.
	Start time.Time
	// Targets counts all targets, Moved those that changed owner.
	Targets, Moved int
	// PerCollector counts each member's targets.
	PerCollector map[string]int
}

// Run runs a term until ctx is done. group returns the group's current
// state; changes wakes Run after a change in the members; publish receives
// each allocation (never nil), in order, from Run's goroutine, and nil when
// the term ends.
func Run(ctx context.Context, cfg Config, group func() Group, changes <-chan struct{}, publish func(*allocatorapi.Allocation, Report)) {
	defer publish(nil, Report{})
	logger := cfg.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	disc, err := discovery.New(cfg.Prometheus, cfg.Filter, logger, cfg.Registerer)
	if err != nil {
		logger.Error("Cannot start service discovery", zap.Error(err))
		return
	}
	alloc, err := allocation.New(cfg.Strategy, allocation.WithFallback(cfg.Fallback))
	if err != nil {
		logger.Error("Cannot create the allocator", zap.Error(err))
		return
	}
	configs, err := scrapeConfigsByJob(cfg.Prometheus)
	if err != nil {
		logger.Error("Cannot read the scrape configs", zap.Error(err))
		return
	}
	s, err := newState(alloc, configs)
	if err != nil {
		logger.Error("Cannot encode the scrape configs", zap.Error(err))
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

	g := group()
	if _, err := s.setMembers(g.Members); err != nil {
		logger.Error("Cannot set members", zap.Error(err))
	}
	// Until the first discovery the allocation is pending: the scrape configs
	// and jobs are served, the shares are not (an empty share would make every
	// member drop its targets); members answer theirs from their last copy.
	publishPending := func() {
		g = group()
		pending := s.allocation(g.Epoch, g.Identity)
		pending.Pending = true
		publish(pending, Report{PerCollector: s.perCollector()})
	}
	publishPending()
	discovered := false
	jobsKnown := cfg.Jobs == nil
	for {
		var start time.Time
		select {
		case <-ctx.Done():
			return
		case more := <-cfg.Jobs:
			start = time.Now()
			jobs, byName := mergeJobs(configs, more, logger)
			if err := s.setScrapeConfigs(byName); err != nil {
				logger.Error("Cannot encode the scrape configs", zap.Error(err))
				continue
			}
			// Discovery sends a snapshot of exactly these jobs: the targets
			// of jobs that are gone leave with it.
			disc.SetJobs(jobs)
			jobsKnown = true
			if !discovered {
				publishPending() // with the new scrape configs
				continue
			}
		case snap := <-disc.Snapshots():
			start = time.Now()
			s.setTargets(snap)
			discovered = jobsKnown
		case <-changes:
			start = time.Now()
			changed, err := s.setMembers(group().Members)
			if err != nil {
				logger.Error("Cannot set members", zap.Error(err))
			}
			if !changed || !discovered {
				continue
			}
		}
		g = group()
		moved := s.takeMoved()
		a := s.allocation(g.Epoch, g.Identity)
		publish(a, Report{Start: start, Targets: s.total, Moved: moved, PerCollector: s.perCollector()})
		logger.Debug("Allocated targets", zap.Int("targets", s.total), zap.Int("members", len(s.members)),
			zap.Int("moved", moved), zap.Duration("took", time.Since(start)))
	}
}

// mergeJobs adds more jobs to the configured ones, which win a clash of
// names, and returns them as a list and by name.
func mergeJobs(configured map[string]*promconfig.ScrapeConfig, more []*promconfig.ScrapeConfig, logger *zap.Logger) ([]*promconfig.ScrapeConfig, map[string]*promconfig.ScrapeConfig) {
	byName := maps.Clone(configured)
	jobs := slices.Collect(maps.Values(configured))
	for _, sc := range more {
		if _, taken := byName[sc.JobName]; taken {
			logger.Warn("A job of config.scrape_configs has the name of a Prometheus Operator resource's job; the resource's is ignored", zap.String("job", sc.JobName))
			continue
		}
		byName[sc.JobName] = sc
		jobs = append(jobs, sc)
	}
	return jobs, byName
}

// scrapeConfigsByJob indexes the jobs, those of scrape_config_files included.
func scrapeConfigsByJob(cfg *promconfig.Config) (map[string]*promconfig.ScrapeConfig, error) {
	out := map[string]*promconfig.ScrapeConfig{}
	if cfg == nil {
		return out, nil
	}
	configs, err := cfg.GetScrapeConfigs()
	if err != nil {
		return nil, err
	}
	for _, sc := range configs {
		out[sc.JobName] = sc
	}
	return out, nil
}
