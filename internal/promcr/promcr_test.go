package promcr

import (
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus-operator/prometheus-operator/pkg/assets"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"off is never checked", Config{AllowNamespaces: []string{"a"}, DenyNamespaces: []string{"b"}}, ""},
		{"defaults", Config{Enabled: true}, ""},
		{"both lists", Config{Enabled: true, AllowNamespaces: []string{"a"}, DenyNamespaces: []string{"b"}}, "prometheus_cr::deny_namespaces: cannot be used with allow_namespaces"},
		{"bad namespace", Config{Enabled: true, DenyNamespaces: []string{"A"}}, `prometheus_cr::deny_namespaces: "A" is not a valid namespace`},
		{"negative interval", Config{Enabled: true, ScrapeInterval: -time.Second}, "prometheus_cr::scrape_interval: -1s must not be negative"},
		{"bad operator", Config{Enabled: true, ProbeSelector: &LabelSelector{MatchExpressions: []LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}},
			`prometheus_cr::probe_selector: "Near" is not a valid label selector operator`},
		{"bad label", Config{Enabled: true, ScrapeConfigNamespaceSelector: &LabelSelector{MatchLabels: map[string]string{"a b": "c"}}},
			"prometheus_cr::scrape_config_namespace_selector: "},
		{"negative evaluation interval", Config{Enabled: true, EvaluationInterval: -time.Second}, "prometheus_cr::evaluation_interval: -1s must not be negative"},
		{"protocols", Config{Enabled: true, ScrapeProtocols: []string{"PrometheusProto", "OpenMetricsText1.0.0"}}, ""},
		{"unknown protocol", Config{Enabled: true, ScrapeProtocols: []string{"PrometheusText9"}}, "prometheus_cr::scrape_protocols: unknown scrape protocol PrometheusText9"},
		{"bad secret namespace", Config{Enabled: true, SecretNamespaces: []string{"Apps"}}, `prometheus_cr::secret_namespaces: "Apps" is not a valid namespace`},
		{"scrape class", Config{Enabled: true, ScrapeClasses: []map[string]any{{"name": "a", "default": true, "relabelings": []any{map[string]any{"action": "labeldrop", "regex": "pod"}}}}}, ""},
		{"scrape class without a name", Config{Enabled: true, ScrapeClasses: []map[string]any{{"default": true}}}, "prometheus_cr::scrape_classes[0]: name must be set"},
		{"two default scrape classes", Config{Enabled: true, ScrapeClasses: []map[string]any{{"name": "a", "default": true}, {"name": "b", "default": true}}},
			"prometheus_cr::scrape_classes: failed to parse scrape classes: multiple default scrape classes defined"},
		{"scrape class with a bad relabeling", Config{Enabled: true, ScrapeClasses: []map[string]any{{"name": "a", "relabelings": []any{map[string]any{"action": "replace", "regex": "(", "targetLabel": "x"}}}}},
			"prometheus_cr::scrape_classes: "},
		{"scrape class of the wrong shape", Config{Enabled: true, ScrapeClasses: []map[string]any{{"name": "a", "relabelings": "drop"}}}, "prometheus_cr::scrape_classes: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

// A resource selector that is not set (absent or null) selects nothing, {}
// selects everything, as the Prometheus Operator's rule (and so the Target
// Allocator's); a namespace selector that is not set selects every namespace,
// the Target Allocator's default.
func TestSelectorMeaning(t *testing.T) {
	set := k8slabels.Set{"release": "my-instance"}
	selects := func(s *metav1.LabelSelector) bool {
		sel, err := metav1.LabelSelectorAsSelector(s)
		require.NoError(t, err)
		return sel.Matches(set)
	}
	unset := (&Config{}).prometheus("obs", "collector", nil).Spec
	assert.False(t, selects(unset.ServiceMonitorSelector))
	assert.False(t, selects(unset.PodMonitorSelector))
	assert.False(t, selects(unset.ProbeSelector))
	assert.False(t, selects(unset.ScrapeConfigSelector))
	assert.True(t, selects(unset.ServiceMonitorNamespaceSelector))
	assert.True(t, selects(unset.PodMonitorNamespaceSelector))
	assert.True(t, selects(unset.ProbeNamespaceSelector))
	assert.True(t, selects(unset.ScrapeConfigNamespaceSelector))

	empty := (&Config{
		ServiceMonitorSelector: &LabelSelector{}, PodMonitorSelector: &LabelSelector{},
		ProbeSelector: &LabelSelector{}, ScrapeConfigSelector: &LabelSelector{},
	}).prometheus("obs", "collector", nil).Spec
	assert.True(t, selects(empty.ServiceMonitorSelector))
	assert.True(t, selects(empty.PodMonitorSelector))
	assert.True(t, selects(empty.ProbeSelector))
	assert.True(t, selects(empty.ScrapeConfigSelector))

	other := &LabelSelector{MatchLabels: map[string]string{"release": "other"}}
	matching := &LabelSelector{MatchExpressions: []LabelSelectorRequirement{{Key: "release", Operator: "In", Values: []string{"my-instance"}}}}
	spec := (&Config{PodMonitorSelector: matching, PodMonitorNamespaceSelector: other}).prometheus("obs", "collector", nil).Spec
	assert.True(t, selects(spec.PodMonitorSelector))
	assert.False(t, selects(spec.PodMonitorNamespaceSelector))
}

// loadSection unmarshals a prometheus_cr section written in YAML as the
// collector's confmap does.
func loadSection(t *testing.T, doc string) (Config, error) {
	t.Helper()
	var raw map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(doc), &raw))
	var c Config
	err := confmap.NewFromStringMap(raw).Unmarshal(&c)
	return c, err
}

// The lower-case keys the OpenTelemetry Operator writes (yaml.v2 of a
// struct with JSON tags) and the camelCase keys of Kubernetes give the same
// selector; with both, camelCase counts, as in the Target Allocator. null
// and an absent key are both unset; {} is set and empty.
func TestSelectorSpellings(t *testing.T) {
	want := &LabelSelector{
		MatchLabels:      map[string]string{"release": "my-instance"},
		MatchExpressions: []LabelSelectorRequirement{{Key: "team", Operator: "In", Values: []string{"a", "b"}}},
	}
	for name, doc := range map[string]string{
		"lower-case": "pod_monitor_selector:\n  matchlabels: {release: my-instance}\n  matchexpressions: [{key: team, operator: In, values: [a, b]}]\n",
		"camelCase":  "pod_monitor_selector:\n  matchLabels: {release: my-instance}\n  matchExpressions: [{key: team, operator: In, values: [a, b]}]\n",
		"mixed":      "pod_monitor_selector:\n  matchlabels: {release: my-instance}\n  matchExpressions: [{key: team, operator: In, values: [a, b]}]\n",
		"both":       "pod_monitor_selector:\n  matchlabels: {release: old}\n  matchLabels: {release: my-instance}\n  matchexpressions: []\n  matchExpressions: [{key: team, operator: In, values: [a, b]}]\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := loadSection(t, doc)
			require.NoError(t, err)
			assert.Equal(t, want, c.PodMonitorSelector)
		})
	}
	for doc, wantSel := range map[string]*LabelSelector{
		"enabled: true\n":              nil,
		"pod_monitor_selector: null\n": nil,
		"pod_monitor_selector:\n":      nil,
		"pod_monitor_selector: {}\n":   {},
		"pod_monitor_selector: {matchlabels: {}, matchexpressions: []}\n": {MatchLabels: map[string]string{}, MatchExpressions: []LabelSelectorRequirement{}},
	} {
		c, err := loadSection(t, doc)
		require.NoError(t, err, doc)
		assert.Equal(t, wantSel, c.PodMonitorSelector, doc)
	}
}

// The operator's generator makes the Target Allocator's job names; the jobs
// load with Prometheus's loader, keep their targets (shard 0 of 1), carry
// the referenced Secret's values and the default interval, get the
// kubeconfig outside a cluster, and keep their config while unchanged.
func TestGeneratedJobs(t *testing.T) {
	w, err := New(Options{
		Config:    Config{Enabled: true, ScrapeInterval: 7 * time.Second},
		Namespace: "obs", Name: "collector",
		REST:           &rest.Config{Host: "http://127.0.0.1:1"},
		KubeconfigFile: "/home/u/.kube/config",
	})
	require.NoError(t, err)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "auth", Namespace: "app"},
		Data:       map[string][]byte{"user": []byte("scraper"), "password": []byte("hunter2")},
	}
	store := assets.NewTestStoreBuilder(secret)
	basicAuth := &monitoringv1.BasicAuth{
		Username: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "auth"}, Key: "user"},
		Password: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "auth"}, Key: "password"},
	}
	require.NoError(t, store.AddBasicAuth(t.Context(), "app", basicAuth))
	sm := &monitoringv1.ServiceMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app"},
		Spec: monitoringv1.ServiceMonitorSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Endpoints: []monitoringv1.Endpoint{{Port: "metrics"}, {Port: "admin", HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{
				HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{HTTPConfigWithoutTLS: monitoringv1.HTTPConfigWithoutTLS{BasicAuth: basicAuth}},
			}}},
		},
	}
	pm := &monitoringv1.PodMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: "app"},
		Spec: monitoringv1.PodMonitorSpec{
			Selector:            metav1.LabelSelector{MatchLabels: map[string]string{"app": "pods"}},
			PodMetricsEndpoints: []monitoringv1.PodMetricsEndpoint{{Port: new("metrics")}},
		},
	}
	generate := func() map[string]job {
		doc, err := w.gen.GenerateServerConfiguration(w.prom,
			map[string]*monitoringv1.ServiceMonitor{"app/web": sm}, map[string]*monitoringv1.PodMonitor{"app/pods": pm},
			nil, nil, store, nil, nil, nil, nil)
		require.NoError(t, err)
		jobs, err := w.parse(doc, map[string]string{})
		require.NoError(t, err)
		return jobs
	}
	jobs := generate()
	require.Len(t, jobs, 3)
	require.Contains(t, jobs, "serviceMonitor/app/web/0")
	require.Contains(t, jobs, "serviceMonitor/app/web/1")
	require.Contains(t, jobs, "podMonitor/app/pods/0")

	admin := jobs["serviceMonitor/app/web/1"].sc
	assert.Equal(t, "scraper", admin.HTTPClientConfig.BasicAuth.Username)
	assert.Equal(t, "hunter2", string(admin.HTTPClientConfig.BasicAuth.Password))
	assert.Equal(t, "7s", admin.ScrapeInterval.String())

	pods := jobs["podMonitor/app/pods/0"].sc
	require.Len(t, pods.ServiceDiscoveryConfigs, 1)
	sd := pods.ServiceDiscoveryConfigs[0].(*kubernetes.SDConfig)
	assert.Equal(t, "/home/u/.kube/config", sd.KubeConfig)
	assert.Equal(t, []string{"app"}, sd.NamespaceDiscovery.Names)

	// A pod the PodMonitor selects survives the job's relabelings, shard
	// rules included.
	target := labels.FromStrings(
		"__address__", "10.0.0.1:9100",
		"__meta_kubernetes_namespace", "app",
		"__meta_kubernetes_pod_name", "p",
		"__meta_kubernetes_pod_label_app", "pods",
		"__meta_kubernetes_pod_labelpresent_app", "true",
		"__meta_kubernetes_pod_container_port_name", "metrics",
		"__meta_kubernetes_pod_phase", "Running",
	)
	keep := relabel.ProcessBuilder(labels.NewBuilder(target), pods.RelabelConfigs...)
	assert.True(t, keep, "the PodMonitor's own pod is dropped by %v", pods.RelabelConfigs)
	other := labels.NewBuilder(target).Set("__meta_kubernetes_pod_label_app", "other").Labels()
	keep = relabel.ProcessBuilder(labels.NewBuilder(other), pods.RelabelConfigs...)
	assert.False(t, keep)

	// Unchanged jobs keep their config (and so their discovery).
	again := generate()
	for name, j := range again {
		assert.Equal(t, jobs[name].doc, j.doc, name)
	}
}

// newTestWatcher is a Watcher of group obs/collector that reaches no API
// server: the tests generate and parse jobs themselves.
func newTestWatcher(t *testing.T, c Config) *Watcher {
	t.Helper()
	c.Enabled = true
	require.NoError(t, c.Validate())
	w, err := New(Options{Config: c, Namespace: "obs", Name: "collector", REST: &rest.Config{Host: "http://127.0.0.1:1"}})
	require.NoError(t, err)
	return w
}

func podMonitor(name string, endpoint monitoringv1.PodMetricsEndpoint) *monitoringv1.PodMonitor {
	return &monitoringv1.PodMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "app"},
		Spec: monitoringv1.PodMonitorSpec{
			Selector:            metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			PodMetricsEndpoints: []monitoringv1.PodMetricsEndpoint{endpoint},
		},
	}
}

// scrape_protocols and scrape_classes shape the generated jobs as the
// Prometheus Operator's generator does for a Prometheus object with them:
// the protocols of every job (the Target Allocator's list by default), a
// default class's relabelings in the jobs of resources that name no class,
// a named class's in those that name it.
func TestScrapeProtocolsAndClasses(t *testing.T) {
	generate := func(w *Watcher, pms ...*monitoringv1.PodMonitor) map[string]job {
		t.Helper()
		m := map[string]*monitoringv1.PodMonitor{}
		for _, pm := range pms {
			m[pm.Namespace+"/"+pm.Name] = pm
		}
		doc, err := w.gen.GenerateServerConfiguration(w.prom, nil, m, nil, nil, assets.NewTestStoreBuilder(), nil, nil, nil, nil)
		require.NoError(t, err)
		jobs, err := w.parse(doc, map[string]string{})
		require.NoError(t, err)
		return jobs
	}
	protocols := func(sc *config.ScrapeConfig) []string {
		var out []string
		for _, p := range sc.ScrapeProtocols {
			out = append(out, string(p))
		}
		return out
	}
	relabels := func(sc *config.ScrapeConfig) []string {
		var out []string
		for _, r := range sc.RelabelConfigs {
			out = append(out, string(r.Action)+" "+r.Regex.String())
		}
		return out
	}

	plain := generate(newTestWatcher(t, Config{}), podMonitor("pods", monitoringv1.PodMetricsEndpoint{Port: new("metrics")}))
	pods := plain["podMonitor/app/pods/0"].sc
	require.NotNil(t, pods)
	assert.Equal(t, DefaultScrapeProtocols, protocols(pods))
	assert.NotContains(t, relabels(pods), "labeldrop pod")

	w := newTestWatcher(t, Config{
		ScrapeProtocols: []string{"PrometheusText1.0.0"},
		ScrapeClasses: []map[string]any{
			{"name": "my-scrape-class", "default": true, "relabelings": []any{map[string]any{"action": "labeldrop", "regex": "pod"}}},
			{"name": "other", "relabelings": []any{map[string]any{"action": "labeldrop", "regex": "node"}}},
		},
	})
	jobs := generate(w,
		podMonitor("pods", monitoringv1.PodMetricsEndpoint{Port: new("metrics")}),
		func() *monitoringv1.PodMonitor {
			pm := podMonitor("classy", monitoringv1.PodMetricsEndpoint{Port: new("metrics")})
			pm.Spec.ScrapeClassName = new("other")
			return pm
		}())
	pods = jobs["podMonitor/app/pods/0"].sc
	require.NotNil(t, pods)
	assert.Equal(t, []string{"PrometheusText1.0.0"}, protocols(pods))
	assert.Contains(t, relabels(pods), "labeldrop pod", "the default class applies")
	assert.NotContains(t, relabels(pods), "labeldrop node")
	classy := jobs["podMonitor/app/classy/0"].sc
	require.NotNil(t, classy)
	assert.Contains(t, relabels(classy), "labeldrop node", "the named class applies")
	assert.NotContains(t, relabels(classy), "labeldrop pod")
}

// With deny_fs_access_through_sms, the jobs of endpoints that read files of
// the member's file system are left out, each with its reason, and the
// other endpoints of the same resource keep theirs; without it, all stay.
func TestDenyFSAccessThroughSMs(t *testing.T) {
	sm := &monitoringv1.ServiceMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "app"},
		Spec: monitoringv1.ServiceMonitorSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Endpoints: []monitoringv1.Endpoint{
				{Port: "plain"},
				{Port: "token", BearerTokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token"}, //nolint:staticcheck // what a tenant could write
				{Port: "tls", HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{
					TLSConfig: &monitoringv1.TLSConfig{TLSFilesConfig: monitoringv1.TLSFilesConfig{CAFile: "/etc/ca.crt", CertFile: "/etc/tls.crt", KeyFile: "/etc/tls.key"}},
				}}},
			},
		},
	}
	for _, deny := range []bool{false, true} {
		w := newTestWatcher(t, Config{DenyFSAccessThroughSMs: deny})
		doc, err := w.gen.GenerateServerConfiguration(w.prom, map[string]*monitoringv1.ServiceMonitor{"app/web": sm}, nil, nil, nil,
			assets.NewTestStoreBuilder(), nil, nil, nil, nil)
		require.NoError(t, err)
		skipped := map[string]string{}
		jobs, err := w.parse(doc, skipped)
		require.NoError(t, err)
		if !deny {
			assert.Len(t, jobs, 3)
			assert.Empty(t, skipped)
			continue
		}
		assert.Len(t, jobs, 1)
		assert.Contains(t, jobs, "serviceMonitor/app/web/0")
		assert.Equal(t, map[string]string{
			"job serviceMonitor/app/web/1": "it reads files (authorization::credentials_file), which prometheus_cr::deny_fs_access_through_sms denies",
			"job serviceMonitor/app/web/2": "it reads files (tls_config::ca_file, tls_config::cert_file, tls_config::key_file), which prometheus_cr::deny_fs_access_through_sms denies",
		}, skipped)
	}
}

// The leader reads the Secrets of secret_namespaces only, by default its
// own namespace's: a resource whose credentials are elsewhere is skipped.
func TestSecretNamespaces(t *testing.T) {
	secret := func(ns string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "auth", Namespace: ns}, Data: map[string][]byte{"user": []byte("u"), "password": []byte("p")}}
	}
	core := fake.NewClientset(secret("obs"), secret("app"), secret("other"))
	auth := &monitoringv1.BasicAuth{
		Username: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "auth"}, Key: "user"},
		Password: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "auth"}, Key: "password"},
	}
	for _, tt := range []struct {
		name       string
		namespaces []string
		readable   map[string]bool
	}{
		{"default: the group's namespace", nil, map[string]bool{"obs": true}},
		{"listed", []string{"app", "other"}, map[string]bool{"app": true, "other": true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newTestWatcher(t, Config{SecretNamespaces: tt.namespaces})
			w.core = core
			store := assets.NewStoreBuilder(core.CoreV1(), w.secrets())
			for _, ns := range []string{"obs", "app", "other"} {
				err := store.AddBasicAuth(t.Context(), ns, auth)
				if tt.readable[ns] {
					assert.NoError(t, err, ns)
				} else {
					require.Error(t, err, ns)
					assert.Contains(t, err.Error(), "namespace "+ns+" is not one of prometheus_cr::secret_namespaces")
				}
			}
		})
	}
}
