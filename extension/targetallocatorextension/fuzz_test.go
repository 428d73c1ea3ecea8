package targetallocatorextension

import (
	"testing"

	"go.opentelemetry.io/collector/confmap"
	"go.yaml.in/yaml/v3"
)

// Whatever a user writes under target_allocator, loading, validating and
// resolving it returns (an error, or a config): it never panics.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		"identity: a-0\nnamespace: ns\n",
		"identity: a-0\nnamespace: ns\nlease: {duration: 10s, renew_deadline: 10s, retry_period: 2s}\n",
		"identity: a-0\nnamespace: ns\nallocation_strategy: per-node\nallocation_fallback_strategy: least-weighted\n",
		"identity: a-0\nnamespace: ns\nconfig:\n  scrape_configs:\n    - job_name: x\n      static_configs: [{targets: ['127.0.0.1:9090']}]\n      relabel_configs: [{source_labels: [__address__], regex: '(', action: keep}]\n",
		"identity: a-0\nnamespace: ns\nconfig: {global: {scrape_interval: -1s}}\n",
		"collector_selector: {matchLabels: {a: b}}\n",
		"listen_addr: ':9090'\nendpoint: ':9091'\nhttps: {enabled: true, listen_addr: ':8443'}\ncollector_not_ready_grace_period: 30s\ntelemetry: {metrics: {}}\n",
		"identity: a-0\nnamespace: ns\nkube_config_file_path: /nonexistent\nconfig: {alerting: {}, rule_files: [x]}\n",
		"identity: a-0\nnamespace: ns\nprometheus_cr: {enabled: true, scrape_protocols: [X], scrape_classes: [{name: a, relabelings: x}], secret_namespaces: [B], pod_monitor_selector: null}\n",
		"endpoint: ''\nadvertise: ':'\n",
		"identity: a-0\nnamespace: ns\nprometheus_cr: {enabled: true, scrape_interval: 5s, allow_namespaces: [a], service_monitor_selector: {matchlabels: {a: b}}}\n",
		"identity: a-0\nnamespace: ns\nprometheus_cr: {enabled: true, deny_namespaces: ['', B], pod_monitor_selector: {matchExpressions: [{key: '', operator: Exists, values: [x]}]}}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var raw map[string]any
		if yaml.Unmarshal(data, &raw) != nil {
			return
		}
		cfg := createDefaultConfig().(*Config)
		if confmap.NewFromStringMap(raw).Unmarshal(cfg) != nil {
			return
		}
		if cfg.Validate() == nil {
			_, _ = cfg.resolve(pod("otcta-collector-0"))
		}
	})
}
