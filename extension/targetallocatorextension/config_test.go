package targetallocatorextension

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension/internal/metadata"
	"github.com/embedded-ta/embedded-ta/internal/kube"
	"github.com/embedded-ta/embedded-ta/internal/promcr"
)

func loadConfig(t *testing.T, name string) (*Config, error) {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	sub, err := cm.Sub(component.MustNewIDWithName(metadata.Type.String(), name).String())
	require.NoError(t, err)
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	if err := sub.Unmarshal(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

func TestLoadConfig(t *testing.T) {
	cfg, err := loadConfig(t, "custom")
	require.NoError(t, err)
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, "otcta-collector-1", cfg.Identity)
	assert.Equal(t, "otcta-collector", cfg.Group)
	assert.Equal(t, "observability", cfg.Namespace)
	assert.Equal(t, kube.AuthKubeConfig, cfg.AuthType)
	assert.Equal(t, "kind-dev", cfg.Context)
	assert.Equal(t, "127.0.0.1:9080", cfg.NetAddr.Endpoint)
	assert.Equal(t, "otcta-collector-1.otcta-collector:9080", cfg.Advertise)
	assert.Equal(t, "node-a", cfg.NodeName)
	assert.Equal(t, 5000, cfg.MaxTargetsPerCollector)
	assert.Equal(t, int64(2_000_000), cfg.MaxSeriesPerCollector)
	assert.Equal(t, LeaseConfig{Duration: 20 * time.Second, RenewDeadline: 12 * time.Second, RetryPeriod: 3 * time.Second}, cfg.Lease)
}

// A Target Allocator config file pasted under target_allocator works.
func TestTargetAllocatorConfigCarriesOver(t *testing.T) {
	cfg, err := loadConfig(t, "from_ta")
	require.NoError(t, err)
	require.NoError(t, confmap.Validate(cfg))
	s, err := cfg.resolve(pod("otcta-collector-0"))
	require.NoError(t, err)
	assert.Equal(t, "per-node", cfg.AllocationStrategy)
	assert.Equal(t, "consistent-hashing", cfg.AllocationFallbackStrategy)
	assert.Equal(t, "relabel-config", string(cfg.filterStrategy()))
	require.Len(t, s.prometheus.ScrapeConfigs, 2)
	assert.Equal(t, "otc0", s.prometheus.ScrapeConfigs[0].JobName)
	assert.Equal(t, "10s", s.prometheus.ScrapeConfigs[0].ScrapeInterval.String(), "global scrape_interval applies")
	assert.Equal(t, "30s", s.prometheus.ScrapeConfigs[1].ScrapeInterval.String())
}

// prometheus_cr carries over from a Target Allocator config file.
func TestPrometheusCRConfig(t *testing.T) {
	cfg, err := loadConfig(t, "prometheus_cr")
	require.NoError(t, err)
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, promcr.Config{
		Enabled:                         true,
		ScrapeInterval:                  15 * time.Second,
		DenyNamespaces:                  []string{"kube-system"},
		ServiceMonitorSelector:          &promcr.LabelSelector{MatchLabels: map[string]string{"team": "web"}},
		ServiceMonitorNamespaceSelector: &promcr.LabelSelector{MatchLabels: map[string]string{"monitored": "true"}},
		PodMonitorSelector: &promcr.LabelSelector{MatchExpressions: []promcr.LabelSelectorRequirement{
			{Key: "app", Operator: "In", Values: []string{"a", "b"}},
		}},
		ProbeSelector: &promcr.LabelSelector{},
	}, cfg.PrometheusCR)

	def := createDefaultConfig().(*Config)
	assert.Equal(t, promcr.Config{ScrapeInterval: 30 * time.Second}, def.PrometheusCR, "off, with the Target Allocator's interval")
}

// pod is the environment of a StatefulSet's pod: its downward API variables
// and service account.
func pod(name string) environment {
	return environment{
		podName:  name,
		hostname: name,
		podIP:    "10.1.2.3",
		nodeName: "worker-1",
		namespace: func(kube.Auth) (string, error) {
			return "otctargetallocator", nil
		},
		exists: func(string) bool { return false },
	}
}

func TestDefaultsFromPod(t *testing.T) {
	cfg, err := loadConfig(t, "derived")
	require.NoError(t, err)
	require.NoError(t, confmap.Validate(cfg))
	s, err := cfg.resolve(pod("otcta-collector-2"))
	require.NoError(t, err)
	assert.Empty(t, s.prometheus.ScrapeConfigs)
	s.prometheus = nil
	assert.Equal(t, settings{
		identity:  "otcta-collector-2",
		group:     "otcta-collector",
		namespace: "otctargetallocator",
		advertise: "10.1.2.3:8080",
		node:      "worker-1",
		auth:      kube.Auth{Type: kube.AuthServiceAccount},
	}, s)
	def := createDefaultConfig().(*Config)
	assert.Equal(t, LeaseConfig{Duration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}, def.Lease)
	assert.Equal(t, kube.AuthServiceAccount, def.AuthType)
	assert.Equal(t, "0.0.0.0:8080", def.NetAddr.Endpoint)
	assert.Equal(t, 5*time.Second, def.Client.Timeout)
	assert.Equal(t, 10*time.Second, def.ReadHeaderTimeout)
	assert.Equal(t, 30*time.Second, def.ReadTimeout)
	assert.Equal(t, 30*time.Second, def.WriteTimeout)
}

// Replicas that require mutual TLS and a token of each other validate.
func TestMutualTLSConfig(t *testing.T) {
	cfg, err := loadConfig(t, "mtls")
	require.NoError(t, err)
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, "/certs/tls.crt", cfg.Client.TLS.CertFile)
	assert.Equal(t, "/certs/ca.crt", cfg.TLS.Get().ClientCAFile)
	assert.Equal(t, 5*time.Second, cfg.Client.Timeout, "the default timeout stays")
}

// The TA's https section opens a second listener on :8443 unless it says
// where; Validate reads none of its files.
func TestHTTPSConfig(t *testing.T) {
	cfg, err := loadConfig(t, "https")
	require.NoError(t, err)
	require.NoError(t, confmap.Validate(cfg), "the files do not exist: Start reads them")
	assert.True(t, cfg.AllowInsecureAuthSecrets)
	assert.Equal(t, ":8443", cfg.HTTPS.listenAddr())
	server := cfg.httpsServer()
	assert.Equal(t, ":8443", server.NetAddr.Endpoint)
	tls := server.TLS.Get()
	require.NotNil(t, tls)
	assert.Equal(t, "/tls/ca.crt", tls.ClientCAFile, "mutual TLS: clients are verified")
	assert.Equal(t, "/tls/tls.crt", tls.CertFile)
	assert.Equal(t, cfg.ReadTimeout, server.ReadTimeout, "the endpoint's other settings")
	assert.False(t, cfg.TLS.HasValue(), "the endpoint stays as it is")
	client := cfg.httpsClient()
	assert.Equal(t, "/tls/ca.crt", client.TLS.CAFile, "a follower trusts and presents the https certificates")
	assert.Equal(t, "/tls/tls.key", client.TLS.KeyFile)
	assert.Equal(t, cfg.Client.Timeout, client.Timeout)

	s, err := cfg.resolve(pod("otcta-collector-0"))
	require.NoError(t, err)
	assert.Equal(t, "10.1.2.3:8443", s.httpsAdvertise, "the advertised host, the https port")
}

func TestInvalidConfig(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{"short_lease", "lease::renew_deadline: 10s must be less than lease::duration (10s)"},
		{"tight_retry", "lease::renew_deadline: 2s must be greater than 1.2 × lease::retry_period (2s)"},
		{"negative", "lease::retry_period: -1s must be greater than zero"},
		{"fractional", "lease::duration: 15.5s must be a whole number of seconds"},
		{"same_name", `group: "a" equals the identity`},
		{"bad_identity", `identity: "Collector_0" is not a valid Lease name`},
		{"bad_auth", `auth_type: unknown auth type "token"`},
		{"bad_advertise", `advertise: "nohostport" is not host:port`},
		{"unknown_key", "invalid keys: allocation_strategie"},
		{"listen_addr_and_endpoint", `listen_addr: ":9080" differs from endpoint "0.0.0.0:8080"`},
		{"bad_listen_addr", `listen_addr: "8080" is not [host]:port`},
		{"bad_https_listen_addr", `https::listen_addr: "localhost" is not [host]:port`},
		{"https_no_files", "https::ca_file_path: must be set when https::enabled is true"},
		{"https_no_files", "https::tls_cert_file_path: must be set when https::enabled is true"},
		{"https_no_files", "https::tls_key_file_path: must be set when https::enabled is true"},
		{"https_same_port", `https::listen_addr: ":8443" has the port of endpoint "0.0.0.0:8443"`},
		{"https_client_without_cert", "client::tls::cert_file: must be set: the https listener requires client certificates"},
		{"negative_grace_period", "collector_not_ready_grace_period: -1s must not be negative"},
		{"prometheus_cr_bad_protocol", "prometheus_cr::scrape_protocols: unknown scrape protocol PrometheusText0.0.5"},
		{"prometheus_cr_bad_scrape_class", "prometheus_cr::scrape_classes: failed to parse scrape classes: multiple default scrape classes defined"},
		{"bad_strategy", `allocation_strategy: unknown allocation strategy "round-robin"`},
		{"bad_fallback", `allocation_strategy: unknown allocation fallback strategy "per-node"`},
		{"negative_limit", "max_targets_per_collector: -1 must not be negative (0 sets no limit)"},
		{"negative_series_limit", "max_series_per_collector: -1 must not be negative (0 sets no limit)"},
		{"bad_filter", `filter_strategy: unknown value "keep-all"`},
		{"bad_regex", `config: scrape_configs: job "otc0": error parsing regexp`},
		{"duplicate_job", `"otc0"`},
		{"mtls_no_client_cert", "client::tls::cert_file: must be set: the API requires client certificates (tls::client_ca_file)"},
		{"auth_no_client_auth", "client::auth: must be set: the API requires authentication (auth)"},
		{"client_endpoint", "client::endpoint: must not be set"},
		{"slow_client", "client::timeout: 5s must be less than write_timeout (5s)"},
		{"prometheus_cr_bad_selector", `prometheus_cr::pod_monitor_selector: "Near" is not a valid label selector operator`},
		{"prometheus_cr_allow_and_deny", "prometheus_cr::deny_namespaces: cannot be used with allow_namespaces"},
		{"prometheus_cr_bad_namespace", `prometheus_cr::allow_namespaces: "Not_A_Namespace" is not a valid namespace`},
		{"prometheus_cr_unknown_key", "invalid keys: service_monitor_selectors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(t, tt.name)
			if err == nil {
				err = confmap.Validate(cfg)
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

// What a member's environment gives is checked at Start, and an error names
// the key it stands for.
func TestResolveErrors(t *testing.T) {
	outside := environment{
		hostname: "laptop",
		namespace: func(kube.Auth) (string, error) {
			return "", errors.New("no POD_NAMESPACE and no service account namespace file")
		},
		exists: func(string) bool { return false },
	}
	in := func(ns string) environment {
		env := pod("otcta-collector-0")
		env.namespace = func(kube.Auth) (string, error) { return ns, nil }
		return env
	}
	tests := []struct {
		name    string
		config  string
		env     environment
		wantErr string
	}{
		{"identity not a StatefulSet pod's", "no_ordinal", pod("x-0"), `group: not set, and identity "collector" has no "-<ordinal>" suffix`},
		{"host name without an ordinal", "derived", outside, `group: not set, and identity "laptop" has no "-<ordinal>" suffix`},
		{"pod name not a Lease name", "derived", pod("Collector_0"), `identity: "Collector_0" is not a valid Lease name`},
		{"no namespace", "derived", outside, "namespace: not set and not found: no POD_NAMESPACE"},
		{"namespace not a namespace", "derived", in("Not_A_Namespace"), `namespace: "Not_A_Namespace" is not a valid namespace`},
		{"no address", "derived", environment{podName: "a-0", namespace: in("ns").namespace}, `advertise: ":8080" is not host:port (set advertise or POD_IP)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(t, tt.config)
			require.NoError(t, err)
			require.NoError(t, confmap.Validate(cfg), "valid until resolved")
			_, err = cfg.resolve(tt.env)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}
