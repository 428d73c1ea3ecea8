package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringclient "github.com/prometheus-operator/prometheus-operator/pkg/client/versioned"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/embedded-ta/embedded-ta/internal/demotarget"
	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

// slowSDDelay is how long the HTTP SD endpoint of the users'-path test
// takes to answer each request.
const slowSDDelay = 3 * time.Second

// scrapingReplica is the rest of a test replica's configuration after its
// target_allocator: its receiver at 1 s, its exporter where the test reads
// what it scraped, and its own metrics where the test reads them.
const scrapingReplica = `receivers:
  prometheus_allocated:
    interval: 1s
    http_sd_config: {refresh_interval: 1s}
exporters:
  prometheus:
    endpoint: ${env:EXPORTER_ENDPOINT}
service:
  extensions: [target_allocator]
  pipelines:
    metrics: {receivers: [prometheus_allocated], exporters: [prometheus]}
  telemetry:
    logs: {encoding: json}
    metrics:
      readers:
        - pull: {exporter: {prometheus: {host: 127.0.0.1, port: '${env:TELEMETRY_PORT}'}}}
`

// usersPathConfig is a replica's configuration on the path users take: a
// job of Kubernetes pod SD, a job of an HTTP SD endpoint that answers
// slowly (at its default refresh interval), and Prometheus CRs; the fast
// lease and scrape settings of examples/local/replica.yaml.
func usersPathConfig(t *testing.T, kubeconfig, apps, slowURL string) string {
	t.Helper()
	cfg := fmt.Sprintf(`extensions:
  target_allocator:
    auth_type: kubeConfig
    endpoint: ${env:ALLOCATOR_ENDPOINT}
    lease: {duration: 5s, renew_deadline: 3s, retry_period: 1s}
    prometheus_cr:
      enabled: true
      scrape_interval: 1s
      pod_monitor_selector: {}
    config:
      global: {scrape_interval: 1s, scrape_timeout: 1s}
      scrape_configs:
        - job_name: pods
          kubernetes_sd_configs:
            - role: pod
              kubeconfig_file: %[1]s
              namespaces: {names: [%[2]s]}
          relabel_configs:
            - source_labels: [__meta_kubernetes_pod_label_app]
              regex: sd
              action: keep
        - job_name: slow
          http_sd_configs: [{url: %[3]q}]
`, kubeconfig, apps, slowURL) + scrapingReplica
	path := filepath.Join(t.TempDir(), "collector.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

// SIGKILL of the leader on the users' path: pods found by Kubernetes SD,
// pods selected by a PodMonitor, and targets of an HTTP SD endpoint that
// answers every request 3 s late, on real processes. Through the election
// and until the new leader's discovery has reported, every survivor's
// answer for each job, polled five times a second as its receiver asks,
// holds at least the targets it held before, and /scrape_configs never
// loses a job; the survivors' targets miss no scrape, and the dead
// leader's are scraped again within the failover bound.
func TestLeaderKilledOnTheUsersPath(t *testing.T) {
	controlPlane.InstallPrometheusOperatorCRDs(t)
	ns := controlPlane.Namespace(t)
	apps := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)

	targets := map[string]*demotarget.Target{} // by address
	want := map[string]bool{}                  // "<job label> <address>", as exported
	start := func(host string) *demotarget.Target {
		target, err := demotarget.Start(host + ":9100")
		require.NoError(t, err)
		t.Cleanup(func() { _ = target.Close() })
		targets[target.Addr] = target
		return target
	}
	for i := range 4 {
		host := fmt.Sprintf("127.0.0.%d", 70+i)
		target := start(host)
		want["pods "+target.Addr] = true
		controlPlane.RunningPod(t, apps, fmt.Sprintf("sd-%d", i), host, "node-a", 9100, map[string]string{"app": "sd"})
	}
	for i := range 4 {
		host := fmt.Sprintf("127.0.0.%d", 80+i)
		target := start(host)
		want[apps+"/monitored "+target.Addr] = true // a PodMonitor's job label is <namespace>/<name>
		controlPlane.RunningPod(t, apps, fmt.Sprintf("monitored-%d", i), host, "node-a", 9100, map[string]string{"app": "monitored"})
	}
	mon, err := monitoringclient.NewForConfig(controlPlane.Config)
	require.NoError(t, err)
	_, err = mon.MonitoringV1().PodMonitors(apps).Create(context.Background(), &monitoringv1.PodMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "monitored"},
		Spec: monitoringv1.PodMonitorSpec{
			Selector:            metav1.LabelSelector{MatchLabels: map[string]string{"app": "monitored"}},
			PodMetricsEndpoints: []monitoringv1.PodMetricsEndpoint{{Port: new("metrics")}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	var slowAddrs []string
	for i := range 4 {
		target := start(fmt.Sprintf("127.0.0.%d", 90+i))
		want["slow "+target.Addr] = true
		slowAddrs = append(slowAddrs, target.Addr)
	}
	slowBody, err := json.Marshal([]httpsd.TargetGroup{{Targets: slowAddrs}})
	require.NoError(t, err)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(slowSDDelay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(slowBody)
	}))
	t.Cleanup(slow.Close)

	procs := startGroup(t, kubeconfig, "otcta-collector", 3, usersPathConfig(t, kubeconfig, apps, slow.URL))
	leader := settled(t, procs, 60*time.Second)
	var owners map[string]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		owners, err = exportedSeries(procs)
		if assert.NoError(c, err) {
			assert.Equal(c, want, seriesSet(owners))
		}
	}, 90*time.Second, 250*time.Millisecond)
	survivors := slices.DeleteFunc(slices.Clone(procs), func(p *process) bool { return p == leader })

	// Each survivor's scrape configs and its share of each job, as its
	// receiver last had them before the leader died.
	var jobs []string
	before := map[string]map[string]map[string]bool{} // member → job → targets
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		total := 0
		for _, p := range survivors {
			configs, err := scrapeConfigJobs(p)
			if !assert.NoError(c, err) {
				return
			}
			jobs = configs
			before[p.name] = map[string]map[string]bool{}
			for _, job := range jobs {
				s, err := ownShare(p, job)
				assert.NoError(c, err)
				before[p.name][job] = s
				total += len(s)
			}
		}
		assert.Len(c, jobs, 3, "pods, slow and the PodMonitor's job")
		assert.Positive(c, total, "the survivors hold targets")
	}, 30*time.Second, 200*time.Millisecond)

	killed := time.Now()
	leader.kill(t)
	// Poll as receivers do, through the election and until the new leader
	// has heard from the slow endpoint and the others have its allocation.
	type answer struct {
		member, job string
		at          time.Duration // after SIGKILL
		targets     map[string]bool
	}
	var answers []answer
	for time.Since(killed) < leaseDuration+retryPeriod+2*slowSDDelay+5*time.Second {
		for _, p := range survivors {
			got, err := scrapeConfigJobs(p)
			if assert.NoError(t, err, "%s /scrape_configs %s after SIGKILL", p.name, time.Since(killed)) {
				assert.Subset(t, got, jobs, "%s lost a job %s after SIGKILL", p.name, time.Since(killed))
			}
			for _, job := range jobs {
				s, err := ownShare(p, job)
				if assert.NoError(t, err, "%s %s %s after SIGKILL", p.name, job, time.Since(killed)) {
					answers = append(answers, answer{p.name, job, time.Since(killed), s})
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	var scraped map[string]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		scraped, err = exportedSeries(survivors)
		if assert.NoError(c, err) {
			assert.Equal(c, want, seriesSet(scraped))
		}
	}, 60*time.Second, 250*time.Millisecond)
	end := time.Now()

	// A leave moves the leaver's targets, and, where a job is small enough
	// for the load bounds of consistent-hashing to bind (here four targets
	// a job), possibly a few of the survivors' own between them. What a
	// survivor holds before and after, it holds all along: no answer on the
	// way is emptier.
	after := map[string]map[string]map[string]bool{}
	for _, p := range survivors {
		after[p.name] = map[string]map[string]bool{}
		for _, job := range jobs {
			s, err := ownShare(p, job)
			require.NoError(t, err)
			after[p.name][job] = s
		}
	}
	kept := map[string]bool{} // addresses a survivor held before and after
	for _, a := range answers {
		for target := range before[a.member][a.job] {
			if !after[a.member][a.job][target] {
				continue
			}
			kept[target] = true
			assert.True(t, a.targets[target], "%s's answer for %s lacks %s %s after SIGKILL", a.member, a.job, target, a.at.Round(time.Millisecond))
		}
	}
	t.Logf("polled every survivor's answers %d times", len(answers)/len(jobs)/len(survivors))

	// The survivors' targets that stay where they were miss no scrape; the
	// others (the dead leader's, and those the bounds move) are scraped again
	// once the lease runs out, a new leader has heard from every SD (the slow
	// one last) and the stock receivers act.
	bound := leaseDuration + retryPeriod + slowSDDelay + refreshInterval + stockDelay + scrapeInterval
	for series, owner := range owners {
		addr := series[strings.Index(series, " ")+1:]
		target := targets[addr]
		if kept[addr] {
			gap := target.MaxGap(killed, end)
			t.Logf("measured: %s (kept by %s) longest gap %s", series, owner, gap.Round(time.Millisecond))
			assert.Less(t, gap, 2*scrapeInterval, "%s missed a scrape", series)
			continue
		}
		gap := target.MaxGap(killed, end)
		t.Logf("measured: %s (%s's, moved to %s) longest unscraped %s (bound %s)", series, owner, scraped[series], gap.Round(time.Millisecond), bound)
		assert.LessOrEqual(t, gap, bound, "%s went unscraped", series)
	}
	assertSteadyState(t, survivors, targets)
}

func seriesSet(owners map[string]string) map[string]bool {
	set := map[string]bool{}
	for s := range owners {
		set[s] = true
	}
	return set
}

// scrapeConfigJobs returns the jobs of a member's /scrape_configs answer.
func scrapeConfigJobs(p *process) ([]string, error) {
	resp, err := http.Get("http://" + p.endpoint + "/scrape_configs")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/scrape_configs: %s", resp.Status)
	}
	var configs map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&configs); err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(configs)), nil
}

// ownShare returns the targets of a member's answer for its own share of job.
func ownShare(p *process, job string) (map[string]bool, error) {
	u := "http://" + p.endpoint + "/jobs/" + url.PathEscape(job) + "/targets?collector_id=" + url.QueryEscape(p.name)
	resp, err := http.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", u, resp.Status)
	}
	var groups []httpsd.TargetGroup
	if err := json.NewDecoder(resp.Body).Decode(&groups); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, g := range groups {
		for _, target := range g.Targets {
			out[target] = true
		}
	}
	return out, nil
}
