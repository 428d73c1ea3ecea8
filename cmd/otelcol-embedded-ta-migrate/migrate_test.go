package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/promcr"
	"github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver"
)

// command runs otelcol-embedded-ta-migrate as a user would, in process.
func command(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

// documents parses a YAML stream.
func documents(t *testing.T, stream string) []map[string]any {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	var docs []map[string]any
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, yaml.Unmarshal(raw, &m))
		if m != nil {
			docs = append(docs, m)
		}
	}
}

// kindName is "Kind/name" or "Kind/namespace/name".
func kindName(doc map[string]any) string {
	return doc["kind"].(string) + "/" + objectName(doc)
}

// get walks a path of object keys: nil where one is absent.
func get(t *testing.T, m map[string]any, path ...string) any {
	t.Helper()
	var cur any = m
	for _, k := range path {
		if cur == nil {
			return nil
		}
		obj, ok := cur.(map[string]any)
		require.True(t, ok, "%s is not an object", strings.Join(path, "."))
		cur = obj[k]
	}
	return cur
}

// loaded is the generated collector configuration as the collector loads
// it: resolved (${env:...} and $$), the target_allocator extension and the
// prometheus_allocated receiver unmarshalled by their factories' configs
// and validated.
type loaded struct {
	conf      *confmap.Conf
	extension *targetallocatorextension.Config
	receiver  *prometheusallocatedreceiver.Config
}

func load(t *testing.T, collector map[string]any) loaded {
	t.Helper()
	for k, v := range map[string]string{"POD_NAME": "c-collector-0", "POD_NAMESPACE": "ns", "POD_IP": "10.0.0.1", "NODE_NAME": "node-a"} {
		t.Setenv(k, v)
	}
	b, err := yaml.Marshal(get(t, collector, "spec", "config"))
	require.NoError(t, err)
	resolver, err := confmap.NewResolver(confmap.ResolverSettings{
		URIs:              []string{"yaml:" + string(b)},
		ProviderFactories: []confmap.ProviderFactory{yamlprovider.NewFactory(), envprovider.NewFactory()},
		DefaultScheme:     "env",
	})
	require.NoError(t, err)
	conf, err := resolver.Resolve(context.Background())
	require.NoError(t, err)

	l := loaded{conf: conf}
	l.extension = targetallocatorextension.NewFactory().CreateDefaultConfig().(*targetallocatorextension.Config)
	sub, err := conf.Sub("extensions::target_allocator")
	require.NoError(t, err)
	require.NoError(t, sub.Unmarshal(l.extension))
	require.NoError(t, confmap.Validate(l.extension), "the target_allocator extension refuses the generated configuration")

	l.receiver = prometheusallocatedreceiver.NewFactory().CreateDefaultConfig().(*prometheusallocatedreceiver.Config)
	sub, err = conf.Sub("receivers::prometheus_allocated")
	require.NoError(t, err)
	require.NoError(t, sub.Unmarshal(l.receiver))
	require.NoError(t, confmap.Validate(l.receiver), "the prometheus_allocated receiver refuses the generated configuration")
	return l
}

// jobNames are the jobs of a configuration's scrape_configs, as Prometheus
// loads them.
func jobNames(t *testing.T, cfg map[string]any) []string {
	t.Helper()
	prom, err := discovery.LoadConfig(cfg)
	require.NoError(t, err)
	var names []string
	for _, sc := range prom.ScrapeConfigs {
		names = append(names, sc.JobName)
	}
	return names
}

// migration is one realistic input and what its output must hold.
type migration struct {
	file      string
	collector string   // the migrated collector, namespace/name
	mode      string   // its mode afterwards
	jobs      []string // the jobs the extension loads
	strategy  string
	crd       *promcr.Config // prometheus_cr as the extension loads it; nil: off
	rbac      []string       // Kind/namespace/name of every RBAC object, in order
	others    []string       // documents printed unchanged
	notes     []string       // on stderr
}

var migrations = []migration{
	{
		file:      "statefulset.yaml",
		collector: "observability/metrics",
		mode:      "statefulset",
		jobs:      []string{"annotated-pods", "gateway"},
		strategy:  "least-weighted",
		rbac:      []string{"Role/observability/metrics-collector-embedded-ta", "RoleBinding/observability/metrics-collector-embedded-ta"},
		notes: []string{
			"spec.targetAllocator.{replicas, resources} left out",
			"receivers::prometheus::{api_server} left out",
			"bound to service account metrics-collector",
		},
	},
	{
		file:      "prometheus-cr.yaml",
		collector: "monitoring/prom",
		mode:      "statefulset",
		jobs:      []string{"kubernetes-services", "apps-pods"},
		strategy:  "consistent-hashing",
		crd: &promcr.Config{
			Enabled:                         true,
			ScrapeInterval:                  30 * time.Second,
			EvaluationInterval:              time.Minute,
			DenyNamespaces:                  []string{"kube-system"},
			ServiceMonitorSelector:          &promcr.LabelSelector{MatchLabels: map[string]string{"release": "prom"}},
			ServiceMonitorNamespaceSelector: &promcr.LabelSelector{MatchExpressions: []promcr.LabelSelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: "NotIn", Values: []string{"kube-system"}}}},
			PodMonitorSelector:              &promcr.LabelSelector{},
			PodMonitorNamespaceSelector:     &promcr.LabelSelector{},
		},
		rbac: []string{
			"Role/monitoring/otel-prom-embedded-ta", "RoleBinding/monitoring/otel-prom-embedded-ta",
			"Role/apps/otel-prom-embedded-ta-discovery", "RoleBinding/apps/otel-prom-embedded-ta-discovery",
			"ClusterRole/monitoring-otel-prom-embedded-ta-discovery", "ClusterRoleBinding/monitoring-otel-prom-embedded-ta-discovery",
			"ClusterRole/monitoring-otel-prom-embedded-ta-prometheus-cr", "ClusterRoleBinding/monitoring-otel-prom-embedded-ta-prometheus-cr",
		},
		notes: []string{
			"spec.targetAllocator.{image, serviceAccount} left out",
			"prometheusCR.{probeSelector, scrapeConfigSelector} not set",
			"receivers::prometheus::target_allocator::{collector_id, endpoint, interval} left out",
			"bound to service account otel-prom",
		},
	},
	{
		file:      "daemonset.yaml",
		collector: "agents/node-agent",
		mode:      "daemonset",
		jobs:      []string{"kubelet", "node-pods"},
		strategy:  "per-node",
		crd: &promcr.Config{
			Enabled:            true,
			ScrapeInterval:     30 * time.Second,
			PodMonitorSelector: &promcr.LabelSelector{MatchLabels: map[string]string{"scope": "node"}},
		},
		rbac: []string{
			"Role/agents/node-agent-collector-embedded-ta", "RoleBinding/agents/node-agent-collector-embedded-ta",
			"ClusterRole/agents-node-agent-collector-embedded-ta-discovery", "ClusterRoleBinding/agents-node-agent-collector-embedded-ta-discovery",
			"ClusterRole/agents-node-agent-collector-embedded-ta-prometheus-cr", "ClusterRoleBinding/agents-node-agent-collector-embedded-ta-prometheus-cr",
		},
	},
	{
		file:      "bundle.yaml",
		collector: "telemetry/scraper",
		mode:      "statefulset",
		strategy:  "consistent-hashing",
		crd: &promcr.Config{
			Enabled:                true,
			ScrapeInterval:         30 * time.Second,
			ServiceMonitorSelector: &promcr.LabelSelector{},
		},
		rbac: []string{
			"Role/telemetry/scraper-collector-embedded-ta", "RoleBinding/telemetry/scraper-collector-embedded-ta",
			"ClusterRole/telemetry-scraper-collector-embedded-ta-prometheus-cr", "ClusterRoleBinding/telemetry-scraper-collector-embedded-ta-prometheus-cr",
		},
		others: []string{"OpenTelemetryCollector/telemetry/gateway", "ConfigMap/telemetry/dashboards"},
		notes: []string{
			"OpenTelemetryCollector telemetry/gateway: spec.targetAllocator.enabled is not true, nothing to migrate: printed unchanged",
			"ConfigMap telemetry/dashboards is not an OpenTelemetryCollector: printed unchanged",
			"status and the metadata the API server sets are left out",
		},
	},
}

// The operator path, as a user takes it: an OpenTelemetryCollector that
// runs with the Target Allocator in, the same scrape work with embedded-ta
// out. The generated configuration loads with the real target_allocator
// and prometheus_allocated configs: the jobs of the prometheus receiver
// and the Target Allocator's settings are the extension's.
func TestMigrate(t *testing.T) {
	for _, m := range migrations {
		t.Run(m.file, func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join("testdata", m.file))
			require.NoError(t, err)
			before := documents(t, string(in))

			stdout, stderr, code := command(t, "", filepath.Join("testdata", m.file))
			require.Equal(t, 0, code, stderr)
			t.Logf("stderr:\n%s", stderr)
			for _, n := range m.notes {
				assert.Contains(t, stderr, n)
			}
			docs := documents(t, stdout)

			var collector map[string]any
			var rbac, others []string
			for _, d := range docs {
				switch {
				case kindName(d) == "OpenTelemetryCollector/"+m.collector:
					require.Nil(t, collector, "the collector printed twice")
					collector = d
				case get(t, d, "apiVersion") == rbacv1.SchemeGroupVersion.String():
					rbac = append(rbac, kindName(d))
				default:
					others = append(others, kindName(d))
				}
			}
			require.NotNil(t, collector, "no OpenTelemetryCollector %s in the output", m.collector)
			assert.Equal(t, m.rbac, rbac, "RBAC objects")
			assert.Equal(t, m.others, others, "documents printed unchanged")

			spec := get(t, collector, "spec").(map[string]any)
			assert.Equal(t, defaultImage, spec["image"])
			assert.Equal(t, map[string]any{"enabled": false}, spec["targetAllocator"])
			assert.Equal(t, m.mode, spec["mode"])
			assert.Nil(t, collector["status"])
			for _, k := range []string{"resourceVersion", "uid", "generation", "creationTimestamp"} {
				assert.Nil(t, get(t, collector, "metadata", k), "metadata.%s", k)
			}
			var env []string
			for _, e := range spec["env"].([]any) {
				entry := e.(map[string]any)
				if path, ok := get(t, entry, "valueFrom", "fieldRef", "fieldPath").(string); ok {
					env = append(env, entry["name"].(string)+"="+path)
				}
			}
			assert.Subset(t, env, []string{"POD_NAME=metadata.name", "POD_NAMESPACE=metadata.namespace", "POD_IP=status.podIP", "NODE_NAME=spec.nodeName"})
			assert.Contains(t, spec["ports"], map[string]any{"name": "allocator", "port": float64(allocatorPort)})

			// Every pipeline that used prometheus uses prometheus_allocated,
			// and nothing else changed in the pipelines.
			cfg := spec["config"].(map[string]any)
			assert.NotContains(t, cfg["receivers"], "prometheus")
			assert.Contains(t, cfg["receivers"], "prometheus_allocated")
			assert.Contains(t, get(t, cfg, "service", "extensions"), "target_allocator")
			var original map[string]any
			for _, d := range before {
				if kindName(d) == "OpenTelemetryCollector/"+m.collector {
					original = d
				}
			}
			beforePipelines := get(t, original, "spec", "config", "service", "pipelines").(map[string]any)
			afterPipelines := get(t, cfg, "service", "pipelines").(map[string]any)
			require.Equal(t, sortedKeys(beforePipelines), sortedKeys(afterPipelines))
			for id, p := range beforePipelines {
				want := slices.Clone(p.(map[string]any)["receivers"].([]any))
				for i, r := range want {
					if r == "prometheus" {
						want[i] = "prometheus_allocated"
					}
				}
				assert.Equal(t, want, get(t, afterPipelines, id, "receivers"), "pipeline %s", id)
			}

			// The real config loaders take it, and hold the TA's settings
			// and the receiver's jobs.
			l := load(t, collector)
			assert.Equal(t, m.strategy, l.extension.AllocationStrategy)
			require.NotNil(t, l.extension.FilterStrategy)
			assert.Equal(t, "relabel-config", *l.extension.FilterStrategy)
			assert.Equal(t, m.jobs, jobNames(t, l.extension.Config))
			if m.crd != nil {
				assert.Equal(t, *m.crd, l.extension.PrometheusCR)
			} else {
				assert.False(t, l.extension.PrometheusCR.Enabled)
			}
			if m.mode == "daemonset" {
				assert.Equal(t, strings.TrimPrefix(m.collector, "agents/")+"-collector", l.extension.Group, "DaemonSet pods have no ordinal")
			} else {
				assert.Empty(t, l.extension.Group, "the group comes from the StatefulSet's pod names")
			}
		})
	}
}

// The scrape configs arrive as the receiver had them: the relabeling's $$
// is the collector's escape for $, and the extension sees $, as the
// prometheus receiver did.
func TestScrapeConfigsKeepTheirMeaning(t *testing.T) {
	stdout, stderr, code := command(t, "", "testdata/statefulset.yaml")
	require.Equal(t, 0, code, stderr)
	collector := documents(t, stdout)[0]
	l := load(t, collector)
	prom, err := discovery.LoadConfig(l.extension.Config)
	require.NoError(t, err)
	require.Len(t, prom.ScrapeConfigs, 2)
	assert.Equal(t, "15s", prom.GlobalConfig.ScrapeInterval.String(), "config::global carried over")
	pods := prom.ScrapeConfigs[0]
	assert.Equal(t, "15s", pods.ScrapeInterval.String())
	assert.Equal(t, "$2:$1", pods.RelabelConfigs[1].Replacement)
	assert.Equal(t, "30s", prom.ScrapeConfigs[1].ScrapeInterval.String())
	assert.True(t, l.receiver.TrimMetricSuffixes, "trim_metric_suffixes carried over")
}

// The receiver's http_sd_config refresh carries over; what the operator
// wrote into its target_allocator settings does not.
func TestReceiverSettings(t *testing.T) {
	stdout, stderr, code := command(t, "", "testdata/prometheus-cr.yaml")
	require.Equal(t, 0, code, stderr)
	l := load(t, documents(t, stdout)[0])
	assert.Equal(t, time.Minute, l.receiver.HTTPSDConfig.RefreshInterval)
	assert.Equal(t, 30*time.Second, l.receiver.Interval)
	assert.Equal(t, "target_allocator", l.receiver.Allocator.String())
}

// Documents that are not migrated come out exactly as they went in.
func TestOtherDocumentsUnchanged(t *testing.T) {
	in, err := os.ReadFile("testdata/bundle.yaml")
	require.NoError(t, err)
	stdout, stderr, code := command(t, string(in))
	require.Equal(t, 0, code, stderr)
	parts := strings.Split(string(in), "\n---\n")
	require.Len(t, parts, 3)
	assert.True(t, strings.HasPrefix(stdout, parts[0]+"\n---\n"), "the gateway collector, first and unchanged")
	assert.True(t, strings.HasSuffix(stdout, "\n---\n"+parts[2]), "the ConfigMap, last and unchanged, with its comment")
}

// `kubectl get opentelemetrycollectors -o yaml` prints a List: its
// collectors are migrated, its other items printed as they were.
func TestList(t *testing.T) {
	in, err := os.ReadFile("testdata/statefulset.yaml")
	require.NoError(t, err)
	var collector map[string]any
	require.NoError(t, yaml.Unmarshal(in, &collector))
	list, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{
		collector,
		map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "x", "namespace": "observability"}},
	}})
	require.NoError(t, err)
	stdout, stderr, code := command(t, string(list))
	require.Equal(t, 0, code, stderr)
	var kinds []string
	for _, d := range documents(t, stdout) {
		kinds = append(kinds, kindName(d))
	}
	assert.Equal(t, []string{"OpenTelemetryCollector/observability/metrics", "Role/observability/metrics-collector-embedded-ta",
		"RoleBinding/observability/metrics-collector-embedded-ta", "ConfigMap/observability/x"}, kinds)
}

// A collector without metadata.namespace takes -namespace; without either,
// what lives in its own namespace needs none.
func TestNamespace(t *testing.T) {
	in, err := os.ReadFile("testdata/statefulset.yaml")
	require.NoError(t, err)
	input := strings.Replace(string(in), "  namespace: observability\n", "", 1)

	stdout, stderr, code := command(t, input, "-namespace", "observability")
	require.Equal(t, 0, code, stderr)
	docs := documents(t, stdout)
	assert.Equal(t, "observability", get(t, docs[0], "metadata", "namespace"))
	assert.Equal(t, "observability", get(t, docs[2], "subjects").([]any)[0].(map[string]any)["namespace"])

	stdout, stderr, code = command(t, input)
	require.Equal(t, 0, code, stderr)
	docs = documents(t, stdout)
	assert.Nil(t, get(t, docs[0], "metadata", "namespace"))
	assert.Equal(t, map[string]any{"kind": "ServiceAccount", "name": "metrics-collector"}, get(t, docs[2], "subjects").([]any)[0],
		"a RoleBinding's subject without a namespace is in the binding's")
}

// Bad input fails with a message that names what is wrong, exit code 1
// and nothing on stdout.
func TestBadInput(t *testing.T) {
	const collector = `apiVersion: opentelemetry.io/v1beta1
kind: OpenTelemetryCollector
metadata: {name: c}
spec:
  mode: %s
  targetAllocator: {enabled: %s}
  config:
    receivers:
      %s: {config: {scrape_configs: [{job_name: a, static_configs: [{targets: ["x:1"]}]}]}}
    exporters: {debug: {}}
    service: {pipelines: {metrics: {receivers: [%[3]s], exporters: [debug]}}}
`
	for _, tc := range []struct {
		name, input string
		args        []string
		want        string
	}{
		{"not a collector", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
			nil, "no OpenTelemetryCollector with spec.targetAllocator.enabled: true in the input (Deployment web is not an OpenTelemetryCollector)"},
		{"Target Allocator not enabled", fmt.Sprintf(collector, "statefulset", "false", "prometheus"),
			nil, "OpenTelemetryCollector c: spec.targetAllocator.enabled is not true, nothing to migrate"},
		{"v1alpha1", "apiVersion: opentelemetry.io/v1alpha1\nkind: OpenTelemetryCollector\nmetadata: {name: c}\nspec:\n  targetAllocator: {enabled: true}\n  config: |\n    receivers: {}\n",
			nil, "OpenTelemetryCollector c is opentelemetry.io/v1alpha1: only opentelemetry.io/v1beta1 is read (its spec.config is an object); the operator converts it: kubectl get opentelemetrycollectors.v1beta1.opentelemetry.io c -o yaml"},
		{"v1beta1 with a string config", "apiVersion: opentelemetry.io/v1beta1\nkind: OpenTelemetryCollector\nmetadata: {name: c}\nspec:\n  mode: statefulset\n  targetAllocator: {enabled: true}\n  config: |\n    receivers: {}\n",
			nil, "OpenTelemetryCollector c: spec.config is a string: opentelemetry.io/v1beta1 holds the collector configuration as an object"},
		{"no prometheus receiver", fmt.Sprintf(collector, "statefulset", "true", "otlp"),
			nil, "OpenTelemetryCollector c: spec.config.receivers has no prometheus receiver, the one the operator's Target Allocator serves"},
		{"sidecar", fmt.Sprintf(collector, "sidecar", "true", "prometheus"),
			nil, "OpenTelemetryCollector c: spec.mode is sidecar"},
		{"prometheus_cr without a namespace", strings.Replace(fmt.Sprintf(collector, "statefulset", "true", "prometheus"), "{enabled: true}", "{enabled: true, prometheusCR: {enabled: true}}", 1),
			nil, "OpenTelemetryCollector c: the ClusterRoleBinding for prometheus_cr must name the service account's namespace: set metadata.namespace or -namespace"},
		{"namespaces disagree", strings.Replace(fmt.Sprintf(collector, "statefulset", "true", "prometheus"), "{name: c}", "{name: c, namespace: a}", 1),
			[]string{"-namespace", "b"}, "OpenTelemetryCollector a/c: metadata.namespace is a, -namespace says b"},
		{"not YAML", "kind: [", nil, "document 1: error converting YAML to JSON"},
		{"nothing", "# only a comment\n", nil, "no YAML document in the input"},
		{"no such file", "", []string{"testdata/none.yaml"}, "open testdata/none.yaml: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := command(t, tc.input, tc.args...)
			assert.Equal(t, 1, code)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, tc.want)
		})
	}
}

// The default image is the one `make image` builds.
func TestDefaultImageIsTheMakefiles(t *testing.T) {
	mk, err := os.ReadFile("../../Makefile")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^IMAGE \?= (\S+)$`).FindSubmatch(mk)
	require.NotNil(t, m, "no IMAGE in the Makefile")
	assert.Equal(t, string(m[1]), defaultImage)
}

// distribution lists what builder-config.yaml builds: each component's
// type and deprecated alias, from its metadata.yaml.
func TestDistributionIsTheBuildersConfig(t *testing.T) {
	raw, err := os.ReadFile("../../builder-config.yaml")
	require.NoError(t, err)
	type component struct {
		GoMod  string `json:"gomod"`
		Import string `json:"import"`
	}
	var b struct {
		Extensions, Receivers, Processors, Exporters, Connectors []component
	}
	require.NoError(t, yaml.Unmarshal(raw, &b))
	builder := map[string][]component{"extensions": b.Extensions, "receivers": b.Receivers,
		"processors": b.Processors, "exporters": b.Exporters, "connectors": b.Connectors}
	for _, kind := range sortedKeys(distribution) {
		var types []string
		for _, c := range builder[kind] {
			module, version, _ := strings.Cut(c.GoMod, " ")
			pkg := c.Import
			if pkg == "" {
				pkg = module
			}
			var dir string
			if module == "github.com/embedded-ta/embedded-ta" {
				dir = filepath.Join("../..", strings.TrimPrefix(pkg, module))
			} else {
				out, err := exec.Command("go", "mod", "download", "-json", module+"@"+version).Output()
				require.NoError(t, err, "go mod download %s@%s", module, version)
				var mod struct{ Dir string }
				require.NoError(t, json.Unmarshal(out, &mod))
				dir = filepath.Join(mod.Dir, strings.TrimPrefix(pkg, module))
			}
			b, err := os.ReadFile(filepath.Join(dir, "metadata.yaml"))
			require.NoError(t, err)
			var meta struct {
				Type           string `json:"type"`
				DeprecatedType string `json:"deprecated_type"`
			}
			require.NoError(t, yaml.Unmarshal(b, &meta))
			types = append(types, meta.Type)
			if meta.DeprecatedType != "" {
				types = append(types, meta.DeprecatedType)
			}
		}
		assert.ElementsMatch(t, types, distribution[kind], kind)
	}
}

// A component the default image does not have is a warning; with an image
// of one's own, the command cannot know and says nothing.
func TestComponentsOutsideTheDistribution(t *testing.T) {
	in, err := os.ReadFile("testdata/statefulset.yaml")
	require.NoError(t, err)
	input := strings.Replace(string(in), "      batch: {}\n", "      batch: {}\n      k8sattributes: {}\n", 1)
	_, stderr, code := command(t, input)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "warning: processors::k8sattributes: k8sattributes is not part of otelcol-embedded-ta (builder-config.yaml)")
	_, stderr, code = command(t, input, "-image", "registry.example.com/otelcol-custom:1")
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stderr, "k8sattributes")
}

// The RBAC is the examples': the Role's Lease rule (examples/rbac), and the
// ClusterRole of examples/rbac-prometheus-cr.
func TestRBACIsTheExamples(t *testing.T) {
	read := func(path, kind string) []rbacv1.PolicyRule {
		raw, err := os.ReadFile(path)
		require.NoError(t, err)
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			var role rbacv1.ClusterRole // a Role's rules read the same
			require.NoError(t, yaml.Unmarshal([]byte(doc), &role))
			if role.Kind == kind {
				return role.Rules
			}
		}
		t.Fatalf("no %s in %s", kind, path)
		return nil
	}
	assert.Contains(t, read("../../examples/rbac/rbac.yaml", "Role"), leaseRule)
	assert.Equal(t, read("../../examples/rbac-prometheus-cr/rbac.yaml", "ClusterRole"), prometheusCRRules)
}
