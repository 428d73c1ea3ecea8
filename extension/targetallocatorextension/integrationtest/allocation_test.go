package integrationtest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configtls"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tae "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/testpki"
)

// withScrapeConfigs sets the extension's Prometheus config, as YAML would.
func withScrapeConfigs(jobs ...map[string]any) func(*tae.Config) {
	list := make([]any, 0, len(jobs))
	for _, j := range jobs {
		list = append(list, j)
	}
	return func(c *tae.Config) { c.Config = map[string]any{"scrape_configs": list} }
}

func staticJob(name string, targets ...string) map[string]any {
	list := make([]any, 0, len(targets))
	for _, t := range targets {
		list = append(list, t)
	}
	return map[string]any{"job_name": name, "static_configs": []any{map[string]any{"targets": list}}}
}

// assignment asks a member's API who owns what: job → target → owner.
func assignment(r *replica) (map[string]map[string]string, error) {
	var jobs map[string]map[string]string
	if err := fetchJSON(r.url()+"/jobs", &jobs); err != nil {
		return nil, err
	}
	out := map[string]map[string]string{}
	for job, link := range jobs {
		var per map[string]struct {
			Targets []struct {
				Targets []string `json:"targets"`
			} `json:"targets"`
		}
		if err := fetchJSON(r.url()+link["_link"], &per); err != nil {
			return nil, err
		}
		out[job] = map[string]string{}
		for owner, share := range per {
			for _, g := range share.Targets {
				for _, target := range g.Targets {
					if prev, dup := out[job][target]; dup {
						return nil, fmt.Errorf("%s/%s is assigned to %s and %s", job, target, prev, owner)
					}
					out[job][target] = owner
				}
			}
		}
	}
	return out, nil
}

// settledAssignment waits until a member's answers cover total targets,
// owned by exactly the given members, and read the same twice in a row (each
// job is a request of its own, so a read can straddle two allocations).
func settledAssignment(t *testing.T, r *replica, total int, members ...*replica) map[string]map[string]string {
	t.Helper()
	want := make([]string, 0, len(members))
	for _, m := range members {
		want = append(want, m.identity)
	}
	slices.Sort(want)
	var last map[string]map[string]string
	var lastErr error
	require.Eventually(t, func() bool {
		a, err := assignment(r)
		if lastErr = err; err != nil {
			return false
		}
		owners := map[string]bool{}
		for _, targets := range a {
			for _, owner := range targets {
				owners[owner] = true
			}
		}
		got := make([]string, 0, len(owners))
		for o := range owners {
			got = append(got, o)
		}
		slices.Sort(got)
		stable := countTargets(a) == total && slices.Equal(got, want) && reflect.DeepEqual(a, last)
		last = a
		return stable
	}, 15*time.Second, 200*time.Millisecond, "no settled assignment of %d targets to %v (last error: %v)", total, want, lastErr)
	return last
}

// fetchJSON GETs u and decodes its 200 answer into v.
func fetchJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	require.NoError(t, fetchJSON(u, v))
}

func countTargets(a map[string]map[string]string) int {
	n := 0
	for _, targets := range a {
		n += len(targets)
	}
	return n
}

// moved counts the targets whose owner differs between two assignments, and
// those among them that the stopped member did not own.
func moved(before, after map[string]map[string]string, gone string) (all, others int) {
	for job, targets := range before {
		for target, owner := range targets {
			if after[job][target] != owner {
				all++
				if owner != gone {
					others++
				}
			}
		}
	}
	return all, others
}

// Every target is assigned exactly once; a member leaving moves only its
// targets (but for the few the load bounds hold); one joining takes about
// 1/(N+1) of them, from everybody.
func TestEveryTargetOnceAndChurn(t *testing.T) {
	ns := controlPlane.Namespace(t)
	var jobs []map[string]any
	for j := range 3 {
		var targets []string
		for i := range 1000 {
			targets = append(targets, fmt.Sprintf("10.%d.%d.%d:9100", j, i/250, i%250))
		}
		jobs = append(jobs, staticJob(fmt.Sprintf("job-%d", j), targets...))
	}
	opt := withScrapeConfigs(jobs...)
	replicas := startGroup(t, ns, "churn", 3, opt)
	leader := settled(t, replicas, 10*time.Second)

	before := settledAssignment(t, leader, 3000, replicas...)
	counts := map[string]int{}
	for _, targets := range before {
		for _, owner := range targets {
			counts[owner]++
		}
	}
	t.Logf("measured: 3000 targets over 3 members: %v", counts)
	for _, r := range replicas {
		assert.InDelta(t, 1000, counts[r.identity], 100, "%s is out of balance", r.identity)
	}

	// A follower leaves gracefully.
	gone := without(replicas, leader)[0]
	gone.stop()
	survivors := without(replicas, gone)
	settled(t, survivors, 5*time.Second)
	after := settledAssignment(t, leader, 3000, survivors...)
	all, others := moved(before, after, gone.identity)
	t.Logf("measured: %s left: %d targets moved, %d of them not its own", gone.identity, all, others)
	assert.Equal(t, counts[gone.identity], all-others, "all of the leaver's targets move")
	assert.LessOrEqual(t, others, counts[gone.identity]/100, "others move only where the load bounds bind")

	// A new member joins.
	newcomer := startReplica(t, controlPlane.Config, ns, "churn-9", "churn", opt)
	members := append(survivors, newcomer)
	settled(t, members, 10*time.Second)
	joined := settledAssignment(t, leader, 3000, members...)
	all, _ = moved(after, joined, "")
	toNewcomer := 0
	for _, targets := range joined {
		for _, owner := range targets {
			if owner == newcomer.identity {
				toNewcomer++
			}
		}
	}
	t.Logf("measured: %s joined 2 members: %d of 3000 targets moved (ideal 1000), %d to the newcomer", newcomer.identity, all, toNewcomer)
	assert.LessOrEqual(t, float64(all), 1.2*3000/3)
	assert.GreaterOrEqual(t, float64(toNewcomer), 0.95*float64(all))
}

// Pods found by Kubernetes service discovery become targets of one member;
// a deleted pod leaves its owner's answer; the relabel filter keeps only
// what the job's relabel_configs keep.
func TestKubernetesPodsBecomeTargets(t *testing.T) {
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	job := map[string]any{
		"job_name": "pods",
		"kubernetes_sd_configs": []any{map[string]any{
			"role": "pod", "kubeconfig_file": kubeconfig,
			"namespaces": map[string]any{"names": []any{ns}},
		}},
		"relabel_configs": []any{map[string]any{
			"source_labels": []any{"__meta_kubernetes_pod_label_app"}, "regex": "demo", "action": "keep",
		}},
	}
	replicas := startGroup(t, ns, "k8s", 2, withScrapeConfigs(job))
	leader := settled(t, replicas, 10*time.Second)
	follower := without(replicas, leader)[0]

	want := map[string]bool{}
	for i := range 4 {
		ip := fmt.Sprintf("127.0.0.%d", 11+i)
		controlPlane.RunningPod(t, ns, fmt.Sprintf("demo-%d", i), ip, "node-a", 9100, map[string]string{"app": "demo"})
		want[ip+":9100"] = true
	}
	controlPlane.RunningPod(t, ns, "other", "127.0.0.20", "node-a", 9100, map[string]string{"app": "other"})

	var owners map[string]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		a, err := assignment(follower)
		if !assert.NoError(c, err) {
			return
		}
		owners = a["pods"]
		got := map[string]bool{}
		for target := range owners {
			got[target] = true
		}
		assert.Equal(c, want, got)
	}, 20*time.Second, 200*time.Millisecond)

	// The owner's own answer carries the pod's discovered labels.
	victim := "127.0.0.11:9100"
	owner := owners[victim]
	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	getJSON(t, follower.url()+"/jobs/pods/targets?collector_id="+url.QueryEscape(owner), &groups)
	var found bool
	for _, g := range groups {
		if slices.Contains(g.Targets, victim) {
			found = true
			assert.Equal(t, "demo-0", g.Labels["__meta_kubernetes_pod_name"])
			assert.Equal(t, "node-a", g.Labels["__meta_kubernetes_pod_node_name"])
		}
	}
	require.True(t, found, "%s is not in its owner's answer", victim)

	require.NoError(t, controlPlane.Client.CoreV1().Pods(ns).Delete(context.Background(), "demo-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}))
	require.Eventually(t, func() bool {
		var groups []struct {
			Targets []string `json:"targets"`
		}
		if fetchJSON(leader.url()+"/jobs/pods/targets?collector_id="+url.QueryEscape(owner), &groups) != nil {
			return false
		}
		for _, g := range groups {
			if slices.Contains(g.Targets, victim) {
				return false
			}
		}
		return true
	}, 20*time.Second, 200*time.Millisecond, "the deleted pod stays in its owner's answer")
}

// Secret values of scrape configs reach only clients with a verified TLS
// client certificate; plain HTTP sees <secret>.
func TestSecretsOnlyOverMutualTLS(t *testing.T) {
	ns := controlPlane.Namespace(t)
	job := staticJob("secured", "127.0.0.1:9100")
	job["basic_auth"] = map[string]any{"username": "scraper", "password": "hunter2"}

	plain := startReplica(t, controlPlane.Config, ns, "plain-0", "plain", withScrapeConfigs(job))
	settled(t, []*replica{plain}, 10*time.Second)
	var configs map[string]map[string]any
	require.Eventually(t, func() bool {
		configs = nil
		return fetchJSON(plain.url()+"/scrape_configs", &configs) == nil && len(configs) == 1
	}, 10*time.Second, 50*time.Millisecond)
	assert.Equal(t, "<secret>", configs["secured"]["basic_auth"].(map[string]any)["password"])

	pki := testpki.New(t)
	secured := startReplica(t, controlPlane.Config, ns, "mtls-0", "mtls", withScrapeConfigs(job), func(c *tae.Config) {
		c.TLS = configoptional.Some(configtls.ServerConfig{
			Config:       configtls.Config{CertFile: pki.CertFile, KeyFile: pki.KeyFile},
			ClientCAFile: pki.CAFile,
		})
		c.Client.TLS = configtls.ClientConfig{Config: configtls.Config{CAFile: pki.CAFile, CertFile: pki.CertFile, KeyFile: pki.KeyFile}}
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      pki.Pool,
		Certificates: []tls.Certificate{pki.Client},
	}}}
	require.Eventually(t, func() bool {
		resp, err := client.Get("https://" + secured.endpoint + "/scrape_configs")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		configs = nil
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&configs) == nil && len(configs) == 1
	}, 10*time.Second, 100*time.Millisecond)
	assert.Equal(t, "hunter2", configs["secured"]["basic_auth"].(map[string]any)["password"])

	// Without a client certificate the TLS handshake itself is refused.
	anonymous := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}}}
	resp, err := anonymous.Get("https://" + secured.endpoint + "/scrape_configs")
	if err == nil {
		resp.Body.Close()
	}
	assert.Error(t, err)
}
