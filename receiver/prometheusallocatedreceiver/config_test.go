package prometheusallocatedreceiver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.yaml.in/yaml/v3"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver/internal/metadata"
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
	return cfg, confmap.Validate(cfg)
}

func TestLoadConfig(t *testing.T) {
	def, err := loadConfig(t, "")
	require.NoError(t, err)
	assert.Equal(t, component.MustNewID("target_allocator"), def.Allocator)
	assert.Equal(t, 30*time.Second, def.Interval)
	assert.Equal(t, 5*time.Second, def.Timeout)
	assert.Equal(t, 30*time.Second, def.HTTPSDConfig.RefreshInterval)
	assert.False(t, def.usesTLS())

	cfg, err := loadConfig(t, "custom")
	require.NoError(t, err)
	assert.Equal(t, component.MustNewIDWithName("target_allocator", "main"), cfg.Allocator)
	assert.Equal(t, 10*time.Second, cfg.Interval)
	assert.Equal(t, 2*time.Second, cfg.Timeout)
	assert.Equal(t, 5*time.Second, cfg.HTTPSDConfig.RefreshInterval)
	assert.True(t, cfg.TrimMetricSuffixes)
	assert.True(t, cfg.ScrapeOnShutdown)
	assert.True(t, cfg.HotStandby)
	assert.True(t, cfg.usesTLS())
	assert.Equal(t, "/etc/ta/ca.pem", cfg.TLS.CAFile)
}

// Any tls setting but `insecure: true` reaches the allocator API over https.
func TestTLSSettingsSwitchToHTTPS(t *testing.T) {
	for tls, https := range map[string]bool{
		``:                       false,
		`tls: {}`:                false,
		`tls: {insecure: false}`: false,
		`tls: {insecure: true, ca_file: /ca.crt}`:   false,
		`tls: {ca_file: /ca.crt}`:                   true,
		`tls: {cert_file: /t.crt, key_file: /t.k}`:  true,
		`tls: {server_name_override: otcta}`:        true,
		`tls: {insecure_skip_verify: true}`:         true,
		`tls: {include_system_ca_certs_pool: true}`: true,
		`tls: {min_version: "1.3"}`:                 true,
	} {
		t.Run(tls, func(t *testing.T) {
			var raw map[string]any
			require.NoError(t, yaml.Unmarshal([]byte(tls), &raw))
			cfg := createDefaultConfig().(*Config)
			require.NoError(t, confmap.NewFromStringMap(raw).Unmarshal(cfg))
			assert.Equal(t, https, cfg.usesTLS())
		})
	}
}

func TestInvalidConfig(t *testing.T) {
	for name, want := range map[string]string{
		"zero_interval": "interval: 0s must be greater than zero",
		"fast_refresh":  "http_sd_config::refresh_interval: 100ms must be at least 1s",
		"unknown_key":   "invalid keys: collector_id",
		"missing_token": "bearer_token_file: open /nonexistent/token: no such file or directory",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadConfig(t, name)
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
		})
	}
}

// The token reaches both of the stock client's requests: its scrape-configs
// poll as a header, each targets poll from the file.
func TestBearerTokenReachesTheStockClient(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(token, []byte("abc\n"), 0o600))
	cfg := createDefaultConfig().(*Config)
	cfg.BearerTokenFile = token
	require.NoError(t, confmap.Validate(cfg))
	r := &allocatedReceiver{cfg: cfg}
	stock, err := r.stockConfig(targetallocatorextension.View{Identity: "c-0", Endpoint: "127.0.0.1:8080"})
	require.NoError(t, err)
	ta := stock.(*prometheusreceiver.Config).TargetAllocator.Get()
	header, ok := ta.ClientConfig.Headers.Get("Authorization")
	assert.True(t, ok)
	assert.Equal(t, configopaque.String("Bearer abc"), header)
	require.NotNil(t, ta.HTTPSDConfig.HTTPClientConfig.Authorization)
	assert.Equal(t, "Bearer", ta.HTTPSDConfig.HTTPClientConfig.Authorization.Type)
	assert.Equal(t, token, ta.HTTPSDConfig.HTTPClientConfig.Authorization.CredentialsFile)

	require.NoError(t, os.WriteFile(token, nil, 0o600))
	assert.ErrorContains(t, confmap.Validate(cfg), "bearer_token_file: "+token+" is empty")
}

func TestStartNamesAMissingAllocator(t *testing.T) {
	r, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), createDefaultConfig(), consumertest.NewNop())
	require.NoError(t, err)
	err = r.Start(context.Background(), componenttest.NewNopHost())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "allocator: extension target_allocator is not configured")
	require.NoError(t, r.Shutdown(context.Background()))
}
