package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension/internal/metadata"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
)

// sdMetrics reports, as the collector's telemetry, the Prometheus service
// discovery metrics of the leader's current term. Each term's discovery
// registers them on a registry of its own (term); the telemetry's callbacks
// read whichever is current, and report nothing while this member does not
// lead.
type sdMetrics struct {
	current atomic.Pointer[prometheus.Registry]
}

// newSDMetrics registers the callbacks of the discovery metrics on tb; its
// Shutdown unregisters them.
func newSDMetrics(tb *metadata.TelemetryBuilder) (*sdMetrics, error) {
	s := &sdMetrics{}
	err := errors.Join(
		tb.RegisterTargetallocatorDiscoveredTargetsCallback(func(_ context.Context, o metric.Int64Observer) error {
			s.observe(discovery.DiscoveredTargetsMetric, func(v int64, label func(string) string) {
				o.Observe(v, metric.WithAttributes(attribute.String("job_name", label("job"))))
			})
			return nil
		}),
		tb.RegisterTargetallocatorDiscoveryFailedConfigsCallback(func(_ context.Context, o metric.Int64Observer) error {
			s.observe("prometheus_sd_failed_configs", func(v int64, _ func(string) string) { o.Observe(v) })
			return nil
		}),
		tb.RegisterTargetallocatorDiscoveryRefreshFailuresCallback(func(_ context.Context, o metric.Int64Observer) error {
			s.observe("prometheus_sd_refresh_failures_total", func(v int64, label func(string) string) {
				o.Observe(v, metric.WithAttributes(
					attribute.String("job_name", label("config")), attribute.String("mechanism", label("mechanism"))))
			})
			return nil
		}),
	)
	return s, err
}

// term returns a new registry for the discovery of a term that starts, and
// makes it the one reported.
func (s *sdMetrics) term() *prometheus.Registry {
	r := prometheus.NewRegistry()
	s.current.Store(r)
	return r
}

// end stops reporting the term's metrics: this member no longer leads.
func (s *sdMetrics) end() { s.current.Store(nil) }

// gatherer returns the current term's registry, nil while this member does
// not lead.
func (s *sdMetrics) gatherer() prometheus.Gatherer {
	if r := s.current.Load(); r != nil {
		return r
	}
	return nil
}

// observe calls each with every value of the gauge or counter family name in
// the current term's registry, and a function that reads its labels.
func (s *sdMetrics) observe(name string, each func(v int64, label func(string) string)) {
	r := s.current.Load()
	if r == nil {
		return
	}
	// Gather returns what it could gather with its error; none of these
	// families can fail to.
	families, _ := r.Gather()
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			v := m.GetGauge().GetValue()
			if c := m.GetCounter(); c != nil {
				v = c.GetValue()
			}
			each(int64(v), func(name string) string {
				for _, l := range m.GetLabel() {
					if l.GetName() == name {
						return l.GetValue()
					}
				}
				return ""
			})
		}
	}
}
