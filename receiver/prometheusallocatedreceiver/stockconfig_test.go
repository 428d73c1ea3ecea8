package prometheusallocatedreceiver

import (
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver/internal/metadata"
)

// The stock receiver asks the member's endpoint; with tls, the member's
// https listener when it has one (the TA's https section), which shows the
// secret values.
func TestStockConfigEndpoint(t *testing.T) {
	withTLS := configtls.ClientConfig{Config: configtls.Config{CAFile: "/tls/ca.crt", CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key"}}
	tests := []struct {
		name  string
		tls   configtls.ClientConfig
		https string
		want  string
	}{
		{"plain", configtls.ClientConfig{}, "", "http://10.0.0.1:8080"},
		{"plain, a member with https", configtls.ClientConfig{}, "10.0.0.1:8443", "http://10.0.0.1:8080"},
		{"tls on the endpoint", withTLS, "", "https://10.0.0.1:8080"},
		{"tls, a member with https", withTLS, "10.0.0.1:8443", "https://10.0.0.1:8443"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			cfg.TLS = tt.tls
			r := newReceiver(cfg, receivertest.NewNopSettings(metadata.Type), nil)
			got, err := r.stockConfig(targetallocatorextension.View{Identity: "c-0", Endpoint: "10.0.0.1:8080", HTTPSEndpoint: tt.https})
			require.NoError(t, err)
			ta := got.(*prometheusreceiver.Config).TargetAllocator.Get()
			require.NotNil(t, ta)
			assert.Equal(t, tt.want, ta.ClientConfig.Endpoint)
		})
	}
}
