package discovery

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"
)

// confmap turns YAML into the generic map the collector's confmap hands over.
func confmap(t testing.TB, doc string) map[string]any {
	t.Helper()
	var raw map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(doc), &raw))
	return stringKeys(raw).(map[string]any)
}

// stringKeys converts yaml.v2's map[any]any into map[string]any, as confmap has.
func stringKeys(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = stringKeys(e)
		}
		return out
	case map[any]any:
		out := map[string]any{}
		for k, e := range v {
			out[k.(string)] = stringKeys(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = stringKeys(e)
		}
		return out
	}
	return v
}

func TestLoadConfig(t *testing.T) {
	cfg, err := LoadConfig(confmap(t, `
global:
  scrape_interval: 30s
  scrape_timeout: 10s
scrape_configs:
- job_name: apps
  scrape_interval: 1m
  basic_auth:
    username: scraper
    password: s3cret
  static_configs:
  - targets: ["10.0.0.1:8080", "10.0.0.2:8080"]
    labels: {team: a}
  relabel_configs:
  - source_labels: [team]
    regex: a|b
    action: keep
  - source_labels: [__address__]
    regex: "(.*):8080"
    target_label: host
    replacement: "$1"
- job_name: defaults
  static_configs:
  - targets: ["10.0.0.3:9090"]
`))
	require.NoError(t, err)
	require.Len(t, cfg.ScrapeConfigs, 2)

	apps := cfg.ScrapeConfigs[0]
	assert.Equal(t, "apps", apps.JobName)
	assert.Equal(t, model.Duration(time.Minute), apps.ScrapeInterval)
	assert.Equal(t, model.Duration(10*time.Second), apps.ScrapeTimeout, "from global")
	require.NotNil(t, apps.HTTPClientConfig.BasicAuth)
	assert.Equal(t, "scraper", apps.HTTPClientConfig.BasicAuth.Username)
	assert.Equal(t, "s3cret", string(apps.HTTPClientConfig.BasicAuth.Password))
	assert.Len(t, apps.RelabelConfigs, 2)

	defaults := cfg.ScrapeConfigs[1]
	assert.Equal(t, model.Duration(30*time.Second), defaults.ScrapeInterval, "from global")
	assert.Equal(t, "/metrics", defaults.MetricsPath)
	assert.Equal(t, "http", defaults.Scheme)
}

func TestLoadConfigEmpty(t *testing.T) {
	for _, raw := range []map[string]any{nil, {}} {
		cfg, err := LoadConfig(raw)
		require.NoError(t, err)
		assert.Empty(t, cfg.ScrapeConfigs)
		d, err := New(cfg, FilterRelabelConfig, nil, nil)
		require.NoError(t, err)
		assert.Empty(t, d.jobs)
	}
}

// Every SD mechanism of the collector's prometheus receiver is registered.
func TestLoadConfigServiceDiscoveries(t *testing.T) {
	for _, sd := range []string{
		`kubernetes_sd_configs: [{role: pod}]`,
		`file_sd_configs: [{files: [/tmp/targets.json]}]`,
		`http_sd_configs: [{url: "http://localhost:8080/sd"}]`,
		`dns_sd_configs: [{names: [example.com], type: A, port: 80}]`,
		`consul_sd_configs: [{server: "localhost:8500"}]`,
		`ec2_sd_configs: [{region: eu-west-1}]`,
		`azure_sd_configs: [{subscription_id: x, tenant_id: y, client_id: z, client_secret: w}]`,
		`gce_sd_configs: [{project: p, zone: z}]`,
		`docker_sd_configs: [{host: "unix:///var/run/docker.sock"}]`,
		`eureka_sd_configs: [{server: "http://localhost:8761/eureka"}]`,
		`nomad_sd_configs: [{server: "http://localhost:4646"}]`,
		`serverset_sd_configs: [{servers: ["localhost:2181"], paths: [/a]}]`,
	} {
		t.Run(sd, func(t *testing.T) {
			_, err := LoadConfig(confmap(t, "scrape_configs:\n- job_name: j\n  "+sd+"\n"))
			require.NoError(t, err)
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string // substrings of the error
	}{{
		name: "bad relabel regex",
		doc: `
scrape_configs:
- job_name: good
  static_configs: [{targets: ["a:1"]}]
- job_name: broken
  relabel_configs:
  - source_labels: [__address__]
    regex: "(unclosed"
    action: keep`,
		want: []string{`job "broken"`, "regexp"},
	}, {
		name: "duplicate job names",
		doc: `
scrape_configs:
- job_name: twice
- job_name: twice`,
		want: []string{`"twice"`, "multiple"},
	}, {
		name: "unknown key in a job",
		doc: `
scrape_configs:
- job_name: typo
  scrape_intervall: 10s`,
		want: []string{`job "typo"`, "scrape_intervall"},
	}, {
		name: "unknown top-level key",
		doc:  `scrape_config: []`,
		want: []string{"scrape_config"},
	}, {
		name: "bad global",
		doc: `
global: {scrape_interval: soon}
scrape_configs: [{job_name: j}]`,
		want: []string{"global", "soon"},
	}, {
		name: "timeout above interval",
		doc: `
scrape_configs:
- job_name: slow
  scrape_interval: 10s
  scrape_timeout: 20s`,
		want: []string{`job "slow"`, "scrape timeout greater than scrape interval"},
	}, {
		name: "job without a name",
		doc: `
scrape_configs:
- job_name: first
- static_configs: [{targets: ["a:1"]}]`,
		want: []string{"scrape_configs[1]", "job_name is empty"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(confmap(t, tc.doc))
			require.Error(t, err)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
			assert.NotRegexp(t, `line \d+`, err.Error(), "line numbers of a YAML document the user never saw")
		})
	}
}

// The sections of a Prometheus configuration that make no jobs are left
// out unread, as the Target Allocator leaves them, and named.
func TestLoadConfigIgnoresOtherSections(t *testing.T) {
	raw := confmap(t, `
global: {scrape_interval: 15s, evaluation_interval: 1m}
alerting: {alertmanagers: [{static_configs: [{targets: ["am:9093"]}]}]}
rule_files: [/etc/rules/*.yaml]
remote_write: [{url: "http://x"}]
remote_read: [{url: "http://y"}]
storage: {tsdb: {out_of_order_time_window: 1h}}
scrape_configs:
- job_name: j
  static_configs: [{targets: ["a:1"]}]
`)
	assert.Equal(t, []string{"alerting", "remote_read", "remote_write", "rule_files", "storage"}, IgnoredSections(raw))
	cfg, err := LoadConfig(raw)
	require.NoError(t, err)
	require.Len(t, cfg.ScrapeConfigs, 1)
	assert.Equal(t, "15s", cfg.ScrapeConfigs[0].ScrapeInterval.String())
	assert.Empty(t, cfg.RemoteWriteConfigs)
	assert.Empty(t, cfg.RuleFiles)
	assert.Contains(t, raw, "alerting", "the caller's map is left as it is")
	assert.Empty(t, IgnoredSections(confmap(t, "scrape_configs: []\nscrape_config_files: []\nglobal: {}\nscrape_config: []")))
}
