package allocatorapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
)

// scrape reads /metrics as Prometheus would, by family.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	require.NoError(t, err, rec.Body.String())
	return families
}

// series returns a family's values by their labels, written name=value,...
func series(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		var key []string
		for _, l := range m.GetLabel() {
			key = append(key, l.GetName()+"="+l.GetValue())
		}
		v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		out[strings.Join(key, ",")] = v
	}
	return out
}

// The leader's /metrics has every metric of the TA, by its name, type and
// labels, with the values of its allocation; a follower's has only what it
// did itself.
func TestMetricsHaveTheTAsNames(t *testing.T) {
	// testAllocation's 18 targets (c-0 has 1 and c-1 has 2 of each of the 6
	// jobs, c-2 none) and one no member may take.
	unassigned := sharestest.Target("plain", labels.FromStrings("__address__", "10.0.0.9:80"), "", 99)
	src := &source{identity: "c-0", allocation: testAllocation(t, unassigned), members: []string{"c-0", "c-1", "c-2", "c-3"}}
	term := prometheus.NewRegistry()
	discovered := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: discovery.DiscoveredTargetsMetric}, []string{"job"})
	discovered.WithLabelValues("plain").Set(5)
	discovered.WithLabelValues("with/slash").Set(3)
	processing := prometheus.NewHistogram(prometheus.HistogramOpts{Name: discovery.ProcessTargetsDurationMetric, Buckets: []float64{1, 5}})
	processing.Observe(0.2)
	processing.Observe(2)
	term.MustRegister(discovered, processing)
	var gatherer prometheus.Gatherer = term
	m := NewMetrics(MetricsSource{Source: src, Strategy: "per-node", Discovery: func() prometheus.Gatherer { return gatherer }})

	a := src.Allocation()
	a.Changed, a.Cause = time.Now().Add(-1500*time.Millisecond), shares.CauseMembers
	m.Allocated(a)
	m.Event(SourcePrometheusCR)
	m.Event(SourcePrometheusCR)
	h := m.Instrument(NewHandler(src, http.DefaultClient, "http", zap.NewNop()))
	for _, target := range []string{"/jobs/plain/targets?collector_id=c-1", "/jobs/with%2Fslash/targets?collector_id=c-1", "/scrape_configs", "/nope"} {
		get(t, h, target)
	}

	families := scrape(t, m)
	want := map[string]struct {
		kind   dto.MetricType
		series map[string]float64
	}{
		"opentelemetry_allocator_targets": {dto.MetricType_GAUGE,
			map[string]float64{"job_name=plain": 5, "job_name=with/slash": 3}},
		"opentelemetry_allocator_targets_per_collector": {dto.MetricType_GAUGE,
			map[string]float64{"collector_name=c-0,strategy=per-node": 6, "collector_name=c-1,strategy=per-node": 12, "collector_name=c-2,strategy=per-node": 0}},
		"opentelemetry_allocator_collectors_allocatable": {dto.MetricType_GAUGE, map[string]float64{"strategy=per-node": 3}},
		"opentelemetry_allocator_collectors_discovered":  {dto.MetricType_GAUGE, map[string]float64{"": 4}},
		"opentelemetry_allocator_targets_remaining":      {dto.MetricType_GAUGE, map[string]float64{"": 19}},
		"opentelemetry_allocator_targets_unassigned":     {dto.MetricType_GAUGE, map[string]float64{"": 1}},
		"opentelemetry_allocator_events_total":           {dto.MetricType_COUNTER, map[string]float64{"source=EventSourcePrometheusCR": 2}},
		"opentelemetry_allocator_time_to_allocate": {dto.MetricType_HISTOGRAM,
			map[string]float64{"method=SetCollectors,strategy=per-node": 1}},
		"opentelemetry_allocator_http_duration_seconds": {dto.MetricType_HISTOGRAM,
			map[string]float64{"path=/jobs/:job_id/targets": 2, "path=/scrape_configs": 1, "path=": 1}},
		"opentelemetry_allocator_process_targets_duration_seconds": {dto.MetricType_HISTOGRAM, map[string]float64{"": 2}},
	}
	for name, w := range want {
		f := families[name]
		if !assert.NotNil(t, f, name) {
			continue
		}
		assert.Equal(t, w.kind, f.GetType(), name)
		assert.Equal(t, w.series, series(f), name)
	}
	assert.Len(t, families, len(want), "nothing else")

	took := families["opentelemetry_allocator_time_to_allocate"].GetMetric()[0].GetHistogram().GetSampleSum()
	assert.InDelta(t, 1.5, took, 0.5, "from the change to the allocation")
	p := families["opentelemetry_allocator_process_targets_duration_seconds"].GetMetric()[0].GetHistogram()
	assert.InDelta(t, 2.2, p.GetSampleSum(), 1e-9)
	assert.Equal(t, []uint64{1, 2}, []uint64{p.GetBucket()[0].GetCumulativeCount(), p.GetBucket()[1].GetCumulativeCount()}, "the term's buckets")

	// A follower (no allocation, no term) keeps what it did itself.
	src.mu.Lock()
	src.allocation = nil
	src.mu.Unlock()
	gatherer = nil
	families = scrape(t, m)
	for name := range families {
		assert.Contains(t, []string{"opentelemetry_allocator_events_total", "opentelemetry_allocator_time_to_allocate",
			"opentelemetry_allocator_http_duration_seconds"}, name, "a follower has no allocation to tell")
	}
	assert.Contains(t, families, "opentelemetry_allocator_http_duration_seconds")
}

// A pending allocation (the resources' jobs to come) tells its members, not
// its targets.
func TestMetricsOfAPendingAllocation(t *testing.T) {
	a := testAllocation(t)
	a.Pending = true
	m := NewMetrics(MetricsSource{Source: &source{identity: "c-0", allocation: a}, Strategy: "consistent-hashing"})
	families := scrape(t, m)
	assert.Contains(t, families, "opentelemetry_allocator_collectors_allocatable")
	assert.NotContains(t, families, "opentelemetry_allocator_targets_remaining")
	assert.NotContains(t, families, "opentelemetry_allocator_targets_per_collector")
}

// Once the members have measured their targets, each one's series load is
// a gauge beside its target count.
func TestMetricsOfSeriesLoads(t *testing.T) {
	a := testAllocation(t)
	m := NewMetrics(MetricsSource{Source: &source{identity: "c-0", allocation: a}, Strategy: "series-weighted"})
	assert.NotContains(t, scrape(t, m), "opentelemetry_allocator_series_per_collector", "nothing measured yet")

	measured := testAllocation(t)
	measured.Series = map[string]int64{"c-0": 1200, "c-1": 35, "c-2": 0}
	m = NewMetrics(MetricsSource{Source: &source{identity: "c-0", allocation: measured}, Strategy: "series-weighted"})
	f := scrape(t, m)["opentelemetry_allocator_series_per_collector"]
	if assert.NotNil(t, f) {
		assert.Equal(t, dto.MetricType_GAUGE, f.GetType())
		assert.Equal(t, map[string]float64{"collector_name=c-0,strategy=series-weighted": 1200,
			"collector_name=c-1,strategy=series-weighted": 35, "collector_name=c-2,strategy=series-weighted": 0}, series(f))
	}
}
