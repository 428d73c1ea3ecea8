package integrationtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	monitoringclient "github.com/prometheus-operator/prometheus-operator/pkg/client/versioned"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tae "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/demotarget"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/promcr"
)

// withPrometheusCR turns prometheus_cr on with a short scrape interval,
// every resource selected.
func withPrometheusCR(c *tae.Config) {
	every := &promcr.LabelSelector{}
	c.PrometheusCR = promcr.Config{
		Enabled: true, ScrapeInterval: time.Second,
		ServiceMonitorSelector: every, PodMonitorSelector: every, ProbeSelector: every, ScrapeConfigSelector: every,
	}
}

// startTarget serves a real scrape target at host:0 and returns it.
func startTarget(t *testing.T, host string) *demotarget.Target {
	t.Helper()
	target, err := demotarget.Start(net.JoinHostPort(host, "0"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = target.Close() })
	return target
}

// ServiceMonitors, PodMonitors, ScrapeConfigs and Probes become jobs with
// the Target Allocator's names; their targets (a Service's EndpointSlices,
// pods, static targets) are each assigned to exactly one member; editing or deleting a resource changes the
// allocation without a restart; invalid resources are skipped with a log
// line that names them, and the others keep working.
func TestPrometheusOperatorResources(t *testing.T) {
	controlPlane.InstallPrometheusOperatorCRDs(t)
	ctx := context.Background()
	ns := controlPlane.Namespace(t)
	mon, err := monitoringclient.NewForConfig(controlPlane.Config)
	require.NoError(t, err)
	core := controlPlane.Client

	// A Service whose EndpointSlices point at real targets on this host.
	ip := kubetest.HostIPv4(t)
	webTargets := map[string]bool{}
	var webAddrs []string
	for range 4 {
		target := startTarget(t, ip)
		webTargets[target.Addr] = true
		webAddrs = append(webAddrs, target.Addr)
	}
	controlPlane.Service(t, ns, "web", "metrics", map[string]string{"app": "web"}, webAddrs...)
	// The ServiceMonitor authenticates with a Secret's basic auth.
	_, err = core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "web-auth"},
		Data:       map[string][]byte{"user": []byte("scraper"), "password": []byte("hunter2")},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	basicAuth := &monitoringv1.BasicAuth{
		Username: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "web-auth"}, Key: "user"},
		Password: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "web-auth"}, Key: "password"},
	}
	serviceMonitor := func(name string, endpoint monitoringv1.Endpoint) *monitoringv1.ServiceMonitor {
		return &monitoringv1.ServiceMonitor{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: monitoringv1.ServiceMonitorSpec{
				Selector:  metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Endpoints: []monitoringv1.Endpoint{endpoint},
			},
		}
	}
	web := serviceMonitor("web", monitoringv1.Endpoint{Port: "metrics", HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{
		HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{HTTPConfigWithoutTLS: monitoringv1.HTTPConfigWithoutTLS{BasicAuth: basicAuth}},
	}})
	_, err = mon.MonitoringV1().ServiceMonitors(ns).Create(ctx, web, metav1.CreateOptions{})
	require.NoError(t, err)

	// Pods with loopback pod IPs, each a real target.
	podTargets := map[string]bool{}
	for i := range 4 {
		target := startTarget(t, fmt.Sprintf("127.0.0.%d", 40+i))
		podTargets[target.Addr] = true
		host, _, _ := net.SplitHostPort(target.Addr)
		controlPlane.RunningPod(t, ns, fmt.Sprintf("app-%d", i), host, "node-a", kubetest.Port(t, target.Addr),
			map[string]string{"app": "pods", "half": strconv.Itoa(i % 2)})
	}
	_, err = mon.MonitoringV1().PodMonitors(ns).Create(ctx, &monitoringv1.PodMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "pods"},
		Spec: monitoringv1.PodMonitorSpec{
			Selector:            metav1.LabelSelector{MatchLabels: map[string]string{"app": "pods"}},
			PodMetricsEndpoints: []monitoringv1.PodMetricsEndpoint{{Port: new("metrics")}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	// Two invalid ServiceMonitors: a bad relabeling regex, an unknown Secret.
	badRegex := serviceMonitor("bad-regex", monitoringv1.Endpoint{Port: "metrics", RelabelConfigs: []monitoringv1.RelabelConfig{{
		SourceLabels: []monitoringv1.LabelName{"__address__"}, Regex: "([", Action: "keep",
	}}})
	noSecret := serviceMonitor("no-secret", monitoringv1.Endpoint{Port: "metrics", HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{
		HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{HTTPConfigWithoutTLS: monitoringv1.HTTPConfigWithoutTLS{BasicAuth: &monitoringv1.BasicAuth{
			Username: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Key: "user"},
			Password: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}, Key: "password"},
		}}},
	}})
	for _, sm := range []*monitoringv1.ServiceMonitor{badRegex, noSecret} {
		_, err = mon.MonitoringV1().ServiceMonitors(ns).Create(ctx, sm, metav1.CreateOptions{})
		require.NoError(t, err)
	}

	// A ScrapeConfig with static targets, a Probe of static URLs.
	_, err = mon.MonitoringV1alpha1().ScrapeConfigs(ns).Create(ctx, &monitoringv1alpha1.ScrapeConfig{
		ObjectMeta: metav1.ObjectMeta{Name: "static"},
		Spec: monitoringv1alpha1.ScrapeConfigSpec{StaticConfigs: []monitoringv1alpha1.StaticConfig{{
			Targets: []monitoringv1alpha1.Target{"10.8.0.1:9100", "10.8.0.2:9100"},
		}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = mon.MonitoringV1().Probes(ns).Create(ctx, &monitoringv1.Probe{
		ObjectMeta: metav1.ObjectMeta{Name: "sites"},
		Spec: monitoringv1.ProbeSpec{
			ProberSpec: monitoringv1.ProberSpec{URL: "blackbox.example:9115"},
			Targets: monitoringv1.ProbeTargets{StaticConfig: &monitoringv1.ProbeTargetStaticConfig{
				Targets: []string{"https://a.example", "https://b.example"},
			}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	replicas := startGroup(t, ns, "promcr", 3, withPrometheusCR, withScrapeConfigs(staticJob("static", "10.9.9.9:9100")))
	leader := settled(t, replicas, 10*time.Second)
	follower := without(replicas, leader)[0]
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range leader.logs.All() {
				t.Logf("leader: %s %s %v", e.Level, e.Message, e.ContextMap())
			}
		}
	})

	webJob := "serviceMonitor/" + ns + "/web/0"
	podJob := "podMonitor/" + ns + "/pods/0"
	scJob := "scrapeConfig/" + ns + "/static"
	probeJob := "probe/" + ns + "/sites"
	keys := func(m map[string]string) map[string]bool {
		out := map[string]bool{}
		for k := range m {
			out[k] = true
		}
		return out
	}
	// assignment fails if a target has two owners.
	var a map[string]map[string]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		a, err = assignment(follower)
		if !assert.NoError(c, err) {
			return
		}
		assert.Equal(c, webTargets, keys(a[webJob]))
		assert.Equal(c, podTargets, keys(a[podJob]))
		assert.Len(c, a["static"], 1)
		assert.Equal(c, map[string]bool{"10.8.0.1:9100": true, "10.8.0.2:9100": true}, keys(a[scJob]))
		assert.Equal(c, map[string]bool{"https://a.example": true, "https://b.example": true}, keys(a[probeJob]))
	}, 30*time.Second, 200*time.Millisecond)
	names := make([]string, 0, len(a))
	for job := range a {
		names = append(names, job)
	}
	slices.Sort(names)
	assert.Equal(t, []string{podJob, probeJob, scJob, webJob, "static"}, names, "the invalid ServiceMonitors have no job")
	members := map[string]bool{}
	for _, owners := range a {
		for _, owner := range owners {
			members[owner] = true
		}
	}
	t.Logf("measured: %d ServiceMonitor, %d PodMonitor, %d ScrapeConfig and %d Probe targets over members %v",
		len(a[webJob]), len(a[podJob]), len(a[scJob]), len(a[probeJob]), members)
	assert.Greater(t, len(members), 1, "the targets are spread over the members")

	// The Secret's password is in the scrape config, redacted over plain HTTP.
	var configs map[string]map[string]any
	getJSON(t, follower.url()+"/scrape_configs", &configs)
	require.Contains(t, configs, webJob)
	auth, _ := configs[webJob]["basic_auth"].(map[string]any)
	assert.Equal(t, "scraper", auth["username"])
	assert.Equal(t, "<secret>", auth["password"])
	assert.Equal(t, "1s", configs[podJob]["scrape_interval"])

	// Each invalid resource is named in one log line with its reason.
	for _, name := range []string{"bad-regex", "no-secret"} {
		want := "Skipping ServiceMonitor " + ns + "/" + name + ": "
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.NotEmpty(c, leader.logs.FilterMessageSnippet(want).All(), "no log line %q", want)
		}, 5*time.Second, 100*time.Millisecond)
		line := leader.logs.FilterMessageSnippet(want).All()[0].Message
		t.Logf("log: %s", line)
	}
	assert.Contains(t, leader.logs.FilterMessageSnippet("bad-regex").All()[0].Message, "regex")
	assert.Contains(t, leader.logs.FilterMessageSnippet("no-secret").All()[0].Message, "missing")

	// Editing the PodMonitor's selector changes its targets.
	pm, err := mon.MonitoringV1().PodMonitors(ns).Get(ctx, "pods", metav1.GetOptions{})
	require.NoError(t, err)
	pm.Spec.Selector.MatchLabels["half"] = "0"
	edited := time.Now()
	_, err = mon.MonitoringV1().PodMonitors(ns).Update(ctx, pm, metav1.UpdateOptions{})
	require.NoError(t, err)
	half := map[string]bool{}
	for addr := range podTargets {
		host, _, _ := net.SplitHostPort(addr)
		if last := host[strings.LastIndex(host, ".")+1:]; last == "40" || last == "42" {
			half[addr] = true
		}
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		a, err := assignment(follower)
		if assert.NoError(c, err) {
			assert.Equal(c, half, keys(a[podJob]))
			assert.Equal(c, webTargets, keys(a[webJob]), "the other jobs keep their targets")
		}
	}, 30*time.Second, 200*time.Millisecond)
	t.Logf("measured: PodMonitor selector edit reached a follower's answers after %s", time.Since(edited).Round(100*time.Millisecond))

	// Deleting the ServiceMonitor removes its job.
	deleted := time.Now()
	require.NoError(t, mon.MonitoringV1().ServiceMonitors(ns).Delete(ctx, "web", metav1.DeleteOptions{}))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		a, err := assignment(follower)
		if assert.NoError(c, err) {
			assert.NotContains(c, a, webJob)
			assert.Equal(c, half, keys(a[podJob]))
			assert.Len(c, a["static"], 1)
		}
		var configs map[string]any
		if assert.NoError(c, fetchJSON(follower.url()+"/scrape_configs", &configs)) {
			assert.NotContains(c, configs, webJob)
		}
	}, 30*time.Second, 200*time.Millisecond)
	t.Logf("measured: ServiceMonitor deletion reached a follower's answers after %s", time.Since(deleted).Round(100*time.Millisecond))

	// Creating the Secret an invalid resource misses brings its job, with no
	// change of the resource: the leader watches the Secrets of its
	// secret namespaces.
	created := time.Now()
	_, err = core.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "missing"},
		Data:       map[string][]byte{"user": []byte("u"), "password": []byte("p")},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	fixed := "serviceMonitor/" + ns + "/no-secret/0"
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		a, err := assignment(follower)
		if assert.NoError(c, err) {
			assert.Equal(c, webTargets, keys(a[fixed]))
		}
	}, 30*time.Second, 200*time.Millisecond)
	t.Logf("measured: a created Secret reached a follower's answers after %s", time.Since(created).Round(100*time.Millisecond))
}

// Without any permission on Prometheus Operator resources, the jobs of
// config.scrape_configs are allocated all the same, and the leader says
// what it cannot do.
func TestPrometheusCRWithoutRBACKeepsConfigJobs(t *testing.T) {
	controlPlane.InstallPrometheusOperatorCRDs(t)
	ns := controlPlane.Namespace(t)
	controlPlane.Grant(t, ns, "leases-only", kubetest.LeaseRole("leases-only"))
	cfg := controlPlane.ServiceAccount(t, ns, "leases-only")
	r := startReplica(t, cfg, ns, "norbac-0", "norbac", withPrometheusCR, withScrapeConfigs(staticJob("static", "10.9.9.9:9100", "10.9.9.8:9100")))
	settled(t, []*replica{r}, 10*time.Second)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		a, err := assignment(r)
		if assert.NoError(c, err) {
			assert.Len(c, a["static"], 2)
		}
	}, 20*time.Second, 200*time.Millisecond)
	assert.NotEmpty(t, r.logs.FilterMessageSnippet("Cannot watch Prometheus Operator resources").All())
}

// operatorConfigs holds the TA config files that the OpenTelemetry
// Operator writes, as they are.
var operatorConfigs = filepath.Join("..", "..", "..", "..", "shared", "ta-operator-configs")

// fromOperatorConfig loads the operator's TA config file name, after edit,
// as it would load pasted under target_allocator.
func fromOperatorConfig(t *testing.T, name string, edit func(string) string) func(*tae.Config) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(operatorConfigs, name))
	require.NoError(t, err)
	doc := string(body)
	if edit != nil {
		edited := edit(doc)
		require.NotEqual(t, doc, edited, "the edit changes %s", name)
		doc = edited
	}
	var raw map[string]any
	require.NoError(t, yaml.Unmarshal([]byte(doc), &raw))
	return func(c *tae.Config) {
		require.NoError(t, confmap.NewFromStringMap(raw).Unmarshal(c))
	}
}

// The operator's TA config files select PodMonitors as the TA does: a
// pod_monitor_selector that is absent or null selects none, {} selects
// every one, and `matchlabels` those with the labels; a namespace selector
// that is null selects every namespace.
func TestPodMonitorSelectorsOfOperatorConfigs(t *testing.T) {
	controlPlane.InstallPrometheusOperatorCRDs(t)
	ctx := context.Background()
	ns := controlPlane.Namespace(t)
	mon, err := monitoringclient.NewForConfig(controlPlane.Config)
	require.NoError(t, err)
	controlPlane.RunningPod(t, ns, "app-0", "10.3.0.1", "node-a", 9100, map[string]string{"app": "pods"})
	for name, labels := range map[string]map[string]string{"labelled": {"release": "my-instance"}, "unlabelled": nil} {
		_, err := mon.MonitoringV1().PodMonitors(ns).Create(ctx, &monitoringv1.PodMonitor{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: monitoringv1.PodMonitorSpec{
				Selector:            metav1.LabelSelector{MatchLabels: map[string]string{"app": "pods"}},
				PodMetricsEndpoints: []monitoringv1.PodMetricsEndpoint{{Port: new("metrics")}},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	labelled, unlabelled := "podMonitor/"+ns+"/labelled/0", "podMonitor/"+ns+"/unlabelled/0"

	for i, tc := range []struct {
		name, file string
		edit       func(string) string
		want       []string
	}{
		{"absent", "default.yaml", func(s string) string { return s + "prometheus_cr:\n  enabled: true\n" }, nil},
		{"null", "with-scrape-classes-set.yaml", nil, nil},
		{"{}", "with-scrape-classes-set.yaml", func(s string) string {
			return strings.Replace(s, "pod_monitor_selector: null", "pod_monitor_selector: {}", 1)
		}, []string{labelled, unlabelled}},
		{"matchlabels", "with-label-selectors.yaml", nil, []string{labelled}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			group := fmt.Sprintf("select%d", i)
			r := startReplica(t, controlPlane.Config, ns, group+"-0", group, fromOperatorConfig(t, tc.file, tc.edit))
			settled(t, []*replica{r}, 10*time.Second)
			// The PodMonitors exist before the leader lists them: its first
			// update of the resources' jobs already has what it selects.
			var published []int64
			require.EventuallyWithT(t, func(c *assert.CollectT) {
				published = nil
				for _, e := range r.logs.FilterMessage("Scrape configs from Prometheus Operator resources").All() {
					published = append(published, e.ContextMap()["jobs"].(int64))
				}
				assert.NotEmpty(c, published)
			}, 30*time.Second, 100*time.Millisecond)
			var got []string
			require.EventuallyWithT(t, func(c *assert.CollectT) {
				a, err := assignment(r)
				if !assert.NoError(c, err) {
					return
				}
				assert.Contains(c, a, "otel-collector", "the file's own job")
				got = nil
				for job, targets := range a {
					if strings.HasPrefix(job, "podMonitor/"+ns+"/") {
						got = append(got, job)
						assert.Equal(c, map[string]string{"10.3.0.1:9100": r.identity}, targets, job)
					}
				}
				slices.Sort(got)
				assert.Equal(c, tc.want, got)
			}, 30*time.Second, 200*time.Millisecond)
			if tc.want == nil {
				for _, n := range published {
					assert.Zero(t, n, "the leader generated jobs from Prometheus Operator resources")
				}
			}
			t.Logf("%s: PodMonitor jobs %v", tc.name, got)
		})
	}
}
