package election

import (
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// The timing invariants are client-go's, checked at construction.
func TestNewValidatesTiming(t *testing.T) {
	client := fake.NewClientset().CoordinationV1()
	base := Config{Client: client, Namespace: "ns", Name: "group", Identity: "group-0",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"client-go defaults", func(*Config) {}, ""},
		{"no identity", func(c *Config) { c.Identity = "" }, "identity must be set"},
		{"no lease name", func(c *Config) { c.Name = "" }, "namespace and name must be set"},
		{"zero retry", func(c *Config) { c.RetryPeriod = 0 }, "retry_period must be greater than zero"},
		{"renew within jitter", func(c *Config) { c.RenewDeadline = 2400 * time.Millisecond }, "renew_deadline (2.4s) must be greater than 1.2 × retry_period (2s)"},
		{"duration not above renew", func(c *Config) { c.LeaseDuration = 10 * time.Second }, "duration (10s) must be greater than renew_deadline (10s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.change(&cfg)
			_, err := New(cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
