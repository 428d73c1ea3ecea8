package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/extension"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension/internal/metadata"
	"github.com/embedded-ta/embedded-ta/internal/kube"
	"github.com/embedded-ta/embedded-ta/internal/promcr"
	"github.com/embedded-ta/embedded-ta/internal/report"
)

// DefaultEndpoint is where the allocator API listens unless configured.
const DefaultEndpoint = "0.0.0.0:8080"

// NewFactory returns the target_allocator extension factory.
func NewFactory() extension.Factory {
	return extension.NewFactory(metadata.Type, createDefaultConfig, create, metadata.ExtensionStability)
}

func createDefaultConfig() component.Config {
	server := confighttp.NewDefaultServerConfig()
	server.NetAddr.Endpoint = DefaultEndpoint
	// The API takes GET requests without a body, and a member's report:
	// bound every phase of a request, so a slow or stalled client cannot
	// hold a connection.
	server.ReadHeaderTimeout = 10 * time.Second
	server.ReadTimeout = 30 * time.Second
	server.MaxRequestBodySize = report.MaxBytes
	client := confighttp.NewDefaultClientConfig()
	client.Timeout = defaultRelayTimeout
	return &Config{
		ServerConfig: server,
		Client:       client,
		AuthType:     kube.AuthServiceAccount,
		// client-go's documented defaults for leader election.
		Lease:        LeaseConfig{Duration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second},
		PrometheusCR: promcr.Config{ScrapeInterval: promcr.DefaultScrapeInterval},
	}
}

func create(_ context.Context, set extension.Settings, cfg component.Config) (extension.Extension, error) {
	return newExtension(cfg.(*Config), set)
}
