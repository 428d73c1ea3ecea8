package shares

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/config"
	_ "github.com/prometheus/prometheus/discovery/aws"
	_ "github.com/prometheus/prometheus/discovery/consul"
	_ "github.com/prometheus/prometheus/discovery/file"
	_ "github.com/prometheus/prometheus/discovery/http"
	_ "github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"
)

// switchMu serialises this file's use of the process-wide switch, which
// only the reference encoding below flips.
var switchMu sync.Mutex

// yamlRoundTrip is the reference the encoder must match, and how secrets
// were encoded before it: yaml.Marshal then yaml.Unmarshal, with
// commonconfig.MarshalSecretValue set to reveal secrets.
func yamlRoundTrip(t *testing.T, v any, reveal bool) any {
	t.Helper()
	switchMu.Lock()
	defer switchMu.Unlock()
	commonconfig.MarshalSecretValue = reveal
	defer func() { commonconfig.MarshalSecretValue = false }()
	y, err := yaml.Marshal(v)
	require.NoError(t, err)
	var tree any
	require.NoError(t, yaml.Unmarshal(y, &tree))
	return jsonable(tree)
}

// jsonable turns the map[any]any of YAML into map[string]any for JSON.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range v {
			v[i] = jsonable(e)
		}
	}
	return v
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// loadScrapeConfigs parses a Prometheus config, as the collector does, and
// returns its scrape configs by job name.
func loadScrapeConfigs(t *testing.T, s string) map[string]*config.ScrapeConfig {
	t.Helper()
	cfg, err := config.Load(s, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	configs := map[string]*config.ScrapeConfig{}
	for _, sc := range cfg.ScrapeConfigs {
		configs[sc.JobName] = sc
	}
	return configs
}

var scrapeConfigCases = []struct {
	name, yaml string
	secrets    []string
}{{
	name: "http client",
	yaml: `
global: {scrape_interval: 1m, scrape_timeout: 20s}
scrape_configs:
- job_name: basic
  basic_auth: {username: user, password: basic-pw-1}
  scrape_interval: 15s
  scrape_timeout: 5s
  honor_labels: true
  honor_timestamps: false
  metrics_path: /custom/metrics
  scheme: https
  params: {module: [http_2xx], target: ["a", "true", "1"]}
  scrape_protocols: [PrometheusText0.0.4, OpenMetricsText1.0.0]
  sample_limit: 1000
  tls_config: {ca_file: /etc/ca.pem, cert_file: /etc/cert.pem, key_file: /etc/key.pem, server_name: example.com, insecure_skip_verify: true, min_version: TLS12}
  static_configs:
  - targets: ["10.0.0.1:9100", "10.0.0.2:9100"]
    labels: {env: prod, flag: "true", count: "3"}
  relabel_configs:
  - source_labels: [__address__, __meta_x]
    separator: ;
    regex: '(.+):(\d+)'
    target_label: __param_target
    replacement: ${1}
    action: replace
  - regex: 'tmp_.*'
    action: labeldrop
  - source_labels: [__address__]
    modulus: 4
    target_label: __tmp_hash
    action: hashmod
  metric_relabel_configs:
  - source_labels: [__name__]
    regex: 'go_(gc|memstats)_.*|process_[a-z]+|a long alternative with spaces that runs well past the eighty columns yaml wraps at'
    action: drop
- job_name: bearer
  authorization: {type: Bearer, credentials: auth-cred-2}
  proxy_url: http://proxy.local:3128
  no_proxy: localhost,10.0.0.0/8
  proxy_connect_header: {Proxy-Authorization: [proxy-hdr-3, proxy-hdr-4], X-Empty: [""]}
  follow_redirects: false
  enable_http2: false
  http_headers: {X-Token: {secrets: [hdr-secret-5]}, X-Plain: {values: [v1, "multi
    word"]}}
  static_configs: [{targets: ["a:80"]}]
- job_name: oauth
  oauth2:
    client_id: cid
    client_secret: oauth-secret-6
    token_url: https://auth.example/token
    scopes: [read, write]
    endpoint_params: {aud: x}
    proxy_from_environment: true
- job_name: tls-inline
  tls_config: {cert_file: /etc/cert.pem, key: tls-key-7}
`,
	secrets: []string{"basic-pw-1", "auth-cred-2", "proxy-hdr-3", "proxy-hdr-4", "hdr-secret-5", "oauth-secret-6", "tls-key-7"},
}, {
	name: "service discovery",
	yaml: `
scrape_configs:
- job_name: sd
  kubernetes_sd_configs:
  - role: pod
    api_server: https://k8s.example:6443
    basic_auth: {username: sd, password: k8s-sd-pw-8}
    namespaces: {names: [default, monitoring]}
    selectors: [{role: pod, label: "app=x", field: "status.phase=Running"}]
    attach_metadata: {node: true}
  - role: endpoints
  http_sd_configs:
  - url: http://user:url-pass@sd.example/targets
    refresh_interval: 30s
    authorization: {credentials: http-sd-cred-9}
  file_sd_configs:
  - files: [/etc/targets/*.json]
    refresh_interval: 1m
  consul_sd_configs:
  - server: consul:8500
    token: consul-token-10
    services: [web]
  ec2_sd_configs:
  - region: eu-west-1
    access_key: AKIA
    secret_key: ec2-secret-11
    port: 9100
  static_configs: [{targets: ["x:1"]}]
`,
	secrets: []string{"k8s-sd-pw-8", "http-sd-cred-9", "consul-token-10", "ec2-secret-11"},
}}

// The encoder gives the JSON a YAML round trip gives, with the switch set
// (secrets) or not (redacted); every secret is in the first and none in
// the second.
func TestScrapeConfigsEncodeAsTheYAMLRoundTrip(t *testing.T) {
	for _, c := range scrapeConfigCases {
		t.Run(c.name, func(t *testing.T) {
			configs := loadScrapeConfigs(t, c.yaml)
			configs["bare"] = &config.ScrapeConfig{JobName: "bare"}
			configs["nil"] = nil
			want := func(reveal bool) string {
				m := map[string]any{}
				for name, sc := range configs {
					m[name] = yamlRoundTrip(t, sc, reveal)
				}
				return toJSON(t, m)
			}
			encoded, err := NewScrapeConfigs(configs)
			require.NoError(t, err)
			redacted, secret := string(encoded.redacted.Body), string(encoded.secret.Body)

			assert.JSONEq(t, want(true), secret)
			assert.Equal(t, want(true), secret, "byte for byte")
			assert.Equal(t, want(false), redacted)
			for _, s := range c.secrets {
				assert.Contains(t, secret, s)
				assert.NotContains(t, redacted, s)
			}
			assert.Contains(t, redacted, `\u003csecret\u003e`)
			assert.NotContains(t, secret, `\u003csecret\u003e`)
		})
	}
}

type text struct{ n int }

func (x text) MarshalText() ([]byte, error) { return fmt.Appendf(nil, "text-%d", x.n), nil }

// zeroAtOne is zero, for omitempty, when V is 1.
type zeroAtOne struct {
	V int `yaml:"v"`
}

func (z zeroAtOne) IsZero() bool { return z.V == 1 }

// jsonish has a JSON form that YAML never uses.
type jsonish string

func (jsonish) MarshalJSON() ([]byte, error) { return []byte(`"json"`), nil }

type yamlSelf struct{ s string }

func (y yamlSelf) MarshalYAML() (any, error) {
	return struct {
		S      string              `yaml:"s"`
		Secret commonconfig.Secret `yaml:"secret"`
	}{y.s, "self-secret"}, nil
}

type inlined struct {
	In       string `yaml:"in"`
	InSecret commonconfig.Secret
}

type odd struct {
	Skipped    string `yaml:"-"`
	NoTag      int
	Named      int8     `yaml:"named_int"`
	Flow       []string `yaml:"flow,flow"`
	Uint       uint16
	F32        float32
	F64        float64
	Whole      float64
	Big        float64
	Dur        time.Duration
	When       time.Time
	WhenPtr    *time.Time
	NilPtr     *int
	IntPtr     *int
	NilSlice   []int
	NilMap     map[string]int
	Empty      []int     `yaml:",omitempty"`
	Zero       zeroAtOne `yaml:",omitempty"`
	NotZero    zeroAtOne `yaml:",omitempty"`
	ZeroStruct struct {
		A int
		b int
	} `yaml:",omitempty"`
	Text        text
	TextPtr     *text
	IP          net.IP
	IntKeys     map[int]string
	FloatKeys   map[float64]bool
	BoolKeys    map[bool]int
	Any         any
	AnyNil      any
	Items       yaml.MapSlice
	Self        yamlSelf
	Secret      commonconfig.Secret
	EmptySecret commonconfig.Secret
	OmitSecret  commonconfig.Secret `yaml:",omitempty"`
	SecretPtr   *commonconfig.Secret
	Secrets     []commonconfig.Secret
	Strings     []string
	JSONish     jsonish
	Bytes       []byte
	Arr         [2]uint
	Inline      inlined        `yaml:",inline"`
	Extra       map[string]any `yaml:",inline"`
	unexported  int
}

// The encoder follows yaml v2's rules beyond what scrape configs use.
func TestYAMLTreeFollowsYAML(t *testing.T) {
	when := time.Date(2024, 2, 29, 12, 30, 0, 123, time.FixedZone("x", 3600))
	one, ptrSecret := 7, commonconfig.Secret("ptr-secret")
	v := odd{
		Skipped: "no", NoTag: 3, Named: -8, Flow: []string{"a", "b"}, Uint: 65535,
		F32: 0.1, F64: 2.5, Whole: 3, Big: 1e21, Dur: 90 * time.Second,
		When: when, WhenPtr: &when, IntPtr: &one,
		Zero: zeroAtOne{1}, NotZero: zeroAtOne{0},
		Text: text{1}, TextPtr: &text{2}, IP: net.ParseIP("10.0.0.1"),
		IntKeys: map[int]string{1: "a", -2: "b"}, FloatKeys: map[float64]bool{1: true, 2.5: false},
		BoolKeys: map[bool]int{true: 1},
		Any:      commonconfig.Secret("any-secret"),
		Items:    yaml.MapSlice{{Key: "k", Value: commonconfig.Secret("item-secret")}, {Key: 3, Value: nil}},
		Self:     yamlSelf{"self"},
		Secret:   "field-secret", SecretPtr: &ptrSecret,
		Secrets: []commonconfig.Secret{"slice-secret", ""},
		Strings: []string{"", "true", "1", "1.5", "null", "~", "a\nb\n", " lead", "trail ", "#x", "a: b", "ü", "\x00", "y", "0x1F"},
		JSONish: "yaml", Bytes: []byte("hi"), Arr: [2]uint{1, 2},
		Inline: inlined{In: "in", InSecret: "inline-secret"},
		Extra:  map[string]any{"extra": commonconfig.Secret("extra-secret"), "n": 1},
	}
	secrets := []string{"any-secret", "item-secret", "self-secret", "field-secret", "ptr-secret", "slice-secret", "inline-secret", "extra-secret"}
	for _, reveal := range []bool{false, true} {
		got, err := yamlTree{reveal: reveal}.value(reflect.ValueOf(v))
		require.NoError(t, err)
		gotJSON := toJSON(t, got)
		assert.Equal(t, toJSON(t, yamlRoundTrip(t, v, reveal)), gotJSON, "reveal %v", reveal)
		for _, s := range secrets {
			assert.Equal(t, reveal, strings.Contains(gotJSON, s), "%s with reveal %v", s, reveal)
		}
	}
}

// Encoding scrape configs never flips the process-wide switch, so the
// receiver's own marshalling, concurrent with it, always redacts.
func TestScrapeConfigsLeaveTheSecretSwitchAlone(t *testing.T) {
	configs := loadScrapeConfigs(t, scrapeConfigCases[0].yaml)
	receivers := commonconfig.HTTPClientConfig{BasicAuth: &commonconfig.BasicAuth{Username: "u", Password: "receiver-pw"}}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := NewScrapeConfigs(configs); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for range 5000 {
		y, err := yaml.Marshal(receivers)
		require.NoError(t, err)
		if !assert.Contains(t, string(y), "<secret>") || !assert.NotContains(t, string(y), "receiver-pw") {
			return
		}
	}
}
