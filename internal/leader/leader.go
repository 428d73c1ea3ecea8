// Package leader is a leader's term: it runs service discovery, keeps the
// allocation up to date with the targets and the members, and sends each new
// allocation (internal/shares) on a channel, as Prometheus's discovery
// manager sends its target groups. It serves nothing: the allocator API
// answers from what it sends.
//
// A change costs in proportion to what it changes: discovery hands over
// whole snapshots, but a job whose targets did not change is passed over by
// a pointer comparison, a changed job is diffed in one merge of two sorted
// lists, the allocator is updated with the difference only, and only the
// shares (one job, one member) whose targets changed are rebuilt; the
// others, and their encoded answers, are shared with the previous
// allocation. See state.go.
package leader

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/prometheus/config"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// recentAllocations is how many allocations of its term a leader keeps the
// summaries of (shares.Allocation.Recent), for the status page.
const recentAllocations = 10

// Config is what a term needs.
type Config struct {
	// Epoch is the term's leadership epoch and Identity the leader's: every
	// allocation of the term carries them.
	Epoch    int
	Identity string
	// Members returns the group's members, in any order; MembersChanged
	// wakes the term after they change.
	Members        func() []allocation.Member
	MembersChanged <-chan struct{}
	// Prometheus holds the scrape configs, from discovery.LoadConfig.
	Prometheus *promconfig.Config
	// Jobs, when not nil, delivers more jobs (those of Prometheus Operator
	// resources), each time all of them: they join Prometheus's jobs, which
	// win a clash of names. Shares wait for the first delivery.
	Jobs   <-chan []*promconfig.ScrapeConfig
	Filter discovery.FilterStrategy
	// Reports are the members' reports (internal/report), which make
	// planned moves before they break them (handoff.go); nil: none come,
	// and a move between members waits for its new member's report, at most
	// a bounded time.
	Reports <-chan report.Report
	// Strategy and Fallback name the allocation strategies.
	Strategy, Fallback string
	// MaxTargetsPerMember is max_targets_per_collector: no member gets more
	// targets; 0 sets no limit.
	MaxTargetsPerMember int
	// MaxSeriesPerMember is max_series_per_collector: no member gets a
	// larger series load; 0 sets no limit.
	MaxSeriesPerMember int64
	// Series, when not nil, delivers what the members measured of their
	// targets (report.Report's series), each time all of it: by member, by
	// job, by target key, the series per scrape. See Series.
	Series <-chan Series
	// SeriesWait is how long a series-weighted term waits for every
	// member's report before it serves its allocation: until then, the
	// allocation is pending and the members answer from their copies, so
	// that a new leader keeps the assignment its reports show rather than
	// serve consistent hashing's in the meantime. 0 waits not at all.
	SeriesWait time.Duration
	Logger     *zap.Logger
	// Registerer takes the term's discovery metrics: a registry of this
	// term's own (see discovery.New); nil keeps them private.
	Registerer prometheus.Registerer
}

// Series is what the members measured of their targets: by member, by job,
// by target key (report.TargetKey), each target's series per scrape.
type Series map[string]map[string]map[string]int64

// Term is one leader's term.
type Term struct {
	cfg     Config
	disc    *discovery.Discoverer
	state   *state
	configs map[string]*promconfig.ScrapeConfig
	out     chan *shares.Allocation
}

// New prepares a term: discovery, the allocator and the encoded scrape
// configs. Run starts it.
func New(cfg Config) (*Term, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	disc, err := discovery.New(cfg.Prometheus, cfg.Filter, cfg.Logger, cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("service discovery: %w", err)
	}
	alloc, err := allocation.New(cfg.Strategy, allocation.WithFallback(cfg.Fallback),
		allocation.WithLimit(cfg.MaxTargetsPerMember), allocation.WithSeriesLimit(cfg.MaxSeriesPerMember))
	if err != nil {
		return nil, fmt.Errorf("allocation strategy: %w", err)
	}
	configs, err := scrapeConfigsByJob(cfg.Prometheus)
	if err != nil {
		return nil, fmt.Errorf("scrape configs: %w", err)
	}
	s, err := newState(alloc, configs)
	if err != nil {
		return nil, fmt.Errorf("encode the scrape configs: %w", err)
	}
	s.placedByWeight = cfg.Strategy == allocation.SeriesWeighted || cfg.MaxSeriesPerMember > 0
	s.fresh = func() (allocation.Allocator, error) {
		return allocation.New(cfg.Strategy, allocation.WithFallback(cfg.Fallback), allocation.WithLimit(cfg.MaxTargetsPerMember))
	}
	return &Term{cfg: cfg, disc: disc, state: s, configs: configs, out: make(chan *shares.Allocation)}, nil
}

// Allocations receives each allocation of the term, in order, never nil; it
// is closed when Run returns. Its reader must keep up: Run waits for it.
func (t *Term) Allocations() <-chan *shares.Allocation { return t.out }

// Run runs the term until ctx is done.
//
// A job's shares are answered from the term's allocations once its
// discovery has reported (discovery.Snapshot.Unreported): before, they are
// not known, and an empty share would make every member drop its targets;
// members answer theirs from their copies. While the jobs of Prometheus
// Operator resources are still to come, the allocation is pending: neither
// the scrape configs nor any share is answered from it.
func (t *Term) Run(ctx context.Context) {
	defer close(t.out)
	logger, s := t.cfg.Logger, t.state
	discCtx, stopDiscovery := context.WithCancel(ctx)
	discDone := make(chan struct{})
	go func() {
		defer close(discDone)
		if err := t.disc.Run(discCtx); err != nil && discCtx.Err() == nil {
			logger.Error("Service discovery stopped", zap.Error(err))
		}
	}()
	defer func() {
		stopDiscovery()
		<-discDone
	}()

	changed, cause, publish := time.Now(), shares.CauseMembers, true
	s.now, s.handoff = time.Now(), t.cfg.Reports != nil
	if _, err := s.setMembers(t.cfg.Members()); err != nil {
		logger.Error("Cannot set members", zap.Error(err))
	}
	// Discovery's targets wait for the members' first reports (heldWait),
	// the latest snapshot kept: the first allocation starts from the
	// targets the members hold.
	var waitHeld <-chan time.Time
	var held *discovery.Snapshot
	var latest Series // the last series delivered: measured again once the targets are in
	if s.seeding = t.cfg.Reports != nil; s.seeding {
		timer := time.NewTimer(heldWait)
		defer timer.Stop()
		waitHeld = timer.C
	}
	seeded := func(why string) {
		logger.Debug("Taking discovery's targets", zap.String("after", why), zap.Int("jobs_held", len(s.held)))
		if s.heldOver {
			logger.Info("The members hold too many targets to start from where they are: this term starts from a fresh allocation",
				zap.Int("held", s.heldCount), zap.Int("max", maxHeld))
		}
		s.seeding, waitHeld = false, nil
		if held != nil {
			changed, cause, publish = time.Now(), shares.CauseTargets, true
			s.now = changed
			s.setTargets(*held)
			held = nil
			if latest != nil {
				s.measure(s.measurements(latest))
			}
		}
	}
	pending := t.cfg.Jobs != nil // the resources' jobs are still to come
	s.jobsPending = pending
	// A series-weighted term waits for the members' reports (SeriesWait),
	// keeping the latest until all are in.
	var waitSeries <-chan time.Time
	var waiting Series
	if t.cfg.Strategy == allocation.SeriesWeighted && t.cfg.Series != nil && t.cfg.SeriesWait > 0 {
		timer := time.NewTimer(t.cfg.SeriesWait)
		defer timer.Stop()
		waitSeries = timer.C
	}
	var counts allocation.Counts // as last logged
	recent := shares.NewRecent(recentAllocations)
	deadline := time.NewTimer(time.Hour)
	defer deadline.Stop()
	for {
		deadline.Stop()
		if next, ok := s.nextDeadline(); ok {
			deadline.Reset(time.Until(next))
		}
		if publish {
			a := s.allocation(t.cfg.Epoch, t.cfg.Identity)
			a.Pending, a.Changed, a.Cause, a.Moved = pending || waitSeries != nil, changed, cause, s.takeMoved()
			a.Handoffs = len(s.handoffs) + len(s.releases)
			a.Recent = recent.Add(shares.RecentAllocation{Changed: changed, Made: time.Now(), Cause: cause, Moved: a.Moved, Handoffs: a.Handoffs})
			logger.Debug("Allocated targets", zap.Int("members", len(a.Members)), zap.Int("moved", a.Moved),
				zap.Int("unreported", len(a.Unreported)), zap.Bool("pending", a.Pending), zap.Duration("took", time.Since(changed)))
			counts = t.logCounts(counts)
			if !t.send(ctx, a) {
				return
			}
		}
		var event time.Time
		select {
		case <-ctx.Done():
			return
		case r := <-t.cfg.Reports:
			event = time.Now()
			s.now = event
			moved, err := s.report(r)
			if err != nil {
				logger.Error("Cannot set members after a member's report", zap.String("member", r.Member), zap.Error(err))
			}
			if publish = moved; moved {
				changed, cause = event, shares.CauseHandoff
			}
			if s.seeding && s.reportedAll() {
				seeded("every member's report")
			}
			continue
		case <-waitHeld:
			publish = false
			seeded("the wait for members' reports")
			continue
		case <-deadline.C:
			event = time.Now()
			s.now = event
			var late int
			if publish, late = s.expire(); publish {
				changed, cause = event, shares.CauseHandoff
			}
			if late > 0 {
				logger.Info("Hand-off deadline passed: targets moved without their new member's first scrape reported", zap.Int("targets", late))
			}
			continue
		case more := <-t.cfg.Jobs:
			changed, cause = time.Now(), shares.CauseJobs
			jobs, byName := mergeJobs(t.configs, more, logger)
			if err := s.setScrapeConfigs(byName); err != nil {
				logger.Error("Cannot encode the scrape configs", zap.Error(err))
				publish = false
				continue
			}
			// Discovery sends a snapshot of exactly these jobs: the targets
			// of jobs that are gone leave with it.
			t.disc.SetJobs(jobs)
			pending, publish = false, true
			s.jobsPending = false
			s.unpark() // once their discovery has reported, as a rule
		case snap := <-t.disc.Snapshots():
			if s.seeding {
				held, publish = &snap, false
				continue
			}
			changed, cause, publish = time.Now(), shares.CauseTargets, true
			s.now = changed
			s.setTargets(snap)
		case series := <-t.cfg.Series:
			latest = series
			changed, cause = time.Now(), shares.CauseMeasurements
			s.now = changed
			if waitSeries != nil && !reportedAll(series, s.names) {
				// Measured in part, the assignment would move targets
				// that the reports still to come place.
				waiting, publish = series, false
				continue
			}
			publish = s.measure(s.measurements(series))
			if waitSeries != nil {
				logger.Info("Every member reported its series: serving the allocation")
				waitSeries, waiting, publish = nil, nil, true
			}
		case <-waitSeries:
			logger.Warn("Not every member reported its series in time: serving the allocation", zap.Duration("waited", t.cfg.SeriesWait))
			changed, cause = time.Now(), shares.CauseMeasurements
			s.now = changed
			if waiting != nil {
				s.measure(s.measurements(waiting))
			}
			waitSeries, waiting, publish = nil, nil, true
		case <-t.cfg.MembersChanged:
			changed, cause = time.Now(), shares.CauseMembers
			s.now = changed
			moved, err := s.setMembers(t.cfg.Members())
			if err != nil {
				logger.Error("Cannot set members", zap.Error(err))
			}
			publish = moved
			if s.seeding && s.reportedAll() { // the one that did not report is gone
				seeded("a change of members")
			}
		}
	}
}

// reportedAll reports whether every member has a report in series.
func reportedAll(series Series, members []string) bool {
	for _, m := range members {
		if _, ok := series[m]; !ok {
			return false
		}
	}
	return true
}

// logCounts logs the targets the placement limits concern, one line when
// their number changes, and returns the counts.
func (t *Term) logCounts(was allocation.Counts) allocation.Counts {
	c, logger := t.state.alloc.Counts(), t.cfg.Logger
	switch {
	case c.OverLimit == was.OverLimit:
	case c.OverLimit > 0:
		logger.Warn("Targets are unassigned: every member that may take them holds max_targets_per_collector targets or max_series_per_collector series",
			zap.Int("unassigned", c.OverLimit), zap.Int("max_targets_per_collector", t.cfg.MaxTargetsPerMember),
			zap.Int64("max_series_per_collector", t.cfg.MaxSeriesPerMember))
	default:
		logger.Info("No target is unassigned for max_targets_per_collector or max_series_per_collector any more")
	}
	switch {
	case c.PinnedToNonMember == was.PinnedToNonMember:
	case c.PinnedToNonMember > 0:
		logger.Warn("Targets are pinned to an identity that is no member; they are placed as if unpinned",
			zap.Int("targets", c.PinnedToNonMember), zap.String("label", allocation.PinLabel))
	default:
		logger.Info("No target is pinned to an identity that is no member any more", zap.String("label", allocation.PinLabel))
	}
	return c
}

// send hands a to the reader; false when the term ends first.
func (t *Term) send(ctx context.Context, a *shares.Allocation) bool {
	select {
	case t.out <- a:
		return true
	case <-ctx.Done():
		return false
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
