package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/embedded-ta/embedded-ta/internal/userdocs"
)

// podEnv are the values a pod of the examples' StatefulSet has for the
// variables the docs' configurations read.
var podEnv = map[string]string{
	"POD_NAME":      "otcta-collector-0",
	"POD_NAMESPACE": "otctargetallocator",
	"POD_IP":        "10.0.0.10",
	"NODE_NAME":     "node-a",
}

// collectorSections are the top-level keys of a collector configuration.
var collectorSections = []string{"receivers", "processors", "exporters", "connectors", "extensions", "service"}

// manifestKeys start a Kubernetes manifest or a part of one shown alone (a
// Role's rules, a kustomization's components).
var manifestKeys = []string{"apiVersion", "kind", "metadata", "spec", "rules", "subjects", "resources", "components"}

// Every YAML block of the docs a user reads (README.md, docs/*.md, the
// components' READMEs) that is a collector configuration validates with
// otelcol-embedded-ta, as it is pasted. Which blocks are configurations
// (docConfigs):
//   - a document with a collector section at its top (receivers, processors,
//     exporters, connectors, extensions, service);
//   - the spec.config of a Kubernetes object (an OpenTelemetryCollector);
//   - a document whose only key is target_allocator or prometheus_allocated:
//     that component's settings, put under extensions or receivers.
//
// One with `service::pipelines` validates as it is. One without shows
// components in place, and completeConfig adds the rest: a metrics pipeline
// from every receiver it defines (prometheus_allocated, with
// target_allocator, when it defines none) through its processors to its
// exporters (`debug` when it defines none), and, when it has no `service`
// at all, one that enables every extension it defines.
//
// Every other YAML block must be a Kubernetes manifest or part of one (it
// starts with one of manifestKeys): a configuration fragment that starts
// deeper (an indented `prometheus_cr:`) fails here rather than going
// unchecked. The variables a configuration reads get a pod's values
// (podEnv), and validate runs where there is no pod otherwise: no
// POD_NAME, no service account, no kubeconfig (a laptop, CI), since the
// defaults from the pod are resolved when the collector starts. A token
// file (`bearer_token_file`, bearertokenauth's `filename`) is read by
// validate, and a pod's path is not here: the test writes a token and
// points the key at it (tokenFiles).
func TestDocConfigsValidate(t *testing.T) {
	root, err := userdocs.Root()
	require.NoError(t, err)
	docs, err := userdocs.Files(root)
	require.NoError(t, err)
	configs := 0
	for _, doc := range docs {
		raw, err := os.ReadFile(filepath.Join(root, doc))
		require.NoError(t, err)
		blocks, _ := userdocs.Blocks(string(raw))
		for _, b := range blocks {
			if b.Lang != "yaml" && b.Lang != "yml" {
				continue
			}
			name := fmt.Sprintf("%s:%d", doc, b.Line)
			found, err := docConfigs(b.Text)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			for i, cfg := range found {
				configs++
				t.Run(fmt.Sprintf("%s/%d", strings.ReplaceAll(name, "/", "_"), i), func(t *testing.T) {
					validateDocConfig(t, cfg)
				})
			}
		}
	}
	assert.GreaterOrEqual(t, configs, 10, "configurations found in the docs")
}

// docConfigs are the collector configurations of a YAML block, completed.
func docConfigs(block string) ([]map[string]any, error) {
	var configs []map[string]any
	for n, text := range strings.Split("\n"+block, "\n---\n") {
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			return nil, fmt.Errorf("document %d is not a YAML mapping: %w", n, err)
		}
		if len(doc) == 0 {
			continue
		}
		keys := make([]string, 0, len(doc))
		for k := range doc {
			keys = append(keys, k)
		}
		switch {
		case slices.ContainsFunc(keys, func(k string) bool { return slices.Contains(collectorSections, k) }):
			configs = append(configs, completeConfig(doc))
		case len(keys) == 1 && keys[0] == "target_allocator":
			configs = append(configs, completeConfig(map[string]any{"extensions": doc}))
		case len(keys) == 1 && keys[0] == "prometheus_allocated":
			configs = append(configs, completeConfig(map[string]any{"receivers": doc}))
		case slices.ContainsFunc(keys, func(k string) bool { return slices.Contains(manifestKeys, k) }):
			if spec, ok := doc["spec"].(map[string]any); ok {
				if cfg, ok := spec["config"].(map[string]any); ok {
					configs = append(configs, completeConfig(cfg))
				}
			}
		default:
			return nil, fmt.Errorf("document %d (keys %v) is neither a collector configuration nor a Kubernetes manifest: "+
				"start a configuration at its section (extensions:, receivers:, ...) or at target_allocator: or prometheus_allocated:", n, keys)
		}
	}
	return configs, nil
}

// completeConfig adds pipelines, and a service, to a configuration that has
// none (see TestDocConfigsValidate); one with pipelines is left as it is.
func completeConfig(cfg map[string]any) map[string]any {
	service, hasService := cfg["service"].(map[string]any)
	if _, ok := service["pipelines"]; ok {
		return cfg
	}
	section := func(name string) map[string]any {
		s, _ := cfg[name].(map[string]any)
		if s == nil {
			s = map[string]any{}
			cfg[name] = s
		}
		return s
	}
	names := func(s map[string]any) []string {
		var out []string
		for k := range s {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	extensions, receivers, exporters := section("extensions"), section("receivers"), section("exporters")
	if len(receivers) == 0 {
		receivers["prometheus_allocated"] = map[string]any{}
	}
	if _, ok := receivers["prometheus_allocated"]; ok {
		if _, ok := extensions["target_allocator"]; !ok {
			extensions["target_allocator"] = map[string]any{}
		}
	}
	if len(exporters) == 0 {
		exporters["debug"] = map[string]any{}
	}
	pipeline := map[string]any{"receivers": names(receivers), "exporters": names(exporters)}
	if processors, _ := cfg["processors"].(map[string]any); len(processors) > 0 {
		pipeline["processors"] = names(processors)
	}
	if !hasService {
		service = map[string]any{"extensions": names(extensions)}
		cfg["service"] = service
	}
	service["pipelines"] = map[string]any{"metrics": pipeline}
	return cfg
}

var envRef = regexp.MustCompile(`\$\{env:([A-Za-z_][A-Za-z0-9_]*)`)

// validateDocConfig runs `otelcol-embedded-ta validate` on cfg, outside a
// pod but for the variables cfg reads.
func validateDocConfig(t *testing.T, cfg map[string]any) {
	t.Helper()
	tokenFiles(t, cfg)
	b, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, b, 0o600))

	env := []string{"KUBECONFIG=" + filepath.Join(t.TempDir(), "nonexistent")}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if _, pod := podEnv[name]; !pod && !strings.HasPrefix(name, "KUBERNETES_") && name != "KUBECONFIG" {
			env = append(env, kv)
		}
	}
	for _, m := range envRef.FindAllStringSubmatch(string(b), -1) {
		value, ok := podEnv[m[1]]
		if !assert.True(t, ok, "the configuration reads ${env:%s}: give it a plausible value in podEnv", m[1]) {
			continue
		}
		env = append(env, m[1]+"="+value)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, otelcol, "validate", "--config", path)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	assert.NoError(t, err, "otelcol-embedded-ta validate:\n%s\nof:\n%s", out, b)
}

// tokenFiles points every token file of cfg that does not exist here at a
// file with a token.
func tokenFiles(t *testing.T, node any) {
	t.Helper()
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			if p, ok := v.(string); ok && (k == "bearer_token_file" || k == "filename") {
				if _, err := os.Stat(p); err != nil {
					token := filepath.Join(t.TempDir(), "token")
					require.NoError(t, os.WriteFile(token, []byte("a-token\n"), 0o600))
					n[k] = token
				}
				continue
			}
			tokenFiles(t, v)
		}
	case []any:
		for _, v := range n {
			tokenFiles(t, v)
		}
	}
}
