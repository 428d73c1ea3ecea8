package targetallocatorextension

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/metric/metricdata/metricdatatest"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension/internal/metadata"
	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension/internal/metadatatest"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
)

// closedAddress is host:port where nothing listens.
func closedAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// A term's service discovery shows in the collector's telemetry while the
// term lasts: each job's discovered targets, the configurations that could
// not start, and the failed refreshes; nothing once the term ends.
func TestSDMetricsReportTheTerm(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "targets.yaml"),
		[]byte("- targets: ['127.0.0.1:9101', '127.0.0.1:9102']\n"), 0o600))
	var raw map[string]any
	require.NoError(t, yaml.Unmarshal(fmt.Appendf(nil, `
scrape_configs:
  - job_name: static
    static_configs: [{targets: ["127.0.0.1:9100"]}]
  - job_name: files
    file_sd_configs: [{files: [%q]}]
  - job_name: unreachable
    http_sd_configs: [{url: "http://%s/targets", refresh_interval: 1h}]
  - job_name: broken
    kubernetes_sd_configs: [{role: pod, kubeconfig_file: %q}]
`, filepath.Join(dir, "*.yaml"), closedAddress(t), filepath.Join(dir, "nonexistent")), &raw))
	prom, err := discovery.LoadConfig(raw)
	require.NoError(t, err)

	tt := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tt.Shutdown(context.Background())) })
	tb, err := metadata.NewTelemetryBuilder(tt.NewTelemetrySettings())
	require.NoError(t, err)
	t.Cleanup(tb.Shutdown)
	sd, err := newSDMetrics(tb)
	require.NoError(t, err)

	d, err := discovery.New(prom, discovery.FilterRelabelConfig, zap.NewNop(), sd.term())
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	// The discovery manager counts a job's targets before it sends them.
	for s := range d.Snapshots() {
		if len(s.Jobs["static"]) == 1 && len(s.Jobs["files"]) == 2 {
			break
		}
	}

	job := func(name string) attribute.Set { return attribute.NewSet(attribute.String("job_name", name)) }
	metadatatest.AssertEqualTargetallocatorDiscoveredTargets(t, tt, []metricdata.DataPoint[int64]{
		{Attributes: job("static"), Value: 1},
		{Attributes: job("files"), Value: 2},
		{Attributes: job("unreachable"), Value: 0},
		{Attributes: job("broken"), Value: 0},
	}, metricdatatest.IgnoreTimestamp())
	metadatatest.AssertEqualTargetallocatorDiscoveryFailedConfigs(t, tt, []metricdata.DataPoint[int64]{{Value: 1}},
		metricdatatest.IgnoreTimestamp())
	// The HTTP SD's first refresh, at its start, fails.
	require.Eventually(t, func() bool {
		_, err := tt.GetMetric("otelcol_targetallocator_discovery_refresh_failures")
		return err == nil
	}, 30*time.Second, 10*time.Millisecond)
	metadatatest.AssertEqualTargetallocatorDiscoveryRefreshFailures(t, tt, []metricdata.DataPoint[int64]{{
		Attributes: attribute.NewSet(attribute.String("job_name", "unreachable"), attribute.String("mechanism", "http")),
		Value:      1,
	}}, metricdatatest.IgnoreTimestamp())

	sd.end()
	_, err = tt.GetMetric("otelcol_targetallocator_discovered_targets")
	require.Error(t, err, "a member that does not lead reports no discovery")
}
