// Package promcr turns Prometheus Operator resources (ServiceMonitor,
// PodMonitor, Probe, ScrapeConfig) into Prometheus scrape configs, with the
// Prometheus Operator's own selection, validation and config generation.
package promcr // import "github.com/embedded-ta/embedded-ta/internal/promcr"

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	promoperator "github.com/prometheus-operator/prometheus-operator/pkg/prometheus"
	"github.com/prometheus/prometheus/config"
	"go.opentelemetry.io/collector/confmap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultScrapeInterval is the Target Allocator's default for the jobs of
// Prometheus Operator resources that set no interval.
const DefaultScrapeInterval = 30 * time.Second

// DefaultScrapeProtocols are the Target Allocator's scrape protocols for the
// jobs of Prometheus Operator resources when scrape_protocols is not set.
var DefaultScrapeProtocols = []string{"OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0", "PrometheusText0.0.4"}

// Config is the `prometheus_cr` section of a Target Allocator config, with
// its keys and meaning.
type Config struct {
	// Enabled turns the watch of Prometheus Operator resources on.
	Enabled bool `mapstructure:"enabled"`
	// ScrapeInterval is the default interval of the resources' jobs.
	ScrapeInterval time.Duration `mapstructure:"scrape_interval"`
	// EvaluationInterval is the generated configuration's rule evaluation
	// interval: no job has rules, so it changes no job.
	EvaluationInterval time.Duration `mapstructure:"evaluation_interval"`
	// ScrapeProtocols are the protocols the jobs negotiate, in order of
	// preference; default DefaultScrapeProtocols.
	ScrapeProtocols []string `mapstructure:"scrape_protocols"`
	// ScrapeClasses are the Prometheus Operator's scrape classes, in its
	// own (camelCase) form: relabelings, TLS, authorization and metadata
	// that the resources naming a class (or the default one) inherit.
	ScrapeClasses []map[string]any `mapstructure:"scrape_classes"`
	// AllowNamespaces, if set, are the only namespaces whose resources are
	// watched; DenyNamespaces are never watched (only without AllowNamespaces).
	AllowNamespaces []string `mapstructure:"allow_namespaces"`
	DenyNamespaces  []string `mapstructure:"deny_namespaces"`
	// SecretNamespaces are the namespaces whose Secrets the jobs may use;
	// default the group's own namespace.
	SecretNamespaces []string `mapstructure:"secret_namespaces"`
	// DenyFSAccessThroughSMs drops the jobs that would read files of the
	// member's file system (bearer token, TLS CA, certificate or key files).
	DenyFSAccessThroughSMs bool `mapstructure:"deny_fs_access_through_sms"`

	// A resource selector that is not set selects no resource, {} every
	// one; a namespace selector that is not set selects every namespace.
	ServiceMonitorSelector          *LabelSelector `mapstructure:"service_monitor_selector"`
	ServiceMonitorNamespaceSelector *LabelSelector `mapstructure:"service_monitor_namespace_selector"`
	PodMonitorSelector              *LabelSelector `mapstructure:"pod_monitor_selector"`
	PodMonitorNamespaceSelector     *LabelSelector `mapstructure:"pod_monitor_namespace_selector"`
	ScrapeConfigSelector            *LabelSelector `mapstructure:"scrape_config_selector"`
	ScrapeConfigNamespaceSelector   *LabelSelector `mapstructure:"scrape_config_namespace_selector"`
	ProbeSelector                   *LabelSelector `mapstructure:"probe_selector"`
	ProbeNamespaceSelector          *LabelSelector `mapstructure:"probe_namespace_selector"`
}

// LabelSelector is a Kubernetes label selector. Its keys read in either
// case, so both `matchLabels` and the `matchlabels` of Target Allocator
// config files work.
type LabelSelector struct {
	MatchLabels      map[string]string          `mapstructure:"matchLabels"`
	MatchExpressions []LabelSelectorRequirement `mapstructure:"matchExpressions"`
}

// LabelSelectorRequirement is one expression of a LabelSelector.
type LabelSelectorRequirement struct {
	Key      string   `mapstructure:"key"`
	Operator string   `mapstructure:"operator"`
	Values   []string `mapstructure:"values"`
}

// Unmarshal reads matchLabels and matchExpressions in any case: Target
// Allocator config files, written with yaml.v2, say matchlabels. Where a
// selector has both spellings, the camelCase one counts, as in the Target
// Allocator.
func (s *LabelSelector) Unmarshal(conf *confmap.Conf) error {
	raw := conf.ToStringMap()
	for key, value := range raw {
		for _, want := range []string{"matchLabels", "matchExpressions"} {
			if key != want && strings.EqualFold(key, want) {
				delete(raw, key)
				if _, both := raw[want]; !both {
					raw[want] = value
				}
			}
		}
	}
	type plain LabelSelector // without this method
	return confmap.NewFromStringMap(raw).Unmarshal((*plain)(s))
}

// kube returns the selector as Kubernetes has it; nil stays nil, which
// selects nothing.
func (s *LabelSelector) kube() *metav1.LabelSelector {
	if s == nil {
		return nil
	}
	out := &metav1.LabelSelector{MatchLabels: s.MatchLabels}
	for _, r := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: r.Key, Operator: metav1.LabelSelectorOperator(r.Operator), Values: r.Values,
		})
	}
	return out
}

// namespaces returns a namespace selector as Kubernetes has it: unset
// selects every namespace, the Target Allocator's default. (To the
// Prometheus Operator, nil would mean the Prometheus object's namespace.)
func (s *LabelSelector) namespaces() *metav1.LabelSelector {
	if s == nil {
		return &metav1.LabelSelector{}
	}
	return s.kube()
}

// Validate checks the section's values; errors name the key, prefixed with
// prometheus_cr::. It reads nothing but the Config.
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	for key, d := range map[string]time.Duration{"scrape_interval": c.ScrapeInterval, "evaluation_interval": c.EvaluationInterval} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("prometheus_cr::%s: %s must not be negative", key, d))
		}
	}
	for _, p := range c.ScrapeProtocols {
		if err := config.ScrapeProtocol(p).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("prometheus_cr::scrape_protocols: %w", err))
		}
	}
	if len(c.AllowNamespaces) > 0 && len(c.DenyNamespaces) > 0 {
		errs = append(errs, errors.New("prometheus_cr::deny_namespaces: cannot be used with allow_namespaces"))
	}
	for _, l := range []struct {
		key   string
		names []string
	}{{"allow_namespaces", c.AllowNamespaces}, {"deny_namespaces", c.DenyNamespaces}, {"secret_namespaces", c.SecretNamespaces}} {
		for _, n := range l.names {
			if msgs := validation.IsDNS1123Label(n); len(msgs) > 0 {
				errs = append(errs, fmt.Errorf("prometheus_cr::%s: %q is not a valid namespace: %v", l.key, n, msgs))
			}
		}
	}
	for _, s := range c.selectors() {
		if _, err := metav1.LabelSelectorAsSelector(s.sel.kube()); err != nil {
			errs = append(errs, fmt.Errorf("prometheus_cr::%s: %w", s.key, err))
		}
	}
	if classes, err := c.scrapeClasses(); err != nil {
		errs = append(errs, err)
	} else if len(classes) > 0 {
		// The generator checks the classes (relabelings, one default)
		// without reading anything.
		p := c.prometheus("validate", "validate", classes)
		if _, err := promoperator.NewConfigGenerator(slog.New(slog.DiscardHandler), p); err != nil {
			errs = append(errs, fmt.Errorf("prometheus_cr::scrape_classes: %w", err))
		}
	}
	return errors.Join(errs...)
}

type namedSelector struct {
	key string
	sel *LabelSelector
}

func (c *Config) selectors() []namedSelector {
	return []namedSelector{
		{"service_monitor_selector", c.ServiceMonitorSelector},
		{"service_monitor_namespace_selector", c.ServiceMonitorNamespaceSelector},
		{"pod_monitor_selector", c.PodMonitorSelector},
		{"pod_monitor_namespace_selector", c.PodMonitorNamespaceSelector},
		{"scrape_config_selector", c.ScrapeConfigSelector},
		{"scrape_config_namespace_selector", c.ScrapeConfigNamespaceSelector},
		{"probe_selector", c.ProbeSelector},
		{"probe_namespace_selector", c.ProbeNamespaceSelector},
	}
}

// scrapeClasses reads scrape_classes as the Prometheus Operator's type, from
// its JSON form, as the Target Allocator does (fields it does not know are
// left out).
func (c *Config) scrapeClasses() ([]monitoringv1.ScrapeClass, error) {
	if len(c.ScrapeClasses) == 0 {
		return nil, nil
	}
	doc, err := json.Marshal(c.ScrapeClasses)
	if err != nil {
		return nil, fmt.Errorf("prometheus_cr::scrape_classes: %w", err)
	}
	var classes []monitoringv1.ScrapeClass
	if err := json.Unmarshal(doc, &classes); err != nil {
		return nil, fmt.Errorf("prometheus_cr::scrape_classes: %w", err)
	}
	for i, sc := range classes {
		if sc.Name == "" {
			return nil, fmt.Errorf("prometheus_cr::scrape_classes[%d]: name must be set", i)
		}
	}
	return classes, nil
}

// prometheus is the Prometheus object the operator's code selects and
// generates for: the group's, with this section's settings.
func (c *Config) prometheus(namespace, name string, classes []monitoringv1.ScrapeClass) *monitoringv1.Prometheus {
	protocols := make([]monitoringv1.ScrapeProtocol, 0, len(DefaultScrapeProtocols))
	for _, p := range c.scrapeProtocols() {
		protocols = append(protocols, monitoringv1.ScrapeProtocol(p))
	}
	return &monitoringv1.Prometheus{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: monitoringv1.PrometheusSpec{
			CommonPrometheusFields: monitoringv1.CommonPrometheusFields{
				ScrapeInterval:                  monitoringv1.Duration(c.interval().String()),
				ScrapeProtocols:                 protocols,
				ScrapeClasses:                   classes,
				ServiceMonitorSelector:          c.ServiceMonitorSelector.kube(),
				ServiceMonitorNamespaceSelector: c.ServiceMonitorNamespaceSelector.namespaces(),
				PodMonitorSelector:              c.PodMonitorSelector.kube(),
				PodMonitorNamespaceSelector:     c.PodMonitorNamespaceSelector.namespaces(),
				ScrapeConfigSelector:            c.ScrapeConfigSelector.kube(),
				ScrapeConfigNamespaceSelector:   c.ScrapeConfigNamespaceSelector.namespaces(),
				ProbeSelector:                   c.ProbeSelector.kube(),
				ProbeNamespaceSelector:          c.ProbeNamespaceSelector.namespaces(),
				ServiceDiscoveryRole:            new(monitoringv1.EndpointSliceRole),
			},
			EvaluationInterval: monitoringv1.Duration(c.evaluationInterval().String()),
		},
	}
}

// interval is the configured scrape interval, or the default.
func (c *Config) interval() time.Duration {
	if c.ScrapeInterval == 0 {
		return DefaultScrapeInterval
	}
	return c.ScrapeInterval
}

// evaluationInterval is the configured evaluation interval, or the default
// (the Target Allocator's, 30 s).
func (c *Config) evaluationInterval() time.Duration {
	if c.EvaluationInterval == 0 {
		return 30 * time.Second
	}
	return c.EvaluationInterval
}

// scrapeProtocols are the configured scrape protocols, or the default.
func (c *Config) scrapeProtocols() []string {
	if len(c.ScrapeProtocols) == 0 {
		return DefaultScrapeProtocols
	}
	return c.ScrapeProtocols
}
