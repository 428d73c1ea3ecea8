package prometheusallocatedreceiver

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver/internal/metadata"
	"github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver/internal/metadatatest"
)

// shareOf is a member's shares as its API answers them: each job's targets,
// one target group each, as the leader encodes them.
type shareOf map[string][]map[string]string

// ownShares are the shares of s, their ETags the hash of their answers.
func ownShares(t *testing.T, s shareOf) targetallocatorextension.Shares {
	t.Helper()
	own := targetallocatorextension.Shares{}
	for job, elements := range s {
		groups := []map[string]any{}
		for _, ls := range elements {
			groups = append(groups, map[string]any{"targets": []string{ls[model.AddressLabel]}, "labels": ls})
		}
		body, err := json.Marshal(groups)
		require.NoError(t, err)
		own[job] = allocatorapi.OwnShareOf(shares.Answer{Body: body, ETag: fmt.Sprintf("%q", body)})
	}
	return own
}

// memberShares stands in for the extension's Shares: set replaces the
// share and closes the channel, as the extension does.
type memberShares struct {
	mu      sync.Mutex
	own     targetallocatorextension.Shares
	changed chan struct{}
	asked   int
}

func newMemberShares() *memberShares {
	return &memberShares{own: targetallocatorextension.Shares{}, changed: make(chan struct{})}
}

func (m *memberShares) get() (targetallocatorextension.Shares, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked++
	return m.own, m.changed
}

func (m *memberShares) set(own targetallocatorextension.Shares) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.own = own
	close(m.changed)
	m.changed = make(chan struct{})
}

// stockTarget is a target of job as the stock receiver makes it from an
// element of this member's share: its HTTP SD gives it the element's labels
// and its own URL, the scrape pool its job's settings.
func stockTarget(t *testing.T, job string, element map[string]string, params url.Values) *scrape.Target {
	t.Helper()
	cfg := &config.ScrapeConfig{
		JobName: job, ScrapeInterval: model.Duration(time.Second), ScrapeTimeout: model.Duration(time.Second),
		MetricsPath: "/metrics", Scheme: "http", Params: params,
	}
	group := model.LabelSet{"__meta_url": model.LabelValue("http://127.0.0.1:8080/jobs/" + url.QueryEscape(job) + "/targets?collector_id=c-0")}
	for name, value := range element {
		if name != "__meta_url" {
			group[model.LabelName(name)] = model.LabelValue(value)
		}
	}
	target := model.LabelSet{model.AddressLabel: model.LabelValue(element[model.AddressLabel])}
	ls, err := scrape.PopulateLabels(labels.NewBuilder(labels.EmptyLabels()), cfg, target, group)
	require.NoError(t, err)
	return scrape.NewTarget(ls, cfg, target, group)
}

// scrapeData is what the stock receiver commits for one scrape: values
// data points and stale staleness markers, under the resource of job and
// instance (the samples' labels, which honor_labels may make anything).
func scrapeData(job, instance string, values, stale int) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", job)
	rm.Resource().Attributes().PutStr("service.instance.id", instance)
	sm := rm.ScopeMetrics().AppendEmpty()
	gauge := sm.Metrics().AppendEmpty()
	gauge.SetName("scrape_number")
	points := gauge.SetEmptyGauge().DataPoints()
	for i := range values {
		points.AppendEmpty().SetIntValue(int64(i))
	}
	up := sm.Metrics().AppendEmpty()
	up.SetName("up")
	markers := up.SetEmptySum().DataPoints()
	for range stale {
		dp := markers.AppendEmpty()
		dp.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
		dp.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
	}
	return md
}

// testFence is a fence over shares that passes to sink and counts in tel.
func testFence(t *testing.T, m *memberShares, sink *consumertest.MetricsSink) (*fence, *componenttest.Telemetry) {
	t.Helper()
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
	tb, err := metadata.NewTelemetryBuilder(tel.NewTelemetrySettings())
	require.NoError(t, err)
	t.Cleanup(tb.Shutdown)
	f := &fence{shares: m.get, fenced: tb.ReceiverPrometheusAllocatedFencedMetricPoints, logger: zap.NewNop(),
		returns: newReturns(5*time.Second+stockDelays+warmSlack, stockDelays+warmSlack), now: time.Now}
	_, err = f.consumer(sink)
	require.NoError(t, err)
	return f, tel
}

// consume hands the fence one scrape's data, of target if not nil.
func consume(t *testing.T, f *fence, target *scrape.Target, md pmetric.Metrics) {
	t.Helper()
	ctx := context.Background()
	if target != nil {
		ctx = scrape.ContextWithTarget(ctx, target)
	}
	require.NoError(t, f.consume(ctx, md))
}

func assertFenced(t *testing.T, tel *componenttest.Telemetry, n int64) {
	t.Helper()
	metadatatest.AssertEqualReceiverPrometheusAllocatedFencedMetricPoints(t, tel,
		[]metricdata.DataPoint[int64]{{Value: n}}, metricdatatest.IgnoreTimestamp())
}

func TestFence(t *testing.T) {
	a := map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "a"}
	share := shareOf{
		"pods": {a, {"__address__": "10.0.0.2:80", "__meta_pod": "b"}},
		// A target that names its job: the scrape's target has that job label.
		"federate": {{"__address__": "10.0.0.3:80", "job": "renamed"}},
		// A target of the leader's own HTTP SD: the stock receiver's HTTP SD
		// replaces its __meta_url.
		"upstream": {{"__address__": "10.0.0.4:80", "__meta_url": "http://sd.example/targets"}},
		"probes":   {{"__address__": "10.0.0.5:80"}},
	}
	with := func(ls map[string]string, name, value string) map[string]string {
		out := map[string]string{name: value}
		for k, v := range ls {
			if k != name {
				out[k] = v
			}
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		target   *scrape.Target // nil: none in the context
		data     pmetric.Metrics
		passed   int // data points
		fenced   int
		unfenced bool
	}{
		{name: "a target of the share", target: stockTarget(t, "pods", a, nil), data: scrapeData("pods", "10.0.0.1:80", 3, 0), passed: 3},
		{name: "its samples name another job and instance (honor_labels, metric relabeling)", target: stockTarget(t, "pods", a, nil),
			data: scrapeData("elsewhere", "10.9.9.9:1", 3, 0), passed: 3},
		{name: "a target outside the share", target: stockTarget(t, "pods", map[string]string{"__address__": "10.0.0.9:80", "__meta_pod": "c"}, nil),
			data: scrapeData("pods", "10.0.0.9:80", 3, 0), fenced: 3},
		{name: "outside the share, its samples naming a target of the share", target: stockTarget(t, "pods", map[string]string{"__address__": "10.0.0.9:80"}, nil),
			data: scrapeData("pods", "10.0.0.1:80", 3, 0), fenced: 3},
		{name: "a share's address with other labels", target: stockTarget(t, "pods", with(a, "__meta_pod", "b"), nil),
			data: scrapeData("pods", "10.0.0.1:80", 2, 0), fenced: 2},
		{name: "a share's target with a discovered label more", target: stockTarget(t, "pods", with(a, "__meta_node", "n"), nil),
			data: scrapeData("pods", "10.0.0.1:80", 2, 0), fenced: 2},
		{name: "a share's target in another job", target: stockTarget(t, "nodes", a, nil), data: scrapeData("nodes", "10.0.0.1:80", 2, 0), fenced: 2},
		{name: "a target that names its job", target: stockTarget(t, "federate", map[string]string{"__address__": "10.0.0.3:80", "job": "renamed"}, nil),
			data: scrapeData("renamed", "10.0.0.3:80", 2, 0), passed: 2},
		{name: "a target with its HTTP SD's URL", target: stockTarget(t, "upstream", map[string]string{"__address__": "10.0.0.4:80", "__meta_url": "x"}, nil),
			data: scrapeData("upstream", "10.0.0.4:80", 2, 0), passed: 2},
		{name: "a job with params", target: stockTarget(t, "probes", map[string]string{"__address__": "10.0.0.5:80"}, url.Values{"module": {"http_2xx"}}),
			data: scrapeData("probes", "10.0.0.5:80", 2, 0), passed: 2},
		{name: "no target in the context", data: scrapeData("pods", "10.0.0.9:80", 2, 0), passed: 2},
		{name: "the staleness markers of a target outside the share pass", target: stockTarget(t, "pods", map[string]string{"__address__": "10.0.0.9:80"}, nil),
			data: scrapeData("pods", "10.0.0.9:80", 2, 3), passed: 3, fenced: 2},
		{name: "only staleness markers", target: stockTarget(t, "pods", map[string]string{"__address__": "10.0.0.9:80"}, nil),
			data: scrapeData("pods", "10.0.0.9:80", 0, 2), passed: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemberShares()
			m.set(ownShares(t, share))
			sink := new(consumertest.MetricsSink)
			f, tel := testFence(t, m, sink)
			consume(t, f, tc.target, tc.data)
			assert.Equal(t, tc.passed, sink.DataPointCount())
			if tc.passed == 0 {
				assert.Empty(t, sink.AllMetrics(), "nothing is passed on")
			}
			if tc.fenced > 0 {
				assertFenced(t, tel, int64(tc.fenced))
			}
		})
	}
}

// The fence follows the share as it changes, and drops everything before
// there is one.
func TestFenceFollowsTheShare(t *testing.T) {
	a := map[string]string{"__address__": "10.0.0.1:80"}
	b := map[string]string{"__address__": "10.0.0.2:80"}
	targetA, targetB := stockTarget(t, "pods", a, nil), stockTarget(t, "pods", b, nil)
	m := newMemberShares()
	sink := new(consumertest.MetricsSink)
	f, tel := testFence(t, m, sink)

	fenced := 0
	for _, step := range []struct {
		name  string
		share shareOf // nil: unchanged
		pass  map[*scrape.Target]bool
	}{
		{name: "no share yet", pass: map[*scrape.Target]bool{targetA: false, targetB: false}},
		{name: "a's", share: shareOf{"pods": {a}}, pass: map[*scrape.Target]bool{targetA: true, targetB: false}},
		{name: "a moved away, b came", share: shareOf{"pods": {b}}, pass: map[*scrape.Target]bool{targetA: false, targetB: true}},
		{name: "a job gone", share: shareOf{"nodes": {a}}, pass: map[*scrape.Target]bool{targetA: false, targetB: false}},
		{name: "both", share: shareOf{"pods": {a, b}}, pass: map[*scrape.Target]bool{targetA: true, targetB: true}},
		{name: "empty", share: shareOf{"pods": {}}, pass: map[*scrape.Target]bool{targetA: false, targetB: false}},
	} {
		if step.share != nil {
			m.set(ownShares(t, step.share))
		}
		for target, pass := range step.pass {
			before := sink.DataPointCount()
			consume(t, f, target, scrapeData("pods", target.GetValue("instance"), 1, 0))
			if pass {
				assert.Equal(t, before+1, sink.DataPointCount(), "%s: %s is fenced", step.name, target)
			} else {
				assert.Equal(t, before, sink.DataPointCount(), "%s: %s passes", step.name, target)
				fenced++
			}
		}
	}
	assertFenced(t, tel, int64(fenced))
}

// The fence asks for the share only when it may have changed, and reads
// again only the jobs whose share changed.
func TestFenceRebuildsOnlyWhatChanged(t *testing.T) {
	a := map[string]string{"__address__": "10.0.0.1:80"}
	m := newMemberShares()
	m.set(ownShares(t, shareOf{"pods": {a}, "nodes": {a}}))
	f, _ := testFence(t, m, new(consumertest.MetricsSink))
	target := stockTarget(t, "pods", a, nil)
	for range 3 {
		consume(t, f, target, scrapeData("pods", "10.0.0.1:80", 1, 0))
	}
	assert.Equal(t, 1, m.asked, "an unchanged share is asked for once")
	first := f.index.Load()

	m.set(ownShares(t, shareOf{"pods": {a}, "nodes": {}}))
	consume(t, f, target, scrapeData("pods", "10.0.0.1:80", 1, 0))
	assert.Equal(t, 2, m.asked)
	second := f.index.Load()
	assert.Same(t, &first.jobs["pods"].targets[0], &second.jobs["pods"].targets[0], "the unchanged job's targets are reused")
	assert.Empty(t, second.jobs["nodes"].targets)
}

// With the stock receiver: its data reaches the fence with its target, and
// the data of a job outside the share stops at once when the share
// changes, while the stock receiver keeps scraping it until its next poll.
func TestFenceWithTheStockReceiver(t *testing.T) {
	verifyNoLeak(t)
	api := newAllocatorAPI(t)
	api.scrapeConfig.Store(`{"kept": {"job_name": "kept", "scrape_interval": "200ms", "scrape_timeout": "200ms"},
		"fenced": {"job_name": "fenced", "scrape_interval": "200ms", "scrape_timeout": "200ms"}}`)
	api.ready.Store(true)
	element := map[string]string{"__address__": api.endpoint()}
	m := newMemberShares()
	m.set(ownShares(t, shareOf{"kept": {element}}))

	cfg := createDefaultConfig().(*Config)
	cfg.HTTPSDConfig.RefreshInterval = time.Minute // the stock receiver does not learn of the change
	tel := componenttest.NewTelemetry()
	defer func() { require.NoError(t, tel.Shutdown(context.Background())) }()
	sink := &jobSink{}
	r, err := NewFactory().CreateMetrics(context.Background(), metadatatest.NewSettings(tel), cfg, sink)
	require.NoError(t, err)
	h := &statusHost{host: host{Host: componenttest.NewNopHost(), extensions: map[component.ID]component.Component{
		cfg.Allocator: member{endpoint: api.endpoint(), shares: m.get},
	}}}
	require.NoError(t, r.Start(context.Background(), h))
	defer shutdown(t, r)

	require.Eventually(t, func() bool { return sink.values("kept") >= 3 }, 30*time.Second, 20*time.Millisecond)
	assert.Zero(t, sink.values("fenced"), "the data of a job outside the share passed")
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		fenced, err := tel.GetMetric("otelcol_receiver_prometheus_allocated_fenced_metric_points")
		if assert.NoError(c, err) {
			assert.Positive(c, fenced.Data.(metricdata.Sum[int64]).DataPoints[0].Value)
		}
	}, 30*time.Second, 20*time.Millisecond, "the stock receiver scrapes the job outside the share, and the fence counts its data")
	assert.Zero(t, sink.values("fenced"), "the data of a job outside the share passed")

	// The share changes: "kept" leaves it, "fenced" joins it.
	m.set(ownShares(t, shareOf{"fenced": {element}}))
	changed := time.Now()
	require.Eventually(t, func() bool { return sink.values("fenced") >= 3 }, 30*time.Second, 20*time.Millisecond)
	// A scrape the fence let pass just before the change may arrive just after it.
	last := sink.lastValue("kept")
	assert.False(t, last.After(changed.Add(100*time.Millisecond)), "data of a job that left the share passed %s after the change", last.Sub(changed))
}

// jobSink records the time of each data point with a value, by job.
type jobSink struct {
	mu    sync.Mutex
	times map[string][]time.Time
}

func (*jobSink) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (s *jobSink) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.times == nil {
		s.times = map[string][]time.Time{}
	}
	now := time.Now()
	for _, rm := range md.ResourceMetrics().All() {
		job, _ := rm.Resource().Attributes().Get("service.name")
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Type() == pmetric.MetricTypeGauge && m.Gauge().DataPoints().Len() > 0 && !m.Gauge().DataPoints().At(0).Flags().NoRecordedValue() {
					s.times[job.Str()] = append(s.times[job.Str()], now)
				}
			}
		}
	}
	return nil
}

func (s *jobSink) values(job string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.times[job])
}

// lastValue is when the last data point with a value of job arrived.
func (s *jobSink) lastValue(job string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := append([]time.Time(nil), s.times[job]...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	if len(ts) == 0 {
		return time.Time{}
	}
	return ts[len(ts)-1]
}

// A warming target (make before break) is scraped and its data dropped; its
// data is reported as seen, with its job and hash. Once it is in the
// share, its data passes, also from the scrape loop that still carries the
// warming label in its discovered labels (the stock receiver reads the
// share later than the fence).
func TestFenceWarmingTarget(t *testing.T) {
	plain := map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "a"}
	warming := map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "a", shares.WarmingLabel: "00000000000000aa"}
	m := newMemberShares()
	sink := new(consumertest.MetricsSink)
	f, tel := testFence(t, m, sink)
	type seen struct{ job, hash string }
	var warmed []seen
	f.warmed = func(job, hash string, _ time.Time) { warmed = append(warmed, seen{job, hash}) }
	scraped := stockTarget(t, "pods", warming, nil)

	m.set(ownShares(t, shareOf{"pods": {warming}}))
	consume(t, f, scraped, scrapeData("pods", "10.0.0.1:80", 3, 0))
	assert.Zero(t, sink.DataPointCount(), "a warming target's data passed")
	assertFenced(t, tel, 3)
	assert.Equal(t, []seen{{"pods", "00000000000000aa"}}, warmed)
	consume(t, f, scraped, scrapeData("pods", "10.0.0.1:80", 0, 2))
	assert.Len(t, warmed, 1, "staleness markers alone are no scrape")

	other := stockTarget(t, "pods", map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "b", shares.WarmingLabel: "00000000000000aa"}, nil)
	consume(t, f, other, scrapeData("pods", "10.0.0.1:80", 1, 0))
	assert.Len(t, warmed, 1, "a target with other labels is not the warming one")

	m.set(ownShares(t, shareOf{"pods": {plain}}))
	consume(t, f, scraped, scrapeData("pods", "10.0.0.1:80", 3, 0))
	assert.Equal(t, 3+2, sink.DataPointCount(), "once in the share, its data passes")
	assert.Len(t, warmed, 1)

	// A target on hot standby: its data is dropped, and not reported.
	standby := map[string]string{"__address__": "10.0.0.2:80", shares.WarmingLabel: shares.Standby}
	m.set(ownShares(t, shareOf{"pods": {plain, standby}}))
	consume(t, f, stockTarget(t, "pods", standby, nil), scrapeData("pods", "10.0.0.2:80", 4, 0))
	assert.Equal(t, 3+2, sink.DataPointCount(), "a standby's data passed")
	assertFenced(t, tel, 3+1+4)
	assert.Len(t, warmed, 1, "a standby's scrape was reported")
}

// scrapeAt is one scrape's data begun at the given time: n values and its
// scrape_samples_scraped, all at that time, as Prometheus commits them.
func scrapeAt(job, instance string, n int, at time.Time) pmetric.Metrics {
	md := scrapeData(job, instance, n, 0)
	ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	samples := ms.AppendEmpty()
	samples.SetName(scrapeSamplesScraped)
	samples.SetEmptyGauge().DataPoints().AppendEmpty().SetIntValue(int64(n))
	for i := range ms.Len() {
		if m := ms.At(i); m.Type() == pmetric.MetricTypeGauge {
			for j := range m.Gauge().DataPoints().Len() {
				m.Gauge().DataPoints().At(j).SetTimestamp(pcommon.NewTimestampFromTime(at))
			}
		}
	}
	return md
}

// A move's cut-over splits the target's data by the time of each scrape:
// its old member (releasing) passes the scrapes before it, its new member
// those from it on, whenever the data reaches the fence.
func TestFenceCutover(t *testing.T) {
	cutover := time.UnixMilli(1_700_000_000_500)
	plain := map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "a"}
	marked := func(marks ...string) map[string]string {
		out := maps.Clone(plain)
		for i := 0; i < len(marks); i += 2 {
			out[marks[i]] = marks[i+1]
		}
		return out
	}
	releasing := marked(shares.ReleasingLabel, "00000000000000aa", shares.CutoverLabel, shares.FormatCutover(cutover))
	arriving := marked(shares.CutoverLabel, shares.FormatCutover(cutover))
	before, at, after := cutover.Add(-time.Millisecond), cutover, cutover.Add(time.Second)

	for _, tc := range []struct {
		name   string
		share  map[string]string
		passes map[time.Time]bool
	}{
		{"old member", releasing, map[time.Time]bool{before: true, at: false, after: false}},
		{"new member", arriving, map[time.Time]bool{before: false, at: true, after: true}},
		{"no cut-over", plain, map[time.Time]bool{before: true, at: true, after: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemberShares()
			sink := new(consumertest.MetricsSink)
			f, _ := testFence(t, m, sink)
			m.set(ownShares(t, shareOf{"pods": {tc.share}}))
			// The stock receiver may still have read the labels without
			// the marks, or with them: the target is the same.
			for _, scraped := range []map[string]string{tc.share, plain} {
				for _, when := range []time.Time{before, at, after} {
					sink.Reset()
					consume(t, f, stockTarget(t, "pods", scraped, nil), scrapeAt("pods", "10.0.0.1:80", 2, when))
					want := 0
					if tc.passes[when] {
						want = 3 // two values and scrape_samples_scraped
					}
					assert.Equal(t, want, sink.DataPointCount(), "a scrape %s after the cut-over", when.Sub(cutover))
				}
			}
		})
	}
}

// The fence hands the extension each scrape's series of a target of the
// share (its scrape_samples_scraped) by the key the leader computes from
// the target's discovered labels, and nothing of a target outside it.
func TestFenceMeasures(t *testing.T) {
	discovered := labels.FromStrings("__address__", "10.0.0.1:80", "__meta_pod", "a", "__meta_port", "80")
	element := httpsd.EncodeSorted(slices.Collect(func(yield func(labels.Label) bool) {
		discovered.Range(func(l labels.Label) { yield(l) })
	}))
	share := shares.NewShare([]shares.Target{{Hash: 1, Element: element}})
	own := targetallocatorextension.Shares{"pods": allocatorapi.OwnShareOf(share.Answer())}
	m := newMemberShares()
	m.set(own)
	sink := new(consumertest.MetricsSink)
	f, _ := testFence(t, m, sink)
	type measured struct {
		job, key string
		series   int64
	}
	var got []measured
	f.measured = func(job, key string, series int64) { got = append(got, measured{job, key, series}) }

	withSamples := func(md pmetric.Metrics, n float64) pmetric.Metrics {
		g := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().AppendEmpty()
		g.SetName("scrape_samples_scraped")
		g.SetEmptyGauge().DataPoints().AppendEmpty().SetDoubleValue(n)
		return md
	}
	inShare := stockTarget(t, "pods", map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "a", "__meta_port": "80"}, nil)
	consume(t, f, inShare, withSamples(scrapeData("pods", "10.0.0.1:80", 3, 0), 1234))
	consume(t, f, inShare, scrapeData("pods", "10.0.0.1:80", 0, 2)) // markers only: no scrape_samples_scraped
	outside := stockTarget(t, "pods", map[string]string{"__address__": "10.0.0.9:80"}, nil)
	consume(t, f, outside, withSamples(scrapeData("pods", "10.0.0.9:80", 3, 0), 99))
	assert.Equal(t, []measured{{"pods", report.TargetKey(element.Labels()), 1234}}, got)

	// A warming target is measured too, by the key of its labels without
	// the warming mark (those the leader discovered): its data is dropped.
	got = nil
	warming := map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "a", "__meta_port": "80", shares.WarmingLabel: "00000000000000aa"}
	m.set(ownShares(t, shareOf{"pods": {warming}}))
	before := sink.DataPointCount()
	consume(t, f, stockTarget(t, "pods", warming, nil), withSamples(scrapeData("pods", "10.0.0.1:80", 3, 0), 77))
	assert.Equal(t, before, sink.DataPointCount(), "a warming target's data passed")
	assert.Equal(t, []measured{{"pods", report.TargetKey(element.Labels()), 77}}, got)
}

// A member that learns of its move's cut-over only after it passed has
// dropped the scrapes between as a warming target's: the fence kept the
// last of them and passes those from the cut-over on, in order, before the
// first scrape it passes as the target's new member; nothing before the
// cut-over, nothing twice. One that learned in time passes nothing more.
func TestFenceLateCutover(t *testing.T) {
	cutover := time.UnixMilli(1_700_000_000_500)
	plain := map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "a"}
	warming := maps.Clone(plain)
	warming[shares.WarmingLabel] = "00000000000000aa"
	arriving := maps.Clone(plain)
	arriving[shares.CutoverLabel] = shares.FormatCutover(cutover)
	times := func(sink *consumertest.MetricsSink) []int64 {
		var out []int64
		for _, md := range sink.AllMetrics() {
			out = append(out, scrapeTime(md, time.Now).UnixMilli())
		}
		return out
	}
	// Scrapes 1 s apart, the cut-over between the second and the third.
	s := func(k int) time.Time { return cutover.Add(time.Duration(k)*time.Second - 1500*time.Millisecond) }
	ms := func(ks ...int) []int64 {
		var out []int64
		for _, k := range ks {
			out = append(out, s(k).UnixMilli())
		}
		return out
	}

	for _, tc := range []struct {
		name    string
		learned int // the scrapes before this member learned of the cut-over
		want    []int64
	}{
		{"learned late", 5, ms(2, 3, 4, 5)},
		{"learned in time", 2, ms(2, 3, 4, 5)},
		{"learned past what is kept", 6, ms(3, 4, 5, 6)}, // the scrape of s(2) was the fourth-last: lost
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMemberShares()
			sink := new(consumertest.MetricsSink)
			f, _ := testFence(t, m, sink)
			f.warmed = func(string, string, time.Time) {}
			m.set(ownShares(t, shareOf{"pods": {warming}}))
			scraped := stockTarget(t, "pods", warming, nil)
			last := max(5, tc.learned)
			for k := range last + 1 {
				if k == tc.learned {
					m.set(ownShares(t, shareOf{"pods": {arriving}}))
				}
				consume(t, f, scraped, scrapeAt("pods", "10.0.0.1:80", 2, s(k)))
			}
			assert.Equal(t, tc.want, times(sink))
			for _, md := range sink.AllMetrics() {
				assert.Equal(t, 3, md.DataPointCount(), "a scrape passed in part")
			}
			f.late.mu.Lock()
			assert.Empty(t, f.late.kept, "kept after the target arrived")
			assert.Zero(t, f.late.points)
			f.late.mu.Unlock()
		})
	}

	// A move called off: what was kept of the target goes.
	m := newMemberShares()
	sink := new(consumertest.MetricsSink)
	f, _ := testFence(t, m, sink)
	f.warmed = func(string, string, time.Time) {}
	m.set(ownShares(t, shareOf{"pods": {warming}}))
	consume(t, f, stockTarget(t, "pods", warming, nil), scrapeAt("pods", "10.0.0.1:80", 2, s(0)))
	f.late.mu.Lock()
	assert.Len(t, f.late.kept, 1)
	f.late.mu.Unlock()
	m.set(ownShares(t, shareOf{"pods": {}}))
	consume(t, f, stockTarget(t, "pods", warming, nil), scrapeAt("pods", "10.0.0.1:80", 2, s(1)))
	f.late.mu.Lock()
	assert.Empty(t, f.late.kept)
	assert.Zero(t, f.late.points)
	f.late.mu.Unlock()
	assert.Zero(t, sink.DataPointCount())
}

// A warming target that came back to this member soon after it left may
// still be scraped by the stock receiver's loop from before, which stops
// when the stock receiver acts on the poll that read it gone, up to
// stockDelays after it came back: its scrapes until then (and warmSlack
// more) are not reported, by the time each began (the leader would put the
// cut-over among the scrapes this member then never takes). One that left
// longer ago, or never was here, is reported at its first scrape. The
// fence follows the share at each change, data or not.
func TestFenceReturnedTargetWaitsForItsLoop(t *testing.T) {
	plain := map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "a"}
	warming := map[string]string{"__address__": "10.0.0.1:80", "__meta_pod": "a", shares.WarmingLabel: "00000000000000aa"}
	other := map[string]string{"__address__": "10.0.0.2:80"}
	const refresh = 5 * time.Second
	settle := stockDelays + warmSlack
	for _, tc := range []struct {
		name   string
		away   time.Duration // how long it was not in what this member scrapes
		want   []time.Duration
		reason string
	}{
		{"back soon", 3 * time.Second, []time.Duration{settle, settle + time.Second},
			"its scrapes before settle after it came back are reported"},
		{"back late", refresh + settle, []time.Duration{0, time.Second, 2 * time.Second},
			"its old loop has stopped: its first scrape is reported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			now := time.Unix(1_700_000_000, 0)
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
			m := newMemberShares()
			sink := new(consumertest.MetricsSink)
			f, _ := testFence(t, m, sink)
			f.now = clock
			var reported []time.Time
			f.warmed = func(_, _ string, scraped time.Time) { reported = append(reported, scraped) }
			ctx, cancel := context.WithCancel(context.Background())
			following := make(chan struct{})
			go func() {
				defer close(following)
				f.follow(ctx)
			}()
			t.Cleanup(func() { cancel(); <-following })
			// set replaces the share; follow sees it without data coming.
			set := func(s shareOf) {
				own := ownShares(t, s)
				m.set(own)
				require.Eventually(t, func() bool {
					idx := f.index.Load()
					return idx != nil && idx.jobs["pods"].etag == own["pods"].ETag
				}, 5*time.Second, time.Millisecond)
			}
			set(shareOf{"pods": {plain}})
			advance(time.Second)
			set(shareOf{"pods": {other}}) // it moved away
			advance(tc.away)
			set(shareOf{"pods": {other, warming}}) // and back
			back := clock()
			// The clock runs ahead of the scrapes: what counts is when
			// each scrape began.
			advance(time.Minute)
			scraped := stockTarget(t, "pods", warming, nil)
			for at := time.Duration(0); at <= settle+time.Second; at += time.Second { // a 1 s interval
				consume(t, f, scraped, scrapeAt("pods", "10.0.0.1:80", 2, back.Add(at)))
			}
			var got []time.Duration
			for _, r := range reported {
				got = append(got, r.Sub(back))
			}
			// The extension sends one report of several; here every
			// call counts.
			assert.Equal(t, tc.want, got[:min(len(got), len(tc.want))], tc.reason)
			assert.Zero(t, sink.DataPointCount(), "a warming target's data passed")
		})
	}
}
