package prometheusallocatedreceiver // import "github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver"

import (
	"context"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// fence is the consumer the stock receiver hands its data to: it passes on
// the data of the targets of this member's share, and drops the data of any
// other target.
//
// The stock receiver reads its share at its HTTP SD poll and stops scraping
// a target only when its scrape manager next reloads, up to
// refresh_interval + 10 s after the target left the share; its new member
// may scrape it meanwhile. The fence sees each scrape's data with its
// target (the stock receiver's scrape loop puts the target in the context
// of the data it commits) and checks it against the share as the extension
// hands it in-process, which is never older than what the stock receiver
// has read: data follows the share at once, whatever the scrape loops do.
//
// The target is the scrape's, not the job and instance labels of its
// samples, which honor_labels and metric_relabel_configs may change (a
// federation target's data names other jobs and instances). Data without a
// target in its context (none comes from the stock receiver) passes.
//
// A warming target (shares.WarmingLabel: handed to this member, make before
// break, while its old member still exports it) is scraped and its data
// dropped; its first data is reported to the leader (warmed), which then
// moves it into this member's share, and its data passes from then on (a
// target that came back soon after it left: its first data taken by a
// scrape loop that stays, returns.go). A
// move's cut-over (shares.CutoverLabel) splits the moved target's data
// between its two members by the time of each scrape: a releasing target
// (shares.ReleasingLabel: moved away from this member) passes as a target
// of the share until its cut-over, an arriving one (in the share, marked
// with its cut-over) from it on; the scrapes from the cut-over on that it
// dropped as a warming target's, when this member learned of the move late,
// pass before its next one (late.go).
//
// The fence also measures each target of the share, and each warming one:
// the series its scrape gave (the stock receiver's scrape_samples_scraped,
// which it adds to every scrape's data), which it hands to the extension
// (Group.Measured) by the share's job and the target's key (report.TargetKey
// of its labels in the share, without the warming and releasing marks), for
// the leader.
//
// Before the member has any share, the share is empty: the stock receiver
// has no target to scrape then either, since every target it has comes from
// an answer of this member's API, which the extension has kept first.
type fence struct {
	next   consumer.Metrics
	shares func() (targetallocatorextension.Shares, <-chan struct{})
	fenced metric.Int64Counter
	// warmed tells the leader that a warming target's data was seen: its
	// job, its hash (the value of shares.WarmingLabel) and when the scrape
	// began.
	warmed func(job, hash string, scraped time.Time)
	// measured takes the series of a scrape of a target of the share.
	measured func(job, target string, series int64)
	logger   *zap.Logger

	mu    sync.Mutex // one rebuild of the index at a time
	index atomic.Pointer[shareIndex]
	// late are the last scrapes of the warming targets, for a cut-over
	// this member learns of late (late.go).
	late lateScrapes
	// returns are the targets that came back soon after they left
	// (returns.go), whose first scrapes are not reported.
	returns returns
	now     func() time.Time
}

// newFence returns the fence of a member whose stock receiver polls its
// share every refresh.
func newFence(group targetallocatorextension.Group, refresh time.Duration, fenced metric.Int64Counter, logger *zap.Logger) *fence {
	return &fence{shares: group.Shares, fenced: fenced, warmed: group.Warmed, measured: group.Measured, logger: logger,
		returns: newReturns(refresh+stockDelays+warmSlack, stockDelays+warmSlack), now: time.Now}
}

// consumer returns the fence as the stock receiver's consumer, which hands
// next what passes.
func (f *fence) consumer(next consumer.Metrics) (consumer.Metrics, error) {
	f.next = next
	return consumer.NewMetrics(f.consume)
}

// follow reads the share at each change until ctx is done, so that the
// fence sees each target leave and come back (returns) whether or not data
// comes meanwhile.
func (f *fence) follow(ctx context.Context) {
	for ctx.Err() == nil {
		changed, wait := f.current().changed, time.Duration(math.MaxInt64)
		if closed(changed) { // changed again, or the extension has no shares yet: after a pause
			changed, wait = nil, 100*time.Millisecond
		}
		allocatorapi.Pause(ctx, changed, wait)
	}
}

func (f *fence) consume(ctx context.Context, md pmetric.Metrics) error {
	target, ok := scrape.TargetFromContext(ctx)
	if !ok {
		return f.next.ConsumeMetrics(ctx, md)
	}
	idx := f.current()
	held, ok := idx.find(target)
	if ok {
		f.measure(held.job, held.seriesKey, md)
		if held.marks.Cutover.IsZero() {
			return f.next.ConsumeMetrics(ctx, md)
		}
		at := scrapeTime(md, f.now)
		if !held.marks.Releasing {
			// Arrived: the scrapes from the cut-over on that were dropped
			// while it still warmed here (this member learned late) first.
			if err := f.late.pass(ctx, f.next, lateKey{held.job, held.seriesKey}, held.marks.Cutover, at); err != nil {
				return err
			}
		}
		if held.marks.Exports(at) {
			return f.next.ConsumeMetrics(ctx, md)
		}
	}
	w, warming := idx.warming(target)
	var at time.Time
	if warming {
		f.measure(w.job, w.seriesKey, md)
		at = scrapeTime(md, f.now)
		if w.hash != shares.Standby && w.seriesKey != "" {
			f.late.keep(lateKey{w.job, w.seriesKey}, md, at)
		}
	}
	if dropped := dropValues(md); dropped > 0 {
		f.fenced.Add(ctx, int64(dropped))
		if warming && f.warmed != nil && w.hash != shares.Standby && f.returns.settled(lateKey{w.job, w.seriesKey}, at) {
			f.warmed(w.job, w.hash, at)
		}
	}
	if md.DataPointCount() == 0 {
		return nil
	}
	return f.next.ConsumeMetrics(ctx, md) // staleness markers
}

// measure hands the series of one scrape's data of a target to the
// extension, when it has them (and the target is known: seriesKey is
// empty when the share could not be read).
func (f *fence) measure(job, seriesKey string, md pmetric.Metrics) {
	if f.measured == nil || seriesKey == "" {
		return
	}
	if n, ok := seriesOf(md); ok {
		f.measured(job, seriesKey, n)
	}
}

// current returns the index of the share as it is now: rebuilt, from the
// jobs whose share changed, if the extension said that it may have changed.
func (f *fence) current() *shareIndex {
	if idx := f.index.Load(); idx != nil && !closed(idx.changed) {
		return idx
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := f.index.Load()
	if idx != nil && !closed(idx.changed) {
		return idx
	}
	own, changed := f.shares()
	prev := idx
	idx = idx.rebuild(own, changed, f.logger)
	f.returns.observe(prev, idx, f.now())
	f.index.Store(idx)
	f.late.retain(idx.arriving)
	return idx
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// shareIndex finds the targets of a share by what a scrape's target shows
// of them: its job label and address.
type shareIndex struct {
	// changed is closed when the share may have changed.
	changed <-chan struct{}
	// jobs are the targets of each job's share, and the ETag they are of.
	jobs    map[string]jobTargets
	targets map[targetKey][]shareTarget
	// warm are the warming targets: scraped, their data dropped.
	warm map[targetKey][]warmingTarget
	// open is set when a share cannot be read: then everything passes (a
	// share's answer is read before it is kept, so this is a bug).
	open bool
}

type jobTargets struct {
	etag    string
	targets []shareTarget
}

type shareTarget struct {
	key    targetKey
	labels labels.Labels
	// marks are the leader's marks of the target; marks.Warming is its
	// hash when it warms.
	marks shares.Marks
	// job is the share's job, and seriesKey the target's key in reports
	// (report.TargetKey of labels).
	job, seriesKey string
}

// warmingTarget is a warming target: its labels (without
// shares.WarmingLabel), its job and hash, as the leader knows them.
type warmingTarget struct {
	labels               labels.Labels
	job, hash, seriesKey string
}

// targetKey is a target's job label (the job's name unless its labels set
// one) and address.
type targetKey struct{ job, address string }

// rebuild indexes own, reusing the targets of the jobs whose ETag has not
// changed since idx.
func (idx *shareIndex) rebuild(own targetallocatorextension.Shares, changed <-chan struct{}, logger *zap.Logger) *shareIndex {
	next := &shareIndex{changed: changed, jobs: make(map[string]jobTargets, len(own)), targets: map[targetKey][]shareTarget{}, warm: map[targetKey][]warmingTarget{}}
	for job, share := range own {
		if idx != nil && share.ETag != "" && idx.jobs[job].etag == share.ETag {
			next.jobs[job] = idx.jobs[job]
			continue
		}
		groups, err := share.Targets()
		if err != nil {
			logger.Error("Cannot read this member's share: its data passes unfenced", zap.String("job_name", job), zap.Error(err))
			next.open = true
			continue
		}
		next.jobs[job] = jobTargets{etag: share.ETag, targets: shareTargets(job, groups)}
	}
	for job, jt := range next.jobs {
		for _, t := range jt.targets {
			if t.marks.Warming != "" {
				next.warm[t.key] = append(next.warm[t.key], warmingTarget{labels: t.labels, job: job, hash: t.marks.Warming, seriesKey: t.seriesKey})
				continue
			}
			next.targets[t.key] = append(next.targets[t.key], t)
		}
	}
	return next
}

// shareTargets are the targets of a job's share with the labels the stock
// receiver's HTTP SD gives them.
func shareTargets(job string, groups []httpsd.TargetGroup) []shareTarget {
	var out []shareTarget
	for _, t := range targetallocatorextension.ShareTargets(groups) {
		key := targetKey{job: job, address: t.Labels.Get(model.AddressLabel)}
		if name := t.Labels.Get(model.JobLabel); name != "" {
			key.job = name
		}
		out = append(out, shareTarget{key: key, labels: t.Labels, marks: t.Marks, job: job, seriesKey: t.Key})
	}
	return out
}

// arriving returns the targets, by job and key, that warm in the share or
// arrived with a cut-over: what is kept of their warming scrapes may still
// pass.
func (idx *shareIndex) arriving() map[lateKey]bool {
	out := map[lateKey]bool{}
	for _, ws := range idx.warm {
		for _, w := range ws {
			out[lateKey{w.job, w.seriesKey}] = true
		}
	}
	for job, jt := range idx.jobs {
		for _, t := range jt.targets {
			if !t.marks.Cutover.IsZero() && !t.marks.Releasing {
				out[lateKey{job, t.seriesKey}] = true
			}
		}
	}
	return out
}

// find returns the target of the share that target is, if it is one;
// while a share cannot be read, every target is held (a zero shareTarget).
func (idx *shareIndex) find(target *scrape.Target) (shareTarget, bool) {
	if idx.open {
		return shareTarget{}, true
	}
	discovered := target.DiscoveredLabels(labels.NewBuilder(labels.EmptyLabels()))
	key := targetKey{job: discovered.Get(model.JobLabel), address: discovered.Get(model.AddressLabel)}
	for _, t := range idx.targets[key] {
		if sameTarget(t.labels, discovered) {
			return t, true
		}
	}
	return shareTarget{}, false
}

// scrapeSamplesScraped is the metric in which the stock receiver reports
// how many samples a scrape gave.
const scrapeSamplesScraped = "scrape_samples_scraped"

// seriesOf returns the series one scrape's data gave: the value of its
// scrape_samples_scraped; false without it.
func seriesOf(md pmetric.Metrics) (int64, bool) {
	dp, ok := samplesScraped(md)
	switch {
	case !ok || dp.Flags().NoRecordedValue():
		return 0, false
	case dp.ValueType() == pmetric.NumberDataPointValueTypeDouble:
		return int64(dp.DoubleValue()), true
	}
	return dp.IntValue(), true
}

// scrapeTime returns when the scrape of md began: the time of its
// scrape_samples_scraped, which Prometheus gives every sample of a scrape
// that carries no time of its own; now() without it.
func scrapeTime(md pmetric.Metrics, now func() time.Time) time.Time {
	if dp, ok := samplesScraped(md); ok {
		return dp.Timestamp().AsTime()
	}
	return now()
}

// samplesScraped returns the scrape_samples_scraped point of one scrape's
// data; false without it.
func samplesScraped(md pmetric.Metrics) (pmetric.NumberDataPoint, bool) {
	rms := md.ResourceMetrics()
	for i := range rms.Len() {
		sms := rms.At(i).ScopeMetrics()
		for j := range sms.Len() {
			ms := sms.At(j).Metrics()
			for k := range ms.Len() {
				m := ms.At(k)
				if m.Name() == scrapeSamplesScraped && m.Type() == pmetric.MetricTypeGauge && m.Gauge().DataPoints().Len() > 0 {
					return m.Gauge().DataPoints().At(0), true
				}
			}
		}
	}
	return pmetric.NumberDataPoint{}, false
}

// warming returns the warming target that target is, if it is one.
func (idx *shareIndex) warming(target *scrape.Target) (warmingTarget, bool) {
	if len(idx.warm) == 0 {
		return warmingTarget{}, false
	}
	discovered := target.DiscoveredLabels(labels.NewBuilder(labels.EmptyLabels()))
	key := targetKey{job: discovered.Get(model.JobLabel), address: discovered.Get(model.AddressLabel)}
	for _, w := range idx.warm[key] {
		if sameTarget(w.labels, discovered) {
			return w, true
		}
	}
	return warmingTarget{}, false
}

// httpSDURL is the label the stock receiver's HTTP SD gives each target: its
// own URL, in place of the share's (the leader's own HTTP SD jobs have one).
const httpSDURL = model.MetaLabelPrefix + "url"

// sameTarget reports whether a scrape's target, by its discovered labels,
// is the share's target of labels share: it has the share's labels (but
// __meta_url), and only what Prometheus adds to every target of a job (job,
// __scheme__, __metrics_path__, __param_<name>, __scrape_interval__ and
// its other reserved labels, none of them __meta_), HTTP SD adds
// (__meta_url), and the marks of warming and releasing targets, which the
// stock receiver may still have read when the share no longer has them.
func sameTarget(share, discovered labels.Labels) bool {
	same := true
	share.Range(func(l labels.Label) {
		if l.Name != httpSDURL && discovered.Get(l.Name) != l.Value {
			same = false
		}
	})
	if !same {
		return false
	}
	discovered.Range(func(l labels.Label) {
		if l.Name == model.JobLabel || l.Name == httpSDURL || share.Has(l.Name) || l.Name == shares.WarmingLabel || l.Name == shares.ReleasingLabel || l.Name == shares.CutoverLabel {
			return
		}
		if !strings.HasPrefix(l.Name, model.ReservedLabelPrefix) || strings.HasPrefix(l.Name, model.MetaLabelPrefix) {
			same = false
		}
	})
	return same
}

// dropValues removes from md every data point that carries a value, and
// returns how many it removed: what is left are staleness markers, which
// end the target's series here as they would anyway when its scrape loop
// stops (a target that left the group entirely, or moved, ends here).
func dropValues(md pmetric.Metrics) int { return removePoints(md, false) }

// removePoints removes from md the data points that are staleness markers
// (stale) or that carry a value (!stale), and the metrics, scopes and
// resources left empty; it returns how many it removed.
func removePoints(md pmetric.Metrics, stale bool) int {
	removed := 0
	md.ResourceMetrics().RemoveIf(func(rm pmetric.ResourceMetrics) bool {
		rm.ScopeMetrics().RemoveIf(func(sm pmetric.ScopeMetrics) bool {
			sm.Metrics().RemoveIf(func(m pmetric.Metric) bool {
				var n, left int
				switch m.Type() {
				case pmetric.MetricTypeGauge:
					n, left = removeFrom(m.Gauge().DataPoints(), stale)
				case pmetric.MetricTypeSum:
					n, left = removeFrom(m.Sum().DataPoints(), stale)
				case pmetric.MetricTypeHistogram:
					n, left = removeFrom(m.Histogram().DataPoints(), stale)
				case pmetric.MetricTypeExponentialHistogram:
					n, left = removeFrom(m.ExponentialHistogram().DataPoints(), stale)
				case pmetric.MetricTypeSummary:
					n, left = removeFrom(m.Summary().DataPoints(), stale)
				}
				removed += n
				return left == 0
			})
			return sm.Metrics().Len() == 0
		})
		return rm.ScopeMetrics().Len() == 0
	})
	return removed
}

type point interface{ Flags() pmetric.DataPointFlags }

type points[P point] interface {
	RemoveIf(func(P) bool)
	Len() int
}

// removeFrom removes the staleness markers (stale) or the points that carry
// a value (!stale); it returns how many it removed and how many are left.
func removeFrom[P point, S points[P]](s S, stale bool) (removed, left int) {
	s.RemoveIf(func(p P) bool {
		if p.Flags().NoRecordedValue() != stale {
			return false
		}
		removed++
		return true
	})
	return removed, s.Len()
}
