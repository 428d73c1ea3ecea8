// Package discovery runs Prometheus service discovery for the scrape jobs of
// a target allocator config and filters the discovered targets the way
// Prometheus's relabeling would, producing immutable snapshots of every job's
// targets for allocation.
//
// Only the leader runs it: it creates a Discoverer when it gains leadership
// and cancels Run when it loses it.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/model/labels"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	// Registers every service discovery mechanism the collector's prometheus
	// receiver registers, under the same build tags (remove_all_sd,
	// enable_<name>_sd), so the two always agree on which SD configs exist.
	// It is the set discovery/install registers, minus what the build tags
	// remove.
	_ "github.com/prometheus/prometheus/plugins"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
)

// Target is one discovered target that the filter kept.
type Target struct {
	// Element holds the target's discovered labels, encoded as its element
	// of an HTTP SD answer: group labels merged with target labels (a target
	// label wins), __address__ and __meta_* included, before relabeling and
	// without the job's defaults. This is what the allocator HTTP API serves;
	// the collector's receiver adds the job's defaults and applies
	// relabel_configs itself. It is the labels' only form the leader keeps;
	// Labels decodes them.
	Element httpsd.Element
	// Hash identifies the target for allocation: the job name and the labels
	// after relabeling (Prometheus's target identity), so that a change in
	// metadata alone does not move a target. Targets that relabeling drops,
	// kept only under FilterNone, are identified by their discovered labels.
	Hash uint64
	// Node is the Kubernetes node the target runs on, read from its
	// discovered labels as the Target Allocator reads it (allocation.NodeOf:
	// the pod's, the node's or the endpoint's node name, or the Node an
	// EndpointSlice address targets), else "".
	Node string
	// Pin is the value of the target's allocation.PinLabel after relabeling,
	// the identity of the member it is pinned to, or "". A target that
	// relabeling drops has none.
	Pin string
}

// Labels returns the target's discovered labels, decoded from its element
// (see httpsd.Element.Labels): for the rare uses that need them.
func (t Target) Labels() labels.Labels { return t.Element.Labels() }

// Snapshot is every job's targets at one moment: every configured job has an
// entry, possibly empty, and a job's targets are sorted by Hash, one per Hash.
// It is never modified once sent, and must not be by its reader: snapshots
// share the slices of jobs that did not change.
//
// A job whose discovery has not reported yet (see providers.go) is in
// Unreported, with no targets: that it has none is not known. Past
// Discoverer.reportWait (30 s), a job is reported once any of its SD
// configs has sent its first update; one whose SD configs have all stayed
// silent stays unreported.
type Snapshot struct {
	Jobs       map[string][]Target
	Unreported map[string]bool
}

// defaultReportWait bounds how long a job's discovery waits for the first
// update of each of its SD configs before it reports with those that have
// sent one (Discoverer.reportWait).
const defaultReportWait = 30 * time.Second

// DiscoveredTargetsMetric names the gauge, on a Discoverer's registerer, of
// the targets its discovery found in each job (label job), before relabeling.
const DiscoveredTargetsMetric = "embedded_ta_discovered_targets"

// ProcessTargetsDurationMetric names the histogram, on a Discoverer's
// registerer, of the time each pass over the discovered targets takes: every
// job's target groups turned into targets, filtered and identified.
const ProcessTargetsDurationMetric = "embedded_ta_process_targets_duration_seconds"

// managerName labels the metrics Prometheus's discovery manager would have
// (name="...").
const managerName = "target_allocator"

// maxBatch is the longest Run holds the providers' updates before it takes
// them: it takes them after a quiet spell of batchQuiet, and at most
// maxBatch after the first while updates keep coming (Kubernetes SD sends
// one group an update, 100,000 of them as it starts at 1M targets).
// Prometheus's discovery manager batches for 5 s by default, which would
// alone make a change wait up to 5 s; a snapshot costs the leader in
// proportion to what changed, so a second is cheap.
const maxBatch = time.Second

// Discoverer runs service discovery for the jobs of one config.
type Discoverer struct {
	jobs     map[string]*config.ScrapeConfig
	strategy FilterStrategy
	logger   *zap.Logger
	reg      prometheus.Registerer
	out      chan Snapshot
	ran      atomic.Bool
	// reportWait is defaultReportWait; the package's tests shorten it.
	reportWait time.Duration
	// next holds jobs set by SetJobs that Run has not applied yet.
	next chan []*config.ScrapeConfig
}

// New returns a Discoverer for the scrape jobs of cfg, which comes from
// LoadConfig (a nil cfg has no jobs). It starts nothing: Run does.
//
// Run registers Prometheus's SD metrics (prometheus_sd_*) on reg, which must
// be this Discoverer's own: a registry that holds no other discovery's
// metrics, new for each term, as the collector's prometheus receiver does
// for each of its discovery managers. The caller reads them from there
// while the term lasts. A nil reg keeps them in a registry of their own.
func New(cfg *config.Config, filter FilterStrategy, logger *zap.Logger, reg prometheus.Registerer) (*Discoverer, error) {
	if err := filter.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	d := &Discoverer{
		jobs:       map[string]*config.ScrapeConfig{},
		strategy:   filter,
		logger:     logger,
		reg:        reg,
		reportWait: defaultReportWait,
		out:        make(chan Snapshot, 1),
		next:       make(chan []*config.ScrapeConfig, 1),
	}
	if cfg == nil {
		return d, nil
	}
	jobs, err := cfg.GetScrapeConfigs()
	if err != nil {
		return nil, fmt.Errorf("scrape configs (load the config with LoadConfig): %w", err)
	}
	for _, job := range jobs {
		d.jobs[job.JobName] = job
	}
	return d, nil
}

// SetJobs replaces the jobs, while Run runs or before it does: Run keeps the
// SD mechanisms and the discovered targets of the jobs whose config is the
// same pointer as before, starts those of the others anew (each is
// unreported until they have sent), and sends a Snapshot with exactly these
// jobs. Only the latest call counts.
func (d *Discoverer) SetJobs(jobs []*config.ScrapeConfig) {
	select {
	case <-d.next:
	default:
	}
	d.next <- jobs
}

// Snapshots delivers a Snapshot after each change in the discovered targets.
// It holds only the latest: a reader that falls behind skips to the newest,
// and Run never waits for it. The channel is never closed.
func (d *Discoverer) Snapshots() <-chan Snapshot { return d.out }

// Run runs service discovery for every job until ctx is done, sending a
// Snapshot on Snapshots after each change. It returns nil once ctx is done
// and the SD mechanisms it started have returned. A Discoverer serves one
// term: Run runs once.
func (d *Discoverer) Run(ctx context.Context) error {
	if !d.ran.CompareAndSwap(false, true) {
		return errors.New("discovery: Run runs once; a new term needs a new Discoverer")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	slogger := slog.New(zapslog.NewHandler(d.logger.Core(),
		zapslog.WithName(d.logger.Name()),
		// SD mechanisms log at error level on every failed refresh: no stack traces.
		zapslog.AddStacktraceAt(slog.LevelError+1)))

	sdMetrics, err := discovery.CreateAndRegisterSDMetrics(d.reg)
	if err != nil {
		return fmt.Errorf("discovery: register SD metrics: %w", err)
	}
	// Prometheus's discovery manager's metrics (prometheus_sd_*): the
	// providers and this loop are the manager. No update waits beyond its
	// batch, so prometheus_sd_updates_delayed_total stays 0.
	managerMetrics, err := discovery.NewManagerMetrics(d.reg, managerName)
	if err != nil {
		return fmt.Errorf("discovery: register discovery manager metrics: %w", err)
	}
	discovered := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: DiscoveredTargetsMetric,
		Help: "Targets service discovery found in each job, before relabeling.",
	}, []string{"job"})
	if err := d.reg.Register(discovered); err != nil {
		return fmt.Errorf("discovery: register %s: %w", DiscoveredTargetsMetric, err)
	}
	processing := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: ProcessTargetsDurationMetric,
		Help: "Time a pass over the discovered targets takes: turned into targets, filtered and identified.",
		// The Target Allocator's buckets for the same measure.
		Buckets: []float64{1, 5, 10, 30, 60, 120},
	})
	if err := d.reg.Register(processing); err != nil {
		return fmt.Errorf("discovery: register %s: %w", ProcessTargetsDurationMetric, err)
	}

	ps := newProviders(ctx, slogger, sdMetrics)
	defer ps.wait(d.logger)
	for name, job := range d.jobs {
		ps.start(name, job.ServiceDiscoveryConfigs)
	}
	managerMetrics.FailedConfigs.Set(float64(ps.failedConfigs()))
	d.logger.Info("Service discovery started", zap.Int("jobs", len(d.jobs)))

	s := newSnapshotter(d, ps, discovered, managerMetrics)
	// pending holds the groups the providers sent since the last snapshot,
	// by job; heard tells whether any provider has sent anything.
	pending := map[string][]change{}
	heard := false
	// flush applies the pending groups and sends the snapshot if it
	// changed. Before the first discovery there is nothing to tell: a
	// snapshot would report no job.
	flush := func() {
		if !heard {
			return
		}
		start := time.Now()
		snap, changed := s.update(pending)
		processing.Observe(time.Since(start).Seconds())
		pending = map[string][]change{}
		if !changed {
			return
		}
		d.publish(snap)
		managerMetrics.SentUpdates.Inc()
		for job := range snap.Jobs {
			managerMetrics.LastUpdated.WithLabelValues(job).SetToCurrentTime()
		}
	}
	batch := time.NewTimer(time.Hour)
	batch.Stop()
	var batchStart time.Time
	wait := time.NewTimer(d.reportWait)
	defer wait.Stop()
	defer batch.Stop()
	for {
		select {
		case u := <-ps.updates:
			if !ps.current(u.p) {
				continue // from a provider of a job's config that changed
			}
			managerMetrics.ReceivedUpdates.Inc()
			u.p.sent, heard = true, true
			for _, g := range u.groups {
				if g != nil {
					pending[u.p.job] = append(pending[u.p.job], change{key: groupKey{u.p.index, g.Source}, group: g})
				}
			}
			now := time.Now()
			if batchStart.IsZero() {
				batchStart = now
			}
			batch.Reset(min(batchQuiet, batchStart.Add(maxBatch).Sub(now)))
			continue
		case <-batch.C:
			batchStart = time.Time{}
			flush()
			continue
		case <-wait.C:
			flush() // jobs still unreported may report with what they have
			if next, ok := s.nextReportWait(); ok {
				wait.Reset(next)
			}
			continue
		case jobs := <-d.next:
			d.apply(ps, s, pending, jobs)
			managerMetrics.FailedConfigs.Set(float64(ps.failedConfigs()))
			if next, ok := s.nextReportWait(); ok {
				wait.Reset(next)
			}
			flush()
			continue
		case <-ctx.Done():
		}
		// The deferred wait returns once every mechanism has.
		d.logger.Info("Service discovery stopped")
		return nil
	}
}

// batchQuiet is how long Run waits after an update for the next before it
// takes the batch: the groups of one change often come in several updates.
const batchQuiet = 100 * time.Millisecond

// apply makes jobs the Discoverer's jobs; it belongs to Run's goroutine. A
// job whose config changed starts its discovery anew: its providers are
// replaced (what they had sent is forgotten, so its targets are relabeled
// from what the new ones send) and it is unreported until they have sent.
func (d *Discoverer) apply(ps *providers, s *snapshotter, pending map[string][]change, jobs []*config.ScrapeConfig) {
	next := make(map[string]*config.ScrapeConfig, len(jobs))
	for _, job := range jobs {
		next[job.JobName] = job
	}
	for name, job := range d.jobs {
		if next[name] != job {
			ps.stop(name, next[name] == nil)
			s.forget(name)
			delete(pending, name)
		}
	}
	for name, job := range next {
		if d.jobs[name] != job {
			ps.start(name, job.ServiceDiscoveryConfigs)
			s.since[name] = time.Now() // its discovery starts anew
		}
	}
	d.jobs = next
	s.changed = true // jobs may have come or gone
	d.logger.Info("Service discovery jobs changed", zap.Int("jobs", len(next)))
}

// publish replaces an unread snapshot with s. Run is the only sender, so the
// send after the drain cannot block.
func (d *Discoverer) publish(s Snapshot) {
	select {
	case <-d.out:
	default:
	}
	d.out <- s
}

// snapshotter turns the providers' target groups into Snapshots. It belongs
// to Run's goroutine.
type snapshotter struct {
	d         *Discoverer
	providers *providers
	filter    *filter
	last      Snapshot
	reported  map[string]int // job -> targets Prometheus would not scrape, last logged
	changed   bool           // the jobs changed since the last snapshot
	// since is when each job's discovery started, for Discoverer.reportWait.
	since map[string]time.Time
	// discovered counts each job's targets before relabeling, as does
	// prometheus_sd_discovered_targets (manager).
	discovered *prometheus.GaugeVec
	manager    *discovery.Metrics
}

func newSnapshotter(d *Discoverer, ps *providers, discovered *prometheus.GaugeVec, manager *discovery.Metrics) *snapshotter {
	s := &snapshotter{d: d, providers: ps, filter: newFilter(d.strategy), reported: map[string]int{}, since: map[string]time.Time{},
		discovered: discovered, manager: manager}
	now := time.Now()
	for name := range d.jobs {
		s.since[name] = now
	}
	return s
}

// unreported reports whether a job's discovery has not reported: not all
// its providers have sent their first update, and either none has or
// Discoverer.reportWait has not passed since it started.
func (s *snapshotter) unreported(job string, now time.Time) bool {
	sent, all := s.providers.sent(job)
	if sent >= all {
		return false
	}
	return sent == 0 || now.Sub(s.since[job]) < s.d.reportWait
}

// nextReportWait returns how long until the first job some of whose
// providers have not sent reaches Discoverer.reportWait, false when none
// waits. A job started anew (SetJobs) waits from then.
func (s *snapshotter) nextReportWait() (time.Duration, bool) {
	next, ok := time.Duration(0), false
	now := time.Now()
	for job := range s.d.jobs {
		if sent, all := s.providers.sent(job); sent >= all {
			continue
		}
		if left := s.since[job].Add(s.d.reportWait).Sub(now); left > 0 && (!ok || left < next) {
			next, ok = left, true
		}
	}
	return next, ok
}

// update applies the groups the providers sent, by job, and returns the
// Snapshot of every job and whether it differs from the previous one.
func (s *snapshotter) update(pending map[string][]change) (Snapshot, bool) {
	snap := Snapshot{Jobs: make(map[string][]Target, len(s.d.jobs)), Unreported: map[string]bool{}}
	changed := s.last.Jobs == nil || s.changed
	s.changed = false
	total := 0
	now := time.Now()
	for name, job := range s.d.jobs {
		// A job's groups are applied reported or not: the providers send
		// each group once.
		targets, regrouped := s.filter.jobs[name], false
		if targets == nil || len(pending[name]) > 0 {
			targets, regrouped = s.filter.update(job, pending[name])
		}
		s.discovered.WithLabelValues(name).Set(float64(targets.discovered))
		s.manager.DiscoveredTargets.WithLabelValues(name).Set(float64(targets.discovered))
		if s.unreported(name, now) {
			snap.Jobs[name], snap.Unreported[name] = nil, true
			changed = changed || !s.last.Unreported[name]
			continue
		}
		changed = changed || s.last.Unreported[name]
		snap.Jobs[name] = targets.sorted
		total += len(targets.sorted)
		// New target groups often carry the same targets (a resync, a
		// change in metadata the snapshot does not hold).
		changed = changed || regrouped && !slices.EqualFunc(s.last.Jobs[name], targets.sorted, sameTarget)
		s.report(name, targets)
	}
	if !changed {
		return s.last, false
	}
	s.last = snap
	s.d.logger.Debug("Discovered targets", zap.Int("targets", total), zap.Int("jobs", len(snap.Jobs)))
	return snap, true
}

// forget drops what the snapshotter knows of a job whose config changed or
// that is gone, so that its targets are relabeled anew.
func (s *snapshotter) forget(job string) {
	delete(s.filter.jobs, job)
	delete(s.reported, job)
	s.discovered.DeleteLabelValues(job)
	s.manager.DiscoveredTargets.DeleteLabelValues(job)
	s.manager.LastUpdated.DeleteLabelValues(job)
}

func sameTarget(a, b Target) bool {
	return a.Hash == b.Hash && a.Node == b.Node && a.Pin == b.Pin && a.Element == b.Element
}

// report logs a job's targets that Prometheus would not scrape when their
// number changes.
func (s *snapshotter) report(job string, t *jobTargets) {
	if s.reported[job] == t.failed {
		return
	}
	s.reported[job] = t.failed
	if t.failed == 0 {
		return
	}
	verb := "dropped"
	if s.d.strategy == FilterNone {
		verb = "allocated anyway (filter_strategy is empty)"
	}
	s.d.logger.Warn("Targets that Prometheus would not scrape are "+verb,
		zap.String("job", job), zap.Int("targets", t.failed), zap.Error(t.err))
}
