package promcr

import (
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus-operator/prometheus-operator/pkg/assets"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// An unset selector selects everything, as in the resources the OpenTelemetry
// Operator writes for the Target Allocator.
func TestUnsetSelectorSelectsAll(t *testing.T) {
	sel, err := metav1.LabelSelectorAsSelector((*LabelSelector)(nil).kube())
	require.NoError(t, err)
	assert.True(t, sel.Empty())
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
		jobs, err := w.parse(doc)
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
