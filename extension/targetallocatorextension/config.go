package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"time"

	promconfig "github.com/prometheus/prometheus/config"
	"go.opentelemetry.io/collector/config/confighttp"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/election"
	"github.com/embedded-ta/embedded-ta/internal/kube"
	"github.com/embedded-ta/embedded-ta/internal/promcr"
)

// Config is the target_allocator extension's configuration. Identity, group,
// namespace, advertise and node_name default from the pod's environment.
type Config struct {
	// ServerConfig is where the allocator API listens (endpoint, TLS, auth).
	confighttp.ServerConfig `mapstructure:",squash"`

	// Identity names this replica in its group; default POD_NAME, then the host name.
	Identity string `mapstructure:"identity"`
	// Group names the replicas that share targets, and their leader Lease;
	// default the StatefulSet name: the identity without its "-<ordinal>".
	Group string `mapstructure:"group"`
	// Namespace holds the Leases; default POD_NAMESPACE, then the service
	// account's namespace, then the kubeconfig context's.
	Namespace string `mapstructure:"namespace"`
	// AuthType is serviceAccount or kubeConfig (KUBECONFIG, with Context).
	AuthType kube.AuthType `mapstructure:"auth_type"`
	// Context selects the kubeconfig context for auth_type kubeConfig.
	Context string `mapstructure:"context"`
	// Lease holds the election and membership timings.
	Lease LeaseConfig `mapstructure:"lease"`
	// Advertise is host:port where the other replicas reach this one; default
	// POD_IP with the endpoint's port.
	Advertise string `mapstructure:"advertise"`
	// NodeName is the Kubernetes node of this replica; default NODE_NAME.
	NodeName string `mapstructure:"node_name"`
	// Client is how this replica asks its leader: TLS (the CA of the other
	// replicas' server certificates, and this replica's client certificate
	// when the API requires one), auth (an authenticator extension, when the
	// API requires one) and timeout. Its endpoint is not set: the leader's
	// address comes from the leader's member Lease.
	Client confighttp.ClientConfig `mapstructure:"client"`

	// The keys of a Target Allocator config file, with its meaning.

	// AllocationStrategy is consistent-hashing (default), least-weighted or per-node.
	AllocationStrategy string `mapstructure:"allocation_strategy"`
	// AllocationFallbackStrategy places what per-node cannot: "" (leave
	// unassigned), consistent-hashing or least-weighted.
	AllocationFallbackStrategy string `mapstructure:"allocation_fallback_strategy"`
	// FilterStrategy is relabel-config (default: targets the job's
	// relabel_configs drop are not allocated) or "" (no filtering).
	FilterStrategy *string `mapstructure:"filter_strategy"`
	// Config is a Prometheus configuration: global and scrape_configs.
	Config map[string]any `mapstructure:"config"`
	// PrometheusCR watches Prometheus Operator resources (ServiceMonitor,
	// PodMonitor, Probe, ScrapeConfig) and allocates their jobs' targets.
	PrometheusCR promcr.Config `mapstructure:"prometheus_cr"`
	// CollectorSelector is a Target Allocator key that has no meaning here:
	// the members are the replicas of the group. It is refused with advice.
	CollectorSelector any `mapstructure:"collector_selector"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// LeaseConfig holds the timings of the leader and member Leases, with
// client-go's meaning and constraints.
type LeaseConfig struct {
	// Duration is how long a leader or member lasts without renewing.
	Duration time.Duration `mapstructure:"duration"`
	// RenewDeadline is how long a leader keeps trying to renew before it steps down.
	RenewDeadline time.Duration `mapstructure:"renew_deadline"`
	// RetryPeriod is how often Leases are renewed and failed calls retried.
	RetryPeriod time.Duration `mapstructure:"retry_period"`
}

// identityRE matches a StatefulSet pod name: the set's name, "-", an ordinal.
var identityRE = regexp.MustCompile(`^(.+)-([0-9]+)$`)

// settings are the resolved identity of a replica.
type settings struct {
	identity, group, namespace, advertise, node string
	prometheus                                  *promconfig.Config
}

// filterStrategy is the configured filter, relabel-config when unset.
func (cfg *Config) filterStrategy() discovery.FilterStrategy {
	if cfg.FilterStrategy == nil {
		return discovery.FilterRelabelConfig
	}
	return discovery.FilterStrategy(*cfg.FilterStrategy)
}

// Validate checks the configuration the way Start will use it, so an invalid
// value stops the collector at startup with the key that is wrong.
func (cfg *Config) Validate() error {
	_, err := cfg.resolve()
	return err
}

// resolve applies the pod-environment defaults and validates the result.
func (cfg *Config) resolve() (settings, error) {
	var errs []error
	if err := cfg.AuthType.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("auth_type: %w", err))
	}
	if err := election.ValidateTiming(cfg.Lease.Duration, cfg.Lease.RenewDeadline, cfg.Lease.RetryPeriod); err != nil {
		errs = append(errs, err)
	}
	if cfg.NetAddr.Endpoint == "" {
		errs = append(errs, errors.New("endpoint: must be set"))
	}

	s := settings{identity: cfg.Identity, group: cfg.Group, namespace: cfg.Namespace, advertise: cfg.Advertise, node: cfg.NodeName}
	if s.identity == "" {
		s.identity = os.Getenv("POD_NAME")
	}
	if s.identity == "" {
		s.identity, _ = os.Hostname()
	}
	if msgs := validation.IsDNS1123Subdomain(s.identity); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("identity: %q is not a valid Lease name: %v", s.identity, msgs))
	}
	if s.group == "" {
		m := identityRE.FindStringSubmatch(s.identity)
		if m == nil {
			errs = append(errs, fmt.Errorf("group: not set, and identity %q has no \"-<ordinal>\" suffix to derive it from", s.identity))
		} else {
			s.group = m[1]
		}
	}
	if s.group != "" {
		if msgs := validation.IsDNS1123Subdomain(s.group); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("group: %q is not a valid Lease name: %v", s.group, msgs))
		}
		if s.group == s.identity {
			errs = append(errs, fmt.Errorf("group: %q equals the identity; the group's leader Lease and the member's Lease would collide", s.group))
		}
	}
	if s.namespace == "" && cfg.AuthType.Validate() == nil {
		ns, err := kube.Namespace(cfg.AuthType, cfg.Context)
		if err != nil {
			errs = append(errs, fmt.Errorf("namespace: not set and not found: %w", err))
		}
		s.namespace = ns
	} else if msgs := validation.IsDNS1123Label(s.namespace); len(msgs) > 0 && s.namespace != "" {
		errs = append(errs, fmt.Errorf("namespace: %q is not a valid namespace: %v", s.namespace, msgs))
	}
	if s.advertise == "" {
		s.advertise = defaultAdvertise(cfg.NetAddr.Endpoint)
	}
	if host, port, err := net.SplitHostPort(s.advertise); err != nil || host == "" || !validPort(port) {
		errs = append(errs, fmt.Errorf("advertise: %q is not host:port (set advertise or POD_IP)", s.advertise))
	}
	if s.node == "" {
		s.node = os.Getenv("NODE_NAME")
	}
	errs = append(errs, cfg.validateClient()...)
	if cfg.CollectorSelector != nil {
		errs = append(errs, errors.New("collector_selector: not needed and not supported: the members are exactly the replicas of this group; remove the key"))
	}
	if _, err := allocation.New(cfg.AllocationStrategy, allocation.WithFallback(cfg.AllocationFallbackStrategy)); err != nil {
		errs = append(errs, fmt.Errorf("allocation_strategy: %w", err))
	}
	if err := cfg.filterStrategy().Validate(); err != nil {
		errs = append(errs, err) // names filter_strategy
	}
	if err := cfg.PrometheusCR.Validate(); err != nil {
		errs = append(errs, err) // names prometheus_cr::<key>
	}
	prom, err := discovery.LoadConfig(cfg.Config)
	if err != nil {
		errs = append(errs, fmt.Errorf("config: %w", err))
	}
	s.prometheus = prom
	return s, errors.Join(errs...)
}

// validateClient checks that this replica can ask its leader the way the
// other replicas' API (the same configuration) will require.
func (cfg *Config) validateClient() []error {
	var errs []error
	c := cfg.Client
	if c.Endpoint != "" {
		errs = append(errs, errors.New("client::endpoint: must not be set: the leader's address comes from its member Lease"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("client::timeout: %s must be greater than zero", c.Timeout))
	} else if cfg.WriteTimeout > 0 && c.Timeout >= cfg.WriteTimeout {
		errs = append(errs, fmt.Errorf("client::timeout: %s must be less than write_timeout (%s): a follower answers after asking its leader", c.Timeout, cfg.WriteTimeout))
	}
	if tls := cfg.TLS.Get(); tls != nil && tls.ClientCAFile != "" && c.TLS.CertFile == "" && c.TLS.CertPem == "" {
		errs = append(errs, errors.New("client::tls::cert_file: must be set: the API requires client certificates (tls::client_ca_file), and this replica presents one to its leader"))
	}
	if cfg.Auth.HasValue() && !c.Auth.HasValue() {
		errs = append(errs, errors.New("client::auth: must be set: the API requires authentication (auth), and this replica authenticates to its leader"))
	}
	return errs
}

// defaultAdvertise is POD_IP with the endpoint's port, else the endpoint
// itself when it names a host, else the host name with the endpoint's port.
func defaultAdvertise(endpoint string) string {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return endpoint
	}
	if ip := os.Getenv("POD_IP"); ip != "" {
		return net.JoinHostPort(ip, port)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return endpoint
	}
	name, _ := os.Hostname()
	return net.JoinHostPort(name, port)
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}
