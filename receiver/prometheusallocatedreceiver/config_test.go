package prometheusallocatedreceiver

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

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
	assert.True(t, cfg.usesTLS())
	assert.Equal(t, "/etc/ta/ca.pem", cfg.TLS.CAFile)
}

func TestInvalidConfig(t *testing.T) {
	for name, want := range map[string]string{
		"zero_interval": "interval: 0s must be greater than zero",
		"fast_refresh":  "http_sd_config::refresh_interval: 100ms must be at least 1s",
		"unknown_key":   "invalid keys: collector_id",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := loadConfig(t, name)
			require.Error(t, err)
			assert.Contains(t, err.Error(), want)
		})
	}
}

func TestStartNamesAMissingAllocator(t *testing.T) {
	r, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), createDefaultConfig(), consumertest.NewNop())
	require.NoError(t, err)
	err = r.Start(context.Background(), componenttest.NewNopHost())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "allocator: extension target_allocator is not configured")
	require.NoError(t, r.Shutdown(context.Background()))
}
