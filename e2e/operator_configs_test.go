package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	monitoringclient "github.com/prometheus-operator/prometheus-operator/pkg/client/versioned"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/embedded-ta/embedded-ta/internal/demotarget"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/testaddr"
	"github.com/embedded-ta/embedded-ta/internal/testpki"
)

// operatorTAConfig returns a replica's configuration whose target_allocator
// is the body of one of the TA config files the OpenTelemetry Operator
// writes (../shared/ta-operator-configs), pasted unchanged, with the keys a
// member needs outside a pod added beside it (extra, indented YAML);
// replace substitutes what the file names that this machine has elsewhere.
func operatorTAConfig(t *testing.T, file, extra string, replace ...string) string {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("../../shared/ta-operator-configs", file))
	require.NoError(t, err)
	ta := strings.NewReplacer(replace...).Replace(string(body))
	var b strings.Builder
	b.WriteString("extensions:\n  target_allocator:\n")
	for _, line := range strings.Split(strings.TrimRight(ta, "\n"), "\n") {
		b.WriteString("    " + line + "\n")
	}
	b.WriteString(extra)
	b.WriteString(scrapingReplica)
	path := filepath.Join(t.TempDir(), "collector.yaml")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

// memberKeys are what a member outside a pod needs beside a TA file.
const memberKeys = `    auth_type: kubeConfig
    endpoint: ${env:ALLOCATOR_ENDPOINT}
    lease: {duration: 5s, renew_deadline: 3s, retry_period: 1s}
`

// get answers a GET of url with client: status, a header and the body.
func get(t *testing.T, client *http.Client, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

// The operator's TA config files start unchanged on real processes and
// select, answer and redact as the TA does.
func TestOperatorTAConfigsOnRealProcesses(t *testing.T) {
	controlPlane.InstallPrometheusOperatorCRDs(t)
	ctx := context.Background()
	mon, err := monitoringclient.NewForConfig(controlPlane.Config)
	require.NoError(t, err)

	// Pods at loopback IPs, each a real target, and PodMonitors for them:
	// one labelled release=my-instance, one not.
	podMonitor := func(ns, name string, labels map[string]string, app string) {
		_, err := mon.MonitoringV1().PodMonitors(ns).Create(ctx, &monitoringv1.PodMonitor{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: monitoringv1.PodMonitorSpec{
				Selector:            metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
				PodMetricsEndpoints: []monitoringv1.PodMetricsEndpoint{{Port: new("metrics")}},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	pods := func(ns, app string, first int) map[string]*demotarget.Target {
		out := map[string]*demotarget.Target{}
		for i := range 2 {
			host := fmt.Sprintf("127.0.0.%d", first+i)
			target, err := demotarget.Start(host + ":9100")
			require.NoError(t, err)
			t.Cleanup(func() { _ = target.Close() })
			out[target.Addr] = target
			controlPlane.RunningPod(t, ns, fmt.Sprintf("%s-%d", app, i), host, "node-a", 9100, map[string]string{"app": app})
		}
		return out
	}

	t.Run("with-label-selectors", func(t *testing.T) {
		ns, apps := controlPlane.Namespace(t), controlPlane.Namespace(t)
		selected := pods(apps, "selected", 110)
		unselected := pods(apps, "unselected", 120)
		podMonitor(apps, "labelled", map[string]string{"release": "my-instance"}, "selected")
		podMonitor(apps, "unlabelled", nil, "unselected")
		kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
		procs := startGroup(t, kubeconfig, "otcta-collector", 2, operatorTAConfig(t, "with-label-selectors.yaml", memberKeys))
		settled(t, procs, 60*time.Second)

		labelled := "podMonitor/" + apps + "/labelled/0"
		want := map[string]bool{}
		for addr := range selected {
			want[apps+"/labelled "+addr] = true
		}
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			jobs, err := scrapeConfigJobs(procs[0])
			if assert.NoError(c, err) {
				assert.Equal(c, []string{"otel-collector", labelled}, jobs, "the file's job and the labelled PodMonitor's, not the other")
			}
			owners, err := exportedSeries(procs)
			if assert.NoError(c, err) {
				assert.Equal(c, want, seriesSet(owners))
			}
		}, 90*time.Second, 250*time.Millisecond)
		time.Sleep(3 * time.Second)
		for addr, target := range unselected {
			assert.Empty(t, target.Scrapes(), "%s of the unlabelled PodMonitor is scraped", addr)
		}
		// Labelling the other PodMonitor selects it: its pods are scraped too
		// (and the leader counts the event, as the TA does).
		pm, err := mon.MonitoringV1().PodMonitors(apps).Get(ctx, "unlabelled", metav1.GetOptions{})
		require.NoError(t, err)
		pm.Labels = map[string]string{"release": "my-instance"}
		_, err = mon.MonitoringV1().PodMonitors(apps).Update(ctx, pm, metav1.UpdateOptions{})
		require.NoError(t, err)
		for addr := range unselected {
			want[apps+"/unlabelled "+addr] = true
		}
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			owners, err := exportedSeries(procs)
			if assert.NoError(c, err) {
				assert.Equal(c, want, seriesSet(owners))
			}
		}, 90*time.Second, 250*time.Millisecond)

		// The TA's answers: 200 [] for an unknown job and for a collector
		// that is no member.
		plain := &http.Client{Timeout: 5 * time.Second}
		for _, p := range procs {
			for _, u := range []string{"/jobs/no-such-job/targets?collector_id=" + p.name, "/jobs/" + labelled + "/targets?collector_id=not-a-member"} {
				code, _, body := get(t, plain, "http://"+p.endpoint+u)
				assert.Equal(t, http.StatusOK, code, "%s %s", p.name, u)
				assert.JSONEq(t, "[]", body, "%s %s", p.name, u)
			}
		}
		// The TA's metric names on the allocator endpoint (the leader's).
		leader := settled(t, procs, 10*time.Second)
		_, _, metrics := get(t, plain, "http://"+leader.endpoint+"/metrics")
		for _, name := range []string{"opentelemetry_allocator_targets", "opentelemetry_allocator_targets_per_collector",
			"opentelemetry_allocator_collectors_allocatable", "opentelemetry_allocator_collectors_discovered",
			"opentelemetry_allocator_time_to_allocate", "opentelemetry_allocator_targets_remaining",
			"opentelemetry_allocator_targets_unassigned", "opentelemetry_allocator_events",
			"opentelemetry_allocator_http_duration_seconds", "opentelemetry_allocator_process_targets_duration_seconds"} {
			assert.True(t, hasMetric(metrics, name), "/metrics has no %s", name)
		}
	})

	t.Run("with-namespace-label-selectors", func(t *testing.T) {
		// Namespace selectors name release=my-instance, the resource selectors
		// are null: nothing is selected, not even in a labelled namespace.
		ns, apps := controlPlane.Namespace(t), controlPlane.Namespace(t)
		n, err := controlPlane.Client.CoreV1().Namespaces().Get(ctx, apps, metav1.GetOptions{})
		require.NoError(t, err)
		n.Labels = map[string]string{"release": "my-instance"}
		_, err = controlPlane.Client.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{})
		require.NoError(t, err)
		targets := pods(apps, "monitored", 130)
		podMonitor(apps, "monitored", map[string]string{"release": "my-instance"}, "monitored")
		var static []monitoringv1alpha1.Target
		for addr := range targets {
			static = append(static, monitoringv1alpha1.Target(addr))
		}
		_, err = mon.MonitoringV1alpha1().ScrapeConfigs(apps).Create(ctx, &monitoringv1alpha1.ScrapeConfig{
			ObjectMeta: metav1.ObjectMeta{Name: "static", Labels: map[string]string{"release": "my-instance"}},
			Spec:       monitoringv1alpha1.ScrapeConfigSpec{StaticConfigs: []monitoringv1alpha1.StaticConfig{{Targets: static}}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
		procs := startGroup(t, kubeconfig, "otcta-collector", 2, operatorTAConfig(t, "with-namespace-label-selectors.yaml", memberKeys))
		settled(t, procs, 60*time.Second)
		// The resources were there before the members started: once the
		// leader has watched them for a while, only the file's job is there.
		time.Sleep(5 * time.Second)
		for _, p := range procs {
			jobs, err := scrapeConfigJobs(p)
			require.NoError(t, err)
			assert.Equal(t, []string{"otel-collector"}, jobs, "%s: a null resource selector selects nothing", p.name)
		}
		for addr, target := range targets {
			assert.Empty(t, target.Scrapes(), "%s is scraped", addr)
		}
	})

	t.Run("with-https-configuration", func(t *testing.T) {
		// The file's https block, with this test's certificates and a free
		// address in place of the operator's mount points and :8443; its
		// basic-auth password is shown over mutual TLS only.
		ns := controlPlane.Namespace(t)
		pki := testpki.New(t)
		httpsAddr := testaddr.Free(t)
		_, err := controlPlane.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "auth"},
			Data:       map[string][]byte{"user": []byte("scraper"), "password": []byte("hunter2")},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		// EndpointSlices take no loopback address: the targets listen on
		// this host's own.
		ip := kubetest.HostIPv4(t)
		web := map[string]*demotarget.Target{}
		for range 2 {
			target, err := demotarget.Start(net.JoinHostPort(ip, "0"))
			require.NoError(t, err)
			t.Cleanup(func() { _ = target.Close() })
			web[target.Addr] = target
		}
		var addrs []string
		for addr := range web {
			addrs = append(addrs, addr)
		}
		controlPlane.Service(t, ns, "web", "metrics", map[string]string{"app": "web"}, addrs...)
		_, err = mon.MonitoringV1().ServiceMonitors(ns).Create(ctx, basicAuthServiceMonitor("auth"), metav1.CreateOptions{})
		require.NoError(t, err)
		kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
		// The file has no prometheus_cr: the ServiceMonitor comes in through
		// keys added beside it.
		extra := memberKeys + "    prometheus_cr: {enabled: true, service_monitor_selector: {}}\n"
		p := startProcess(t, kubeconfig, "otcta-collector-0", operatorTAConfig(t, "with-https-configuration.yaml", extra,
			"/tls/ca.crt", pki.CAFile, "/tls/tls.crt", pki.CertFile, "/tls/tls.key", pki.KeyFile, ":8443", httpsAddr))
		settled(t, []*process{p}, 60*time.Second)

		job := "serviceMonitor/" + ns + "/web/0"
		plain := &http.Client{Timeout: 5 * time.Second}
		var configs map[string]json.RawMessage
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			_, _, body := get(t, plain, "http://"+p.endpoint+"/scrape_configs")
			assert.NoError(c, json.Unmarshal([]byte(body), &configs))
			assert.Contains(c, configs, job)
		}, 60*time.Second, 250*time.Millisecond)
		assert.Contains(t, string(configs[job]), `"password":"\u003csecret\u003e"`, "the plain listener redacts")
		assert.NotContains(t, string(configs[job]), "hunter2")

		verified := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.Client}, MinVersion: tls.VersionTLS12,
		}}}
		code, _, body := get(t, verified, "https://"+httpsAddr+"/scrape_configs")
		assert.Equal(t, http.StatusOK, code)
		assert.Contains(t, body, "hunter2", "the mTLS listener shows the password to a verified client")

		anonymous := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pki.Pool, MinVersion: tls.VersionTLS12,
		}}}
		_, err = anonymous.Get("https://" + httpsAddr + "/scrape_configs")
		assert.Error(t, err, "the mTLS listener answers a client without a certificate")
	})
}

// hasMetric reports whether a Prometheus text exposition has a series of
// name (or of its histogram's or counter's suffixed names).
func hasMetric(exposition, name string) bool {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "# TYPE "+name+" ") || strings.HasPrefix(line, "# TYPE "+name+"_total ") {
			return true
		}
	}
	return false
}
