package allocatorapi

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// The Target Allocator's own metrics, by the names, types and labels the TA
// exposes on its /metrics, so that dashboards and alerts made for it work
// here. The collector's telemetry (otelcol_targetallocator_*) is another
// matter: these are the TA's, served on the allocator endpoint.
const (
	metricTargets               = "opentelemetry_allocator_targets"
	metricTargetsPerCollector   = "opentelemetry_allocator_targets_per_collector"
	metricCollectorsAllocatable = "opentelemetry_allocator_collectors_allocatable"
	metricCollectorsDiscovered  = "opentelemetry_allocator_collectors_discovered"
	metricTimeToAllocate        = "opentelemetry_allocator_time_to_allocate"
	metricTargetsRemaining      = "opentelemetry_allocator_targets_remaining"
	metricTargetsUnassigned     = "opentelemetry_allocator_targets_unassigned"
	// Not the TA's: each member's series load, named as its metrics are.
	metricSeriesPerCollector = "opentelemetry_allocator_series_per_collector"
	// The TA's counter opentelemetry_allocator_events, with the suffix its
	// OpenTelemetry SDK exporter gives a counter.
	metricEvents         = "opentelemetry_allocator_events_total"
	metricHTTPDuration   = "opentelemetry_allocator_http_duration_seconds"
	metricProcessTargets = "opentelemetry_allocator_process_targets_duration_seconds"
)

// SourcePrometheusCR is the TA's source of the events that change the
// jobs: its watch of Prometheus Operator resources.
const SourcePrometheusCR = "EventSourcePrometheusCR"

// MetricsSource is what the TA's metrics are made of: the member (its view
// and, while it leads, its allocation), the allocation strategy's name, and
// the current term's discovery metrics (nil while the member does not lead).
type MetricsSource struct {
	Source
	Strategy  string
	Discovery func() prometheus.Gatherer
}

// Metrics are the TA's metrics of one member, on a registry of their own.
//
// The allocation's metrics come from the leader only: a follower serves
// the durations of the requests it answered, and the allocation times and
// events of its own past terms. So a sum over every member's series counts
// each target, member and request once, as over the one TA.
type Metrics struct {
	strategy       string
	registry       *prometheus.Registry
	httpDuration   *prometheus.HistogramVec
	timeToAllocate *prometheus.HistogramVec
	events         *prometheus.CounterVec
}

// NewMetrics returns the TA's metrics of src.
func NewMetrics(src MetricsSource) *Metrics {
	m := &Metrics{
		strategy: src.Strategy,
		registry: prometheus.NewRegistry(),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: metricHTTPDuration, Help: "Duration of received HTTP requests.",
		}, []string{"path"}),
		timeToAllocate: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: metricTimeToAllocate, Help: "The time it takes to allocate",
		}, []string{"method", "strategy"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricEvents, Help: "Number of events in the channel.",
		}, []string{"source"}),
	}
	m.registry.MustRegister(m.httpDuration, m.timeToAllocate, m.events, &allocationCollector{src: src})
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Allocated records how long the leader took to make a from its change, as
// the TA's SetTargets and SetCollectors do.
func (m *Metrics) Allocated(a *shares.Allocation) {
	method := "SetTargets"
	if a.Cause == shares.CauseMembers {
		method = "SetCollectors"
	}
	m.timeToAllocate.WithLabelValues(method, m.strategy).Observe(time.Since(a.Changed).Seconds())
}

// Event counts an event of source that changed the jobs.
func (m *Metrics) Event(source string) { m.events.WithLabelValues(source).Inc() }

// Instrument times every request next serves, by its route as the TA names
// it (the job of /jobs/<job>/targets is :job_id, any path that is no route "").
func (m *Metrics) Instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		next.ServeHTTP(w, r)
		m.httpDuration.WithLabelValues(routeOf(r.URL.Path)).Observe(time.Since(start).Seconds())
	})
}

// routes are the paths a member serves, each its own label value.
var routes = map[string]bool{
	"/": true, "/targets": true, "/scrape_configs": true, "/jobs": true, "/metrics": true, "/livez": true,
	"/readyz": true, "/status": true, debugCollector: true, debugJob: true, debugJobs: true, debugTarget: true,
	debugTargets: true, debugScrapeConfigs: true, "/shares": true, ReportPath: true,
}

// routeOf names a path's route, with a bounded number of names.
func routeOf(path string) string {
	switch {
	case routes[path]:
		return path
	case strings.HasPrefix(path, "/jobs/") && strings.HasSuffix(path, "/targets"):
		return "/jobs/:job_id/targets"
	}
	return ""
}

// allocationCollector reads the metrics of the allocation and of discovery
// at each scrape, from what the member has then.
type allocationCollector struct{ src MetricsSource }

var (
	descTargets = prometheus.NewDesc(metricTargets,
		"Number of targets discovered.", []string{"job_name"}, nil)
	descTargetsPerCollector = prometheus.NewDesc(metricTargetsPerCollector,
		"The number of targets for each collector.", []string{"collector_name", "strategy"}, nil)
	descCollectorsAllocatable = prometheus.NewDesc(metricCollectorsAllocatable,
		"Number of collectors the allocator is able to allocate to.", []string{"strategy"}, nil)
	descCollectorsDiscovered = prometheus.NewDesc(metricCollectorsDiscovered,
		"Number of collectors discovered.", nil, nil)
	descTargetsRemaining = prometheus.NewDesc(metricTargetsRemaining,
		"Number of targets kept after filtering.", nil, nil)
	descSeriesPerCollector = prometheus.NewDesc(metricSeriesPerCollector,
		"The series per scrape of each collector's targets, as the members measure them.", []string{"collector_name", "strategy"}, nil)
	descTargetsUnassigned = prometheus.NewDesc(metricTargetsUnassigned,
		"Number of targets that could not be assigned due to missing node label.", nil, nil)
	descProcessTargets = prometheus.NewDesc(metricProcessTargets,
		"Duration of processing targets.", nil, nil)
)

func (c *allocationCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTargets, descTargetsPerCollector, descCollectorsAllocatable,
		descCollectorsDiscovered, descTargetsRemaining, descTargetsUnassigned, descProcessTargets, descSeriesPerCollector} {
		ch <- d
	}
}

func (c *allocationCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.src.Allocation()
	if a == nil {
		return // not the leader: nothing of an allocation to tell
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	// The members the leader sees: those with a current member Lease.
	gauge(descCollectorsDiscovered, len(c.src.View().Members))
	gauge(descCollectorsAllocatable, len(a.Members), c.src.Strategy)
	c.collectDiscovery(ch)
	if a.Pending {
		return // its targets are not all known yet
	}
	sum := a.Summary()
	for _, m := range sum.Members {
		gauge(descTargetsPerCollector, m.Targets, m.Identity, c.src.Strategy)
		if a.Series != nil { // the members have measured their targets
			gauge(descSeriesPerCollector, int(m.Series), m.Identity, c.src.Strategy)
		}
	}
	gauge(descTargetsRemaining, sum.Targets)
	gauge(descTargetsUnassigned, sum.Unassigned)
}

// collectDiscovery re-exposes the current term's discovery metrics under the
// TA's names: the targets found in each job, before the filter, and the
// time of each pass over them.
func (c *allocationCollector) collectDiscovery(ch chan<- prometheus.Metric) {
	if c.src.Discovery == nil {
		return
	}
	g := c.src.Discovery()
	if g == nil {
		return
	}
	// Gather returns what it could gather with its error; neither family
	// can fail to.
	families, _ := g.Gather()
	for _, f := range families {
		switch f.GetName() {
		case discovery.DiscoveredTargetsMetric:
			for _, m := range f.GetMetric() {
				job := ""
				for _, l := range m.GetLabel() {
					if l.GetName() == "job" {
						job = l.GetValue()
					}
				}
				ch <- prometheus.MustNewConstMetric(descTargets, prometheus.GaugeValue, m.GetGauge().GetValue(), job)
			}
		case discovery.ProcessTargetsDurationMetric:
			for _, m := range f.GetMetric() {
				h := m.GetHistogram()
				buckets := make(map[float64]uint64, len(h.GetBucket()))
				for _, b := range h.GetBucket() {
					buckets[b.GetUpperBound()] = b.GetCumulativeCount()
				}
				ch <- prometheus.MustNewConstHistogram(descProcessTargets, h.GetSampleCount(), h.GetSampleSum(), buckets)
			}
		}
	}
}
