package prometheusallocatedreceiver // import "github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver"

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/configtls"
)

// Config is the prometheus_allocated receiver's configuration.
type Config struct {
	// Allocator is the ID of the target_allocator extension whose group this
	// replica scrapes for.
	Allocator component.ID `mapstructure:"allocator"`
	// Interval is how often the list of jobs is refreshed.
	Interval time.Duration `mapstructure:"interval"`
	// Timeout bounds each request to the allocator API, and how long
	// collector startup waits for the first answer.
	Timeout time.Duration `mapstructure:"timeout"`
	// HTTPSDConfig sets how often each job's targets are refreshed.
	HTTPSDConfig HTTPSDConfig `mapstructure:"http_sd_config"`
	// TLS is the client side of the allocator API's TLS, when its endpoint
	// serves TLS.
	TLS configtls.ClientConfig `mapstructure:"tls"`
	// BearerTokenFile holds the token the allocator API requires when its
	// auth is a bearer token (bearertokenauth): sent with every request,
	// read anew by each targets poll, at start for the scrape configs.
	BearerTokenFile string `mapstructure:"bearer_token_file"`

	// Scrape-side settings of the stock prometheus receiver.

	// TrimMetricSuffixes trims type and unit suffixes from metric names.
	TrimMetricSuffixes bool `mapstructure:"trim_metric_suffixes"`
	// ScrapeOnShutdown scrapes every target once more on shutdown.
	ScrapeOnShutdown bool `mapstructure:"scrape_on_shutdown"`

	// HotStandby also scrapes the targets this member would take if their
	// member died, and drops their data until they are its own: a crash
	// then costs them the lease only. The price: those targets are scraped
	// twice.
	HotStandby bool `mapstructure:"hot_standby"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// HTTPSDConfig is the refresh of each job's targets.
type HTTPSDConfig struct {
	RefreshInterval time.Duration `mapstructure:"refresh_interval"`
}

// Validate checks the configuration; every error names its key.
func (cfg *Config) Validate() error {
	var errs []error
	if cfg.Allocator.Type().String() == "" {
		errs = append(errs, errors.New("allocator: must name the target_allocator extension"))
	}
	if cfg.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval: %s must be greater than zero", cfg.Interval))
	}
	if cfg.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("timeout: %s must be greater than zero", cfg.Timeout))
	}
	if cfg.BearerTokenFile != "" {
		if _, err := readToken(cfg.BearerTokenFile); err != nil {
			errs = append(errs, fmt.Errorf("bearer_token_file: %w", err))
		}
	}
	if cfg.HTTPSDConfig.RefreshInterval < time.Second {
		errs = append(errs, fmt.Errorf("http_sd_config::refresh_interval: %s must be at least 1s", cfg.HTTPSDConfig.RefreshInterval))
	}
	return errors.Join(errs...)
}

// usesTLS reports whether the allocator API is reached over TLS: when any
// tls setting is given but `insecure: true`.
func (cfg *Config) usesTLS() bool {
	return !cfg.TLS.Insecure && !reflect.DeepEqual(cfg.TLS, configtls.ClientConfig{})
}

// readToken reads a bearer token file: one token, surrounding space trimmed.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return token, nil
}
