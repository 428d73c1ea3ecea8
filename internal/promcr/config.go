// Package promcr turns Prometheus Operator resources (ServiceMonitor,
// PodMonitor, Probe, ScrapeConfig) into Prometheus scrape configs, with the
// Prometheus Operator's own selection, validation and config generation.
package promcr // import "github.com/embedded-ta/embedded-ta/internal/promcr"

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/collector/confmap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultScrapeInterval is the Target Allocator's default for the jobs of
// Prometheus Operator resources that set no interval.
const DefaultScrapeInterval = 30 * time.Second

// Config is the `prometheus_cr` section of a Target Allocator config, with
// its keys and meaning.
type Config struct {
	// Enabled turns the watch of Prometheus Operator resources on.
	Enabled bool `mapstructure:"enabled"`
	// ScrapeInterval is the default interval of the resources' jobs.
	ScrapeInterval time.Duration `mapstructure:"scrape_interval"`
	// AllowNamespaces, if set, are the only namespaces whose resources are
	// watched; DenyNamespaces are never watched (only without AllowNamespaces).
	AllowNamespaces []string `mapstructure:"allow_namespaces"`
	DenyNamespaces  []string `mapstructure:"deny_namespaces"`

	ServiceMonitorSelector          *LabelSelector `mapstructure:"service_monitor_selector"`
	ServiceMonitorNamespaceSelector *LabelSelector `mapstructure:"service_monitor_namespace_selector"`
	PodMonitorSelector              *LabelSelector `mapstructure:"pod_monitor_selector"`
	PodMonitorNamespaceSelector     *LabelSelector `mapstructure:"pod_monitor_namespace_selector"`
	ScrapeConfigSelector            *LabelSelector `mapstructure:"scrape_config_selector"`
	ScrapeConfigNamespaceSelector   *LabelSelector `mapstructure:"scrape_config_namespace_selector"`
	ProbeSelector                   *LabelSelector `mapstructure:"probe_selector"`
	ProbeNamespaceSelector          *LabelSelector `mapstructure:"probe_namespace_selector"`
}

// LabelSelector is a Kubernetes label selector. Keys match case-insensitively,
// so both `matchLabels` and the `matchlabels` of Target Allocator config
// files work.
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
// Allocator config files, written with yaml.v2, say matchlabels.
func (s *LabelSelector) Unmarshal(conf *confmap.Conf) error {
	raw := conf.ToStringMap()
	for key, value := range raw {
		for _, want := range []string{"matchLabels", "matchExpressions"} {
			if key != want && strings.EqualFold(key, want) {
				if _, both := raw[want]; both {
					return fmt.Errorf("%s and %s: set one of them", key, want)
				}
				delete(raw, key)
				raw[want] = value
			}
		}
	}
	type plain LabelSelector // without this method
	return confmap.NewFromStringMap(raw).Unmarshal((*plain)(s))
}

// kube returns the selector as Kubernetes has it; unset selects everything.
func (s *LabelSelector) kube() *metav1.LabelSelector {
	out := &metav1.LabelSelector{}
	if s == nil {
		return out
	}
	out.MatchLabels = s.MatchLabels
	for _, r := range s.MatchExpressions {
		out.MatchExpressions = append(out.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: r.Key, Operator: metav1.LabelSelectorOperator(r.Operator), Values: r.Values,
		})
	}
	return out
}

// Validate checks the section; errors name the key, prefixed with prometheus_cr::.
func (c *Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	if c.ScrapeInterval < 0 {
		errs = append(errs, fmt.Errorf("prometheus_cr::scrape_interval: %s must not be negative", c.ScrapeInterval))
	}
	if len(c.AllowNamespaces) > 0 && len(c.DenyNamespaces) > 0 {
		errs = append(errs, errors.New("prometheus_cr::deny_namespaces: cannot be used with allow_namespaces"))
	}
	for key, names := range map[string][]string{"allow_namespaces": c.AllowNamespaces, "deny_namespaces": c.DenyNamespaces} {
		for _, n := range names {
			if msgs := validation.IsDNS1123Label(n); len(msgs) > 0 {
				errs = append(errs, fmt.Errorf("prometheus_cr::%s: %q is not a valid namespace: %v", key, n, msgs))
			}
		}
	}
	for _, s := range c.selectors() {
		if _, err := metav1.LabelSelectorAsSelector(s.sel.kube()); err != nil {
			errs = append(errs, fmt.Errorf("prometheus_cr::%s: %w", s.key, err))
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

// interval is the configured scrape interval, or the default.
func (c *Config) interval() time.Duration {
	if c.ScrapeInterval == 0 {
		return DefaultScrapeInterval
	}
	return c.ScrapeInterval
}
