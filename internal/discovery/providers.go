package discovery

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"go.uber.org/zap"
)

// The SD mechanisms run here directly, one provider for each SD config of
// each job, not under Prometheus's discovery manager: the manager keeps
// every target group it was sent until the next update of its source (at
// 1M targets, half a gigabyte of label maps, the largest part of a leader's
// heap), where the filter needs each group only while it relabels it. A
// provider relays its mechanism's updates to Run's loop, which hands them
// to the filter in batches (maxBatch) and forgets them.
//
// A job's discovery has reported when each of its providers has sent its
// first update: before, that it has no targets is not known (Kubernetes SD
// waits for its informers, an HTTP SD endpoint may answer slowly), and a
// leader that took the silence for the truth would publish empty shares.

// provider runs one SD config of a job.
type provider struct {
	job   string
	index int // of the SD config in the job's
	mech  string
	// cancel stops the mechanism; done is closed once it has returned.
	cancel context.CancelFunc
	done   chan struct{}
	// sent tells that the provider has sent its first update. Run's loop's.
	sent bool
}

// providerUpdate is what a provider sent: target groups that replace the
// job's groups of the same source from that provider.
type providerUpdate struct {
	p      *provider
	groups []*targetgroup.Group
}

// providers are the running providers of every job. Run's loop's.
type providers struct {
	ctx     context.Context
	logger  *slog.Logger
	metrics *discovery.SDMetrics
	updates chan providerUpdate
	// byJob holds each job's providers by the index of their SD config; nil
	// where the config failed to create its mechanism.
	byJob   map[string][]*provider
	stopped []*provider // cancelled, perhaps not returned yet
}

func newProviders(ctx context.Context, logger *slog.Logger, metrics *discovery.SDMetrics) *providers {
	return &providers{ctx: ctx, logger: logger, metrics: metrics, updates: make(chan providerUpdate),
		byJob: map[string][]*provider{}}
}

// start starts a provider for each of the job's SD configs; one that
// cannot start is logged, and counted by failedConfigs.
func (ps *providers) start(job string, configs discovery.Configs) {
	if len(configs) == 0 {
		// It reports at once, with no targets, as Prometheus's manager
		// treats a job without SD configs.
		configs = discovery.Configs{discovery.StaticConfig{{}}}
	}
	out := make([]*provider, len(configs))
	for i, cfg := range configs {
		mech := cfg.Name()
		d, err := cfg.NewDiscoverer(discovery.DiscovererOptions{
			Logger:  ps.logger.With("discovery", mech, "config", job),
			Metrics: ps.metrics.MechanismMetrics[mech],
			SetName: job,
		})
		if err != nil {
			ps.logger.Error("Cannot create service discovery", "err", err, "type", mech, "config", job)
			continue
		}
		ctx, cancel := context.WithCancel(ps.ctx)
		p := &provider{job: job, index: i, mech: mech, cancel: cancel, done: make(chan struct{})}
		out[i] = p
		go ps.relay(ctx, p, d)
	}
	ps.byJob[job] = out
}

// relay runs the mechanism of p and passes on its updates until ctx is done
// and it has returned.
func (ps *providers) relay(ctx context.Context, p *provider, d discovery.Discoverer) {
	defer close(p.done)
	up := make(chan []*targetgroup.Group)
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		d.Run(ctx, up)
	}()
	for {
		select {
		case groups, ok := <-up:
			if !ok { // static configs close it, though Prometheus says not to
				up = nil
				continue
			}
			select {
			case ps.updates <- providerUpdate{p: p, groups: groups}:
			case <-ctx.Done():
			}
		case <-ran:
			return
		}
	}
}

// stop stops the job's providers; what they send from now on is not
// current. The refresh metrics of a job that is gone go too; those of a job
// started anew count on.
func (ps *providers) stop(job string, gone bool) {
	ps.stopped = slices.DeleteFunc(ps.stopped, func(p *provider) bool {
		select {
		case <-p.done:
			return true // returned: nothing to wait for
		default:
			return false
		}
	})
	for _, p := range ps.byJob[job] {
		if p != nil {
			p.cancel()
			if gone {
				ps.metrics.RefreshManager.DeleteLabelValues(p.mech, job)
			}
			ps.stopped = append(ps.stopped, p)
		}
	}
	delete(ps.byJob, job)
}

// current reports whether p is one of the running providers.
func (ps *providers) current(p *provider) bool {
	running := ps.byJob[p.job]
	return p.index < len(running) && running[p.index] == p
}

// sent returns how many of the job's providers have sent their first update,
// and how many there are (failed ones included).
func (ps *providers) sent(job string) (sent, all int) {
	for _, p := range ps.byJob[job] {
		if p != nil && p.sent {
			sent++
		}
	}
	return sent, len(ps.byJob[job])
}

// failedConfigs counts the SD configs that could not start.
func (ps *providers) failedConfigs() int {
	n := 0
	for _, running := range ps.byJob {
		for _, p := range running {
			if p == nil {
				n++
			}
		}
	}
	return n
}

// wait stops every provider and waits until each mechanism has returned.
func (ps *providers) wait(logger *zap.Logger) {
	for job := range ps.byJob {
		ps.stop(job, true)
	}
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	for _, p := range ps.stopped {
		select {
		case <-p.done:
		case <-deadline.C:
			logger.Warn("A service discovery mechanism did not return once cancelled", zap.String("job", p.job), zap.String("mechanism", p.mech))
			return
		}
	}
}
