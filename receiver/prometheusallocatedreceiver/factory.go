package prometheusallocatedreceiver // import "github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver"

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"

	"github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver/internal/metadata"
)

// NewFactory returns the prometheus_allocated receiver factory.
func NewFactory() receiver.Factory {
	return receiver.NewFactory(metadata.Type, createDefaultConfig,
		receiver.WithMetrics(createMetrics, metadata.MetricsStability))
}

func createDefaultConfig() component.Config {
	return &Config{
		Allocator:    component.MustNewID("target_allocator"),
		Interval:     30 * time.Second,
		Timeout:      5 * time.Second,
		HTTPSDConfig: HTTPSDConfig{RefreshInterval: 30 * time.Second},
	}
}

func createMetrics(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
	return newReceiver(cfg.(*Config), set, next), nil
}
