package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"time"

	promconfig "github.com/prometheus/prometheus/config"
	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/confmap"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/election"
	"github.com/embedded-ta/embedded-ta/internal/kube"
	"github.com/embedded-ta/embedded-ta/internal/promcr"
)

// Config is the target_allocator extension's configuration. Identity, group,
// namespace, advertise and node_name default from the pod's environment,
// which Start reads (resolve); Validate reads nothing but the Config.
type Config struct {
	// ServerConfig is where the allocator API listens (endpoint, TLS, auth).
	confighttp.ServerConfig `mapstructure:",squash"`

	// Identity names this member in its group; default POD_NAME, then the host name.
	Identity string `mapstructure:"identity"`
	// Group names the members that share targets, and their leader Lease;
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
	// Advertise is host:port where the other members reach this one; default
	// POD_IP with the endpoint's port.
	Advertise string `mapstructure:"advertise"`
	// NodeName is the Kubernetes node of this member; default NODE_NAME.
	NodeName string `mapstructure:"node_name"`
	// Client is how this member asks its leader: TLS (the CA of the other
	// members' server certificates, and this member's client certificate
	// when the API requires one), auth (an authenticator extension, when the
	// API requires one) and timeout. Its endpoint is not set: the leader's
	// address comes from the leader's member Lease.
	Client confighttp.ClientConfig `mapstructure:"client"`

	// The keys of a Target Allocator (TA) config file. Each takes effect with
	// the TA's meaning, or is reported at Start as not applying (notices).

	// ListenAddr is the TA's name for endpoint: when set, it is the endpoint.
	ListenAddr string `mapstructure:"listen_addr"`
	// KubeConfigFilePath is a kubeconfig file that the kube client reads
	// when it exists, whatever auth_type says; when it does not, auth_type
	// applies, as the TA then uses its in-cluster configuration.
	KubeConfigFilePath string `mapstructure:"kube_config_file_path"`
	// AllocationStrategy is consistent-hashing (default), least-weighted,
	// per-node or series-weighted.
	AllocationStrategy string `mapstructure:"allocation_strategy"`
	// AllocationFallbackStrategy places per-node's targets without a node:
	// "" (leave them unassigned), consistent-hashing or least-weighted.
	AllocationFallbackStrategy string `mapstructure:"allocation_fallback_strategy"`
	// MaxTargetsPerCollector is the most targets a member gets, pinned ones
	// included; the targets beyond every member's limit are unassigned,
	// counted and logged. 0 (the default) sets no limit.
	MaxTargetsPerCollector int `mapstructure:"max_targets_per_collector"`
	// MaxSeriesPerCollector is the most series load (series per scrape, as
	// the members measure them) a member gets, pinned targets included; the
	// targets beyond it are unassigned, counted and logged. 0 (the default)
	// sets no limit.
	MaxSeriesPerCollector int64 `mapstructure:"max_series_per_collector"`
	// FilterStrategy is relabel-config (default: targets the job's
	// relabel_configs drop are not allocated) or "" (no filtering).
	FilterStrategy *string `mapstructure:"filter_strategy"`
	// Config is a Prometheus configuration: global and scrape_configs.
	Config map[string]any `mapstructure:"config"`
	// PrometheusCR watches Prometheus Operator resources (ServiceMonitor,
	// PodMonitor, Probe, ScrapeConfig) and allocates their jobs' targets.
	PrometheusCR promcr.Config `mapstructure:"prometheus_cr"`
	// CollectorSelector and CollectorNamespace find the TA's collectors;
	// here the members of a group are known by their member Leases, in the
	// group's namespace. Not needed: reported.
	CollectorSelector  any    `mapstructure:"collector_selector"`
	CollectorNamespace string `mapstructure:"collector_namespace"`
	// HTTPS is the TA's second listener: with enabled, the allocator API
	// listens on listen_addr too, with mutual TLS, and shows secret values
	// to the clients it verified.
	HTTPS HTTPSConfig `mapstructure:"https"`
	// AllowInsecureAuthSecrets shows secret values to every client,
	// without TLS too, as in the TA.
	AllowInsecureAuthSecrets bool `mapstructure:"allow_insecure_auth_secrets"`
	// Telemetry is the TA's export of its own metrics. Not applied (the
	// collector's telemetry carries the extension's): reported when set.
	Telemetry map[string]any `mapstructure:"telemetry"`
	// CollectorNotReadyGracePeriod is how long the TA keeps the targets of a
	// collector that is not ready. Not applied (a member keeps its targets
	// while its member Lease is current): reported when set.
	CollectorNotReadyGracePeriod time.Duration `mapstructure:"collector_not_ready_grace_period"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// HTTPSConfig is the `https` section of a TA config file: a second
// listener of the allocator API, with mutual TLS.
type HTTPSConfig struct {
	Enabled bool `mapstructure:"enabled"`
	// ListenAddr is where it listens, :8443 when unset (the TA's default).
	// Every member runs the same config: a member reaches its leader's at
	// the leader's advertised host with this port.
	ListenAddr string `mapstructure:"listen_addr"`
	// CAFilePath verifies clients' certificates; TLSCertFilePath and
	// TLSKeyFilePath are the listener's own.
	CAFilePath      string `mapstructure:"ca_file_path"`
	TLSCertFilePath string `mapstructure:"tls_cert_file_path"`
	TLSKeyFilePath  string `mapstructure:"tls_key_file_path"`
}

// defaultHTTPSListenAddr is the TA's default https::listen_addr.
const defaultHTTPSListenAddr = ":8443"

// httpsReload is how often the https listener reads its certificate and
// client CA files again, so that a rotated Secret takes effect.
const httpsReload = time.Minute

// listenAddr is where the https listener listens.
func (h HTTPSConfig) listenAddr() string {
	if h.ListenAddr == "" {
		return defaultHTTPSListenAddr
	}
	return h.ListenAddr
}

// validate checks an enabled https section's values, not its files.
func (h HTTPSConfig) validate(endpoint string) []error {
	var errs []error
	if h.ListenAddr != "" && !isHostPort(h.ListenAddr) {
		errs = append(errs, fmt.Errorf("https::listen_addr: %q is not [host]:port", h.ListenAddr))
	}
	if !h.Enabled {
		return errs
	}
	for _, f := range []struct{ key, value string }{
		{"ca_file_path", h.CAFilePath}, {"tls_cert_file_path", h.TLSCertFilePath}, {"tls_key_file_path", h.TLSKeyFilePath},
	} {
		if f.value == "" {
			errs = append(errs, fmt.Errorf("https::%s: must be set when https::enabled is true", f.key))
		}
	}
	_, port, err := net.SplitHostPort(h.listenAddr())
	if _, endpointPort, err2 := net.SplitHostPort(endpoint); err == nil && err2 == nil && port == endpointPort {
		errs = append(errs, fmt.Errorf("https::listen_addr: %q has the port of endpoint %q; the two listeners need a port each", h.listenAddr(), endpoint))
	}
	return errs
}

// check reads an enabled https section's files, as Start does before it
// listens, and names the key of the one that fails.
func (h HTTPSConfig) check() error {
	ca, err := os.ReadFile(h.CAFilePath)
	if err != nil {
		return fmt.Errorf("https::ca_file_path: %w", err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(ca) {
		return fmt.Errorf("https::ca_file_path: %s holds no PEM certificate", h.CAFilePath)
	}
	cert, err := os.ReadFile(h.TLSCertFilePath)
	if err != nil {
		return fmt.Errorf("https::tls_cert_file_path: %w", err)
	}
	key, err := os.ReadFile(h.TLSKeyFilePath)
	if err != nil {
		return fmt.Errorf("https::tls_key_file_path: %w", err)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		return fmt.Errorf("https::tls_cert_file_path, https::tls_key_file_path: %s and %s are no key pair: %w", h.TLSCertFilePath, h.TLSKeyFilePath, err)
	}
	return nil
}

// httpsServer is the https listener's server configuration: the endpoint's
// (timeouts, auth, limits) with its own address and mutual TLS.
func (cfg *Config) httpsServer() confighttp.ServerConfig {
	s := cfg.ServerConfig
	s.NetAddr.Endpoint = cfg.HTTPS.listenAddr()
	s.TLS = configoptional.Some(configtls.ServerConfig{
		Config: configtls.Config{
			CertFile: cfg.HTTPS.TLSCertFilePath, KeyFile: cfg.HTTPS.TLSKeyFilePath, MinVersion: "1.2", ReloadInterval: httpsReload,
		},
		ClientCAFile:       cfg.HTTPS.CAFilePath,
		ReloadClientCAFile: true,
	})
	return s
}

// httpsClient is how a follower asks its leader's https listener: client,
// with the TLS settings of https (its CA and certificate) unless client::tls
// sets its own.
func (cfg *Config) httpsClient() confighttp.ClientConfig {
	c := cfg.Client
	if !hasTLS(c.TLS) {
		c.TLS.CAFile, c.TLS.CertFile, c.TLS.KeyFile = cfg.HTTPS.CAFilePath, cfg.HTTPS.TLSCertFilePath, cfg.HTTPS.TLSKeyFilePath
	}
	return c
}

// hasTLS reports whether any of a client's TLS settings for its trust and
// certificate is set.
func hasTLS(t configtls.ClientConfig) bool {
	return t.CAFile != "" || t.CAPem != "" || t.CertFile != "" || t.CertPem != "" || t.KeyFile != "" || t.KeyPem != ""
}

// showsSecrets reports whether the endpoint shows secret values to a
// follower that relays: to everyone (allow_insecure_auth_secrets), or to
// verified clients and the follower presents its certificate.
func (cfg *Config) showsSecrets() bool {
	tls := cfg.TLS.Get()
	return cfg.AllowInsecureAuthSecrets || tls != nil && tls.ClientCAFile != ""
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

// settings are what a member runs with: the configured values, and the
// defaults its environment gives the others.
type settings struct {
	identity, group, namespace, advertise, node string
	// httpsAdvertise is where the other members reach this one's https
	// listener: advertise's host with https::listen_addr's port; "" when
	// https is not enabled.
	httpsAdvertise string
	prometheus     *promconfig.Config
	// auth is where the kube client's credentials come from: auth_type and
	// context, or kube_config_file_path when that file exists.
	auth kube.Auth
}

// Unmarshal reads the configuration; listen_addr, the TA's name for the
// endpoint, sets the endpoint.
func (cfg *Config) Unmarshal(conf *confmap.Conf) error {
	if err := conf.Unmarshal(cfg); err != nil {
		return err
	}
	if cfg.ListenAddr == "" || cfg.ListenAddr == cfg.NetAddr.Endpoint {
		return nil
	}
	if conf.IsSet("endpoint") {
		return fmt.Errorf("listen_addr: %q differs from endpoint %q; both say where the allocator API listens: set one of them", cfg.ListenAddr, cfg.NetAddr.Endpoint)
	}
	cfg.NetAddr.Endpoint = cfg.ListenAddr
	return nil
}

// strategy is the allocation strategy's name, consistent-hashing when unset.
func (cfg *Config) strategy() string {
	if cfg.AllocationStrategy == "" {
		return allocation.ConsistentHashing
	}
	return cfg.AllocationStrategy
}

// filterStrategy is the configured filter, relabel-config when unset.
func (cfg *Config) filterStrategy() discovery.FilterStrategy {
	if cfg.FilterStrategy == nil {
		return discovery.FilterRelabelConfig
	}
	return discovery.FilterStrategy(*cfg.FilterStrategy)
}

// Validate checks the configuration's own values, naming the key that is
// wrong. It reads nothing else: what the defaults of identity, group,
// namespace, advertise and node_name come to is known at Start (resolve),
// so `otelcol validate` works outside a pod.
func (cfg *Config) Validate() error {
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
	if cfg.ListenAddr != "" && !isHostPort(cfg.ListenAddr) {
		errs = append(errs, fmt.Errorf("listen_addr: %q is not [host]:port", cfg.ListenAddr))
	}
	errs = append(errs, cfg.HTTPS.validate(cfg.NetAddr.Endpoint)...)
	if cfg.CollectorNotReadyGracePeriod < 0 {
		errs = append(errs, fmt.Errorf("collector_not_ready_grace_period: %s must not be negative", cfg.CollectorNotReadyGracePeriod))
	}
	if cfg.Identity != "" {
		errs = append(errs, checkIdentity(cfg.Identity))
	}
	if cfg.Group != "" {
		errs = append(errs, checkGroup(cfg.Group, cfg.Identity))
	}
	if cfg.Namespace != "" {
		errs = append(errs, checkNamespace(cfg.Namespace))
	}
	if cfg.Advertise != "" {
		errs = append(errs, checkAdvertise(cfg.Advertise))
	}
	errs = append(errs, cfg.validateClient()...)
	if _, err := allocation.New(cfg.AllocationStrategy, allocation.WithFallback(cfg.AllocationFallbackStrategy)); err != nil {
		errs = append(errs, fmt.Errorf("allocation_strategy: %w", err))
	}
	if cfg.MaxTargetsPerCollector < 0 {
		errs = append(errs, fmt.Errorf("max_targets_per_collector: %d must not be negative (0 sets no limit)", cfg.MaxTargetsPerCollector))
	}
	if cfg.MaxSeriesPerCollector < 0 {
		errs = append(errs, fmt.Errorf("max_series_per_collector: %d must not be negative (0 sets no limit)", cfg.MaxSeriesPerCollector))
	}
	if err := cfg.filterStrategy().Validate(); err != nil {
		errs = append(errs, err) // names filter_strategy
	}
	if err := cfg.PrometheusCR.Validate(); err != nil {
		errs = append(errs, err) // names prometheus_cr::<key>
	}
	if _, err := discovery.LoadConfig(cfg.Config); err != nil {
		errs = append(errs, fmt.Errorf("config: %w", err))
	}
	return errors.Join(errs...)
}

// environment is where the defaults of a member's settings come from: the
// pod (its downward API variables and service account) or the host. Start
// reads the process's; tests make their own.
type environment struct {
	podName, hostname, podIP, nodeName string
	// namespace finds the namespace when none is configured (kube.Auth.Namespace).
	namespace func(kube.Auth) (string, error)
	// exists reports whether a file exists (kube_config_file_path).
	exists func(path string) bool
}

// processEnvironment reads the environment of this process.
func processEnvironment() environment {
	hostname, _ := os.Hostname()
	return environment{
		podName:   os.Getenv("POD_NAME"),
		hostname:  hostname,
		podIP:     os.Getenv("POD_IP"),
		nodeName:  os.Getenv("NODE_NAME"),
		namespace: kube.Auth.Namespace,
		exists: func(path string) bool {
			_, err := os.Stat(path)
			return err == nil
		},
	}
}

// resolve applies env's defaults to a valid configuration, and checks what
// they come to, naming the key they stand for.
func (cfg *Config) resolve(env environment) (settings, error) {
	s := settings{identity: cfg.Identity, group: cfg.Group, namespace: cfg.Namespace, advertise: cfg.Advertise, node: cfg.NodeName}
	s.auth = kube.Auth{Type: cfg.AuthType, Context: cfg.Context}
	if p := cfg.KubeConfigFilePath; p != "" && env.exists(p) {
		s.auth = kube.Auth{Type: kube.AuthKubeConfig, Context: cfg.Context, File: p}
	}
	var errs []error
	if s.identity == "" {
		s.identity = env.podName
	}
	if s.identity == "" {
		s.identity = env.hostname
	}
	errs = append(errs, checkIdentity(s.identity))
	if s.group == "" {
		if m := identityRE.FindStringSubmatch(s.identity); m != nil {
			s.group = m[1]
		} else {
			errs = append(errs, fmt.Errorf("group: not set, and identity %q has no \"-<ordinal>\" suffix to derive it from", s.identity))
		}
	}
	if s.group != "" {
		errs = append(errs, checkGroup(s.group, s.identity))
	}
	if s.namespace == "" {
		ns, err := env.namespace(s.auth)
		if err != nil {
			errs = append(errs, fmt.Errorf("namespace: not set and not found: %w", err))
		} else {
			s.namespace = ns
			errs = append(errs, checkNamespace(ns))
		}
	}
	if s.advertise == "" {
		s.advertise = defaultAdvertise(cfg.NetAddr.Endpoint, env)
		if err := checkAdvertise(s.advertise); err != nil {
			errs = append(errs, fmt.Errorf("%w (set advertise or POD_IP)", err))
		}
	}
	if s.node == "" {
		s.node = env.nodeName
	}
	if cfg.HTTPS.Enabled {
		host, _, err := net.SplitHostPort(s.advertise)
		_, port, err2 := net.SplitHostPort(cfg.HTTPS.listenAddr())
		if err == nil && err2 == nil {
			s.httpsAdvertise = net.JoinHostPort(host, port)
		}
	}
	prom, err := discovery.LoadConfig(cfg.Config)
	if err != nil {
		errs = append(errs, fmt.Errorf("config: %w", err))
	}
	s.prometheus = prom
	return s, errors.Join(errs...)
}

func checkIdentity(identity string) error {
	if msgs := validation.IsDNS1123Subdomain(identity); len(msgs) > 0 {
		return fmt.Errorf("identity: %q is not a valid Lease name: %v", identity, msgs)
	}
	return nil
}

// checkGroup checks group, the name of the leader Lease, against a member's
// identity, the name of its own Lease; an identity not yet known is "".
func checkGroup(group, identity string) error {
	if msgs := validation.IsDNS1123Subdomain(group); len(msgs) > 0 {
		return fmt.Errorf("group: %q is not a valid Lease name: %v", group, msgs)
	}
	if group == identity {
		return fmt.Errorf("group: %q equals the identity; the group's leader Lease and the member's Lease would collide", group)
	}
	return nil
}

func checkNamespace(ns string) error {
	if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		return fmt.Errorf("namespace: %q is not a valid namespace: %v", ns, msgs)
	}
	return nil
}

func checkAdvertise(advertise string) error {
	if host, port, err := net.SplitHostPort(advertise); err != nil || host == "" || !validPort(port) {
		return fmt.Errorf("advertise: %q is not host:port", advertise)
	}
	return nil
}

// validateClient checks that this member can ask its leader the way the
// other members' API (the same configuration) will require.
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
		errs = append(errs, errors.New("client::tls::cert_file: must be set: the API requires client certificates (tls::client_ca_file), and this member presents one to its leader"))
	}
	if cfg.HTTPS.Enabled && hasTLS(c.TLS) && c.TLS.CertFile == "" && c.TLS.CertPem == "" {
		errs = append(errs, errors.New("client::tls::cert_file: must be set: the https listener requires client certificates, and this member presents one to its leader's (or leave client::tls unset to use https's)"))
	}
	if cfg.Auth.HasValue() && !c.Auth.HasValue() {
		errs = append(errs, errors.New("client::auth: must be set: the API requires authentication (auth), and this member authenticates to its leader"))
	}
	return errs
}

// defaultAdvertise is POD_IP with the endpoint's port, else the endpoint
// itself when it names a host, else the host name with the endpoint's port.
func defaultAdvertise(endpoint string, env environment) string {
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		return endpoint
	}
	if env.podIP != "" {
		return net.JoinHostPort(env.podIP, port)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return endpoint
	}
	return net.JoinHostPort(env.hostname, port)
}

// isHostPort reports whether a is a listen address: [host]:port.
func isHostPort(a string) bool {
	_, port, err := net.SplitHostPort(a)
	return err == nil && validPort(port)
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}
