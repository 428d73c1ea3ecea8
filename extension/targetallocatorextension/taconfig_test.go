package targetallocatorextension

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"go.yaml.in/yaml/v3"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension/internal/metadata"
	"github.com/embedded-ta/embedded-ta/internal/kube"
	"github.com/embedded-ta/embedded-ta/internal/promcr"
)

// operatorConfigs holds the TA config files that the OpenTelemetry
// Operator writes, one per case of its TA manifest builder, as they are.
var operatorConfigs = filepath.Join("..", "..", "..", "shared", "ta-operator-configs")

// pasteUnderTargetAllocator loads a TA config file the way a user migrates
// it: its text pasted, unchanged, under extensions::target_allocator of a
// collector configuration.
func pasteUnderTargetAllocator(t *testing.T, file string) *Config {
	t.Helper()
	body, err := os.ReadFile(file)
	require.NoError(t, err)
	var doc strings.Builder
	doc.WriteString("extensions:\n  target_allocator:\n")
	for line := range strings.Lines(string(body)) {
		doc.WriteString("    " + line)
	}
	var raw map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(doc.String()), &raw))
	sub, err := confmap.NewFromStringMap(raw).Sub("extensions::" + metadata.Type.String())
	require.NoError(t, err)
	cfg := createDefaultConfig().(*Config)
	require.NoError(t, sub.Unmarshal(cfg), "the file loads as it is")
	return cfg
}

// Every TA config file the OpenTelemetry Operator writes loads unchanged
// under target_allocator and validates; each key becomes the setting with
// its meaning, and the keys that do not apply are each reported once.
func TestOperatorConfigsPasteUnchanged(t *testing.T) {
	operatorSelector := map[string]any{
		"matchlabels": map[string]any{
			"app.kubernetes.io/component":  "opentelemetry-collector",
			"app.kubernetes.io/instance":   "default.my-instance",
			"app.kubernetes.io/managed-by": "opentelemetry-operator",
			"app.kubernetes.io/part-of":    "opentelemetry",
		},
		"matchexpressions": []any{},
	}
	otelCollectorJob := map[string]any{"job_name": "otel-collector", "scrape_interval": "10s",
		"static_configs": []any{map[string]any{"targets": []any{"0.0.0.0:8888", "0.0.0.0:9999"}}}}
	release := &promcr.LabelSelector{MatchLabels: map[string]string{"release": "my-instance"}, MatchExpressions: []promcr.LabelSelectorRequirement{}}
	mtls := HTTPSConfig{Enabled: true, ListenAddr: ":8443", CAFilePath: "/tls/ca.crt", TLSCertFilePath: "/tls/tls.crt", TLSKeyFilePath: "/tls/tls.key"}
	selectorNotice := "collector_selector: not needed: the members of group otcta-collector are the collectors that run this extension with it"

	tests := map[string]struct {
		// edit turns the expected configuration of the operator's default
		// file into this file's.
		edit func(*Config)
		// jobs are the config's jobs and their scrape protocols.
		jobs map[string][]string
		// notices are the beginnings of the reports, "<key>: <reason>".
		notices []string
	}{
		"default.yaml": {notices: []string{selectorNotice}},
		"allocation-fallback-strategy.yaml": {
			edit: func(c *Config) {
				c.AllocationFallbackStrategy = "consistent-hashing"
				c.HTTPS = mtls
			},
			notices: []string{selectorNotice},
		},
		"with-https-configuration.yaml": {
			edit:    func(c *Config) { c.HTTPS = mtls },
			notices: []string{selectorNotice},
		},
		"with-collector-not-ready-grace-period.yaml": {
			edit: func(c *Config) {
				c.AllocationFallbackStrategy = "consistent-hashing"
				c.CollectorNotReadyGracePeriod = 30 * time.Second
			},
			notices: []string{selectorNotice, "collector_not_ready_grace_period: not applied: a member keeps its targets while its member Lease is current; they move lease::duration (15s)"},
		},
		"with-collector-not-ready-grace-period-2.yaml": {
			edit: func(c *Config) {
				c.AllocationFallbackStrategy = "consistent-hashing"
				c.AllowInsecureAuthSecrets = true
			},
			notices: []string{selectorNotice},
		},
		"with-denyfsaccessthroughsms.yaml": {
			edit: func(c *Config) {
				c.AllocationFallbackStrategy = "consistent-hashing"
				c.PrometheusCR.Enabled = true
				c.PrometheusCR.DenyFSAccessThroughSMs = true
			},
			notices: []string{selectorNotice},
		},
		"with-label-selectors.yaml": {
			edit: func(c *Config) {
				c.Config["global"] = map[string]any{"scrape_interval": "30s",
					"scrape_protocols": []any{"PrometheusProto", "OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText0.0.4"}}
				c.PrometheusCR.Enabled = true
				c.PrometheusCR.PodMonitorSelector = release
				c.PrometheusCR.ProbeSelector = release
				c.PrometheusCR.ScrapeConfigSelector = release
				c.PrometheusCR.ServiceMonitorSelector = release
			},
			jobs:    map[string][]string{"otel-collector": {"PrometheusProto", "OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText0.0.4"}},
			notices: []string{selectorNotice},
		},
		"with-namespace-label-selectors.yaml": {
			edit: func(c *Config) {
				c.Config["global"] = map[string]any{"scrape_interval": "30s",
					"scrape_protocols": []any{"PrometheusProto", "OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText0.0.4"}}
				c.PrometheusCR.Enabled = true
				c.PrometheusCR.PodMonitorNamespaceSelector = release
				c.PrometheusCR.ProbeNamespaceSelector = release
				c.PrometheusCR.ScrapeConfigNamespaceSelector = release
				c.PrometheusCR.ServiceMonitorNamespaceSelector = release
			},
			jobs:    map[string][]string{"otel-collector": {"PrometheusProto", "OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText0.0.4"}},
			notices: []string{selectorNotice},
		},
		"with-scrape-and-evaluation-intervals-and-protocols-set.yaml": {
			edit: func(c *Config) {
				c.PrometheusCR.Enabled = true
				c.PrometheusCR.EvaluationInterval = 30 * time.Second
				c.PrometheusCR.ScrapeInterval = 30 * time.Second
				c.PrometheusCR.ScrapeProtocols = []string{"PrometheusText1.0.0"}
			},
			notices: []string{selectorNotice, "prometheus_cr::evaluation_interval: no effect: the jobs have no rules to evaluate"},
		},
		"with-scrape-classes-set.yaml": {
			edit: func(c *Config) {
				c.PrometheusCR.Enabled = true
				c.PrometheusCR.ScrapeClasses = []map[string]any{{"default": true, "name": "my-scrape-class",
					"relabelings": []any{map[string]any{"action": "labeldrop", "regex": "pod"}}}}
			},
			notices: []string{selectorNotice},
		},
		"without-collector.yaml": {
			edit: func(c *Config) {
				c.CollectorSelector = nil
				c.Config = nil
			},
			jobs: map[string][]string{},
		},
		"without-scrape-configs.yaml": {
			edit:    func(c *Config) { c.Config = nil },
			jobs:    map[string][]string{},
			notices: []string{selectorNotice},
		},
	}

	files, err := filepath.Glob(filepath.Join(operatorConfigs, "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no operator configs in %s", operatorConfigs)
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			tt, ok := tests[name]
			require.True(t, ok, "%s has no expectations: add them", name)
			cfg := pasteUnderTargetAllocator(t, file)
			require.NoError(t, cfg.Validate())

			want := createDefaultConfig().(*Config)
			want.AllocationStrategy = "consistent-hashing"
			want.FilterStrategy = new("relabel-config")
			want.CollectorSelector = operatorSelector
			want.Config = map[string]any{"scrape_configs": []any{otelCollectorJob}}
			if tt.edit != nil {
				tt.edit(want)
			}
			assert.Equal(t, want, cfg)

			s, err := cfg.resolve(pod("otcta-collector-0"))
			require.NoError(t, err)
			jobs := map[string][]string{}
			for _, sc := range s.prometheus.ScrapeConfigs {
				for _, p := range sc.ScrapeProtocols {
					jobs[sc.JobName] = append(jobs[sc.JobName], string(p))
				}
			}
			wantJobs := tt.jobs
			if wantJobs == nil {
				wantJobs = map[string][]string{"otel-collector": {"OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0", "PrometheusText0.0.4"}}
			}
			assert.Equal(t, wantJobs, jobs)

			var got []string
			for _, n := range cfg.notices(s) {
				got = append(got, n.key+": "+n.reason)
			}
			require.Len(t, got, len(tt.notices), "%q", got)
			for i, prefix := range tt.notices {
				assert.True(t, strings.HasPrefix(got[i], prefix), "notice %q, want it to begin with %q", got[i], prefix)
			}
		})
	}
}

// listen_addr, the TA's name for where the API listens, is the endpoint;
// with endpoint too, they must agree.
func TestListenAddr(t *testing.T) {
	cfg, err := loadConfig(t, "listen_addr")
	require.NoError(t, err)
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, ":9080", cfg.NetAddr.Endpoint)
	s, err := cfg.resolve(pod("a-0"))
	require.NoError(t, err)
	assert.Equal(t, "10.1.2.3:9080", s.advertise, "the advertised port is listen_addr's")

	same := createDefaultConfig().(*Config)
	require.NoError(t, confmap.NewFromStringMap(map[string]any{"listen_addr": "0.0.0.0:8080", "endpoint": "0.0.0.0:8080"}).Unmarshal(same))
	assert.Equal(t, "0.0.0.0:8080", same.NetAddr.Endpoint)
}

// kube_config_file_path is the kubeconfig the kube client reads when the
// file exists; otherwise auth_type applies, and that is reported.
func TestKubeConfigFilePath(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.KubeConfigFilePath = "/home/ta/.kube/config"
	cfg.Context = "kind-dev"
	env := pod("otcta-collector-0")
	var asked []kube.Auth
	env.namespace = func(a kube.Auth) (string, error) {
		asked = append(asked, a)
		return "ns", nil
	}

	env.exists = func(p string) bool { return p == "/home/ta/.kube/config" }
	s, err := cfg.resolve(env)
	require.NoError(t, err)
	file := kube.Auth{Type: kube.AuthKubeConfig, Context: "kind-dev", File: "/home/ta/.kube/config"}
	assert.Equal(t, file, s.auth)
	assert.Equal(t, []kube.Auth{file}, asked, "the namespace comes from that kubeconfig too")
	assert.Empty(t, cfg.notices(s))
	assert.Equal(t, "kube_config_file_path /home/ta/.kube/config", s.authSetting())

	env.exists = func(string) bool { return false }
	s, err = cfg.resolve(env)
	require.NoError(t, err)
	assert.Equal(t, kube.Auth{Type: kube.AuthServiceAccount, Context: "kind-dev"}, s.auth)
	assert.Equal(t, []notice{{key: "kube_config_file_path",
		reason: "/home/ta/.kube/config does not exist: the kube client uses auth_type serviceAccount, as the TA then uses its in-cluster configuration"}}, cfg.notices(s))
}

// The Prometheus sections of config that make no jobs, and a
// collector_namespace that is not the group's, are reported; the one that
// is the group's is reported as not needed.
func TestNoticesOfConfigSectionsAndCollectorNamespace(t *testing.T) {
	cfg := createDefaultConfig().(*Config)
	cfg.Config = map[string]any{"rule_files": []any{"/etc/rules.yaml"}, "alerting": map[string]any{}, "scrape_configs": []any{}}
	cfg.CollectorNamespace = "observability"
	cfg.Telemetry = map[string]any{"metrics": map[string]any{"readers": []any{}}}
	require.NoError(t, cfg.Validate())
	s, err := cfg.resolve(pod("otcta-collector-0"))
	require.NoError(t, err)
	assert.Equal(t, []notice{
		{key: "collector_namespace", warn: true, reason: "not applied: the members of group otcta-collector are in namespace otctargetallocator, with their Leases, not in observability (namespace sets where the Leases are)"},
		{key: "config::alerting", reason: "ignored: it makes no jobs, as in the TA"},
		{key: "config::rule_files", reason: "ignored: it makes no jobs, as in the TA"},
		{key: "telemetry", warn: true, reason: "not applied: the extension's metrics are part of the collector's own telemetry (service::telemetry)"},
	}, cfg.notices(s))

	cfg.Config, cfg.Telemetry = nil, nil
	cfg.CollectorNamespace = "otctargetallocator"
	assert.Equal(t, []notice{{key: "collector_namespace", reason: "not needed: the members of group otcta-collector are in namespace otctargetallocator, with their Leases"}}, cfg.notices(s))
}

// Start logs each TA key that does not apply once, as one structured line
// naming the key and why, even when it then cannot reach the API server.
func TestStartReportsKeysThatDoNotApply(t *testing.T) {
	t.Setenv("POD_NAME", "otcta-collector-0")
	t.Setenv("POD_NAMESPACE", "ns")
	t.Setenv("POD_IP", "10.1.2.3")
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // no in-cluster configuration: Start fails after the report
	cfg := pasteUnderTargetAllocator(t, filepath.Join(operatorConfigs, "allocation-fallback-strategy.yaml"))
	require.NoError(t, cfg.Validate())

	core, logs := observer.New(zapcore.InfoLevel)
	set := extensiontest.NewNopSettings(metadata.Type)
	set.Logger = zap.New(core)
	ext, err := NewFactory().Create(context.Background(), set, cfg)
	require.NoError(t, err)
	require.Error(t, ext.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, ext.Shutdown(context.Background()))

	lines := logs.FilterMessage("Target Allocator setting does not apply").All()
	var keys []string
	for _, l := range lines {
		keys = append(keys, l.ContextMap()["key"].(string))
		assert.NotEmpty(t, l.ContextMap()["reason"])
	}
	slices.Sort(keys)
	assert.Equal(t, []string{"collector_selector"}, keys, "https and allow_insecure_auth_secrets apply")
}
