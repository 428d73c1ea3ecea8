package integrationtest

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componentstatus"

	tae "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

// An election never empties anybody's share, on the users' path: a job of
// Kubernetes pod SD, a job of an HTTP SD endpoint that answers every
// request 3 s late, and a static job. The leader dies (cut off the API
// server, so it neither renews nor releases); every survivor's own answer
// for every job, polled five times a second through the election and until
// the new leader's slow discovery has answered, holds at least the targets
// it held before (a leave moves only the leaver's targets, to the
// survivors), and /scrape_configs never loses a job.
//
// Before jobs waited for their discovery to report, the new leader
// published the slow job with no targets about 100 ms into its term, and
// the survivors answered [] for it until the endpoint answered.
func TestElectionNeverEmptiesAShare(t *testing.T) {
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	for i := range 6 {
		controlPlane.RunningPod(t, ns, fmt.Sprintf("app-%d", i), fmt.Sprintf("127.0.0.%d", 31+i), "node-a", 9100, map[string]string{"app": "demo"})
	}
	slowTargets := []string{"10.0.1.1:9100", "10.0.1.2:9100", "10.0.1.3:9100", "10.0.1.4:9100", "10.0.1.5:9100", "10.0.1.6:9100"}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `[{"targets": [%q, %q, %q, %q, %q, %q]}]`,
			slowTargets[0], slowTargets[1], slowTargets[2], slowTargets[3], slowTargets[4], slowTargets[5])
	}))
	defer slow.Close()
	jobs := withScrapeConfigs(
		map[string]any{
			"job_name": "pods",
			"kubernetes_sd_configs": []any{map[string]any{
				"role": "pod", "kubeconfig_file": kubeconfig, "namespaces": map[string]any{"names": []any{ns}},
			}},
		},
		map[string]any{"job_name": "slow", "http_sd_configs": []any{map[string]any{"url": slow.URL, "refresh_interval": "1h"}}},
		staticJob("static", "10.0.2.1:9100", "10.0.2.2:9100", "10.0.2.3:9100", "10.0.2.4:9100", "10.0.2.5:9100", "10.0.2.6:9100"),
	)
	replicas := startGroup(t, ns, "users", 3, jobs)
	leader := settled(t, replicas, 10*time.Second)
	survivors := without(replicas, leader)
	names := []string{"pods", "slow", "static"}

	// Every member's share of every job, as it answers it.
	share := func(r *replica, job string) (map[string]bool, error) {
		var groups []struct {
			Targets []string `json:"targets"`
		}
		err := fetchJSON(r.url()+"/jobs/"+url.QueryEscape(job)+"/targets?collector_id="+url.QueryEscape(r.identity), &groups)
		out := map[string]bool{}
		for _, g := range groups {
			for _, target := range g.Targets {
				out[target] = true
			}
		}
		return out, err
	}
	before := map[string]map[string]map[string]bool{} // member → job → targets
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		total := map[string]int{}
		for _, r := range replicas {
			// As each member's receiver does: the scrape configs, then the
			// shares. (A member that never answered them has no copy.)
			var configs map[string]any
			if assert.NoError(c, fetchJSON(r.url()+"/scrape_configs", &configs)) {
				assert.Equal(c, names, slices.Sorted(maps.Keys(configs)))
			}
			before[r.identity] = map[string]map[string]bool{}
			for _, job := range names {
				s, err := share(r, job)
				assert.NoError(c, err)
				before[r.identity][job] = s
				total[job] += len(s)
			}
		}
		assert.Equal(c, map[string]int{"pods": 6, "slow": 6, "static": 6}, total, "every target in one share")
	}, 20*time.Second, 200*time.Millisecond)

	type answer struct {
		member, job string
		targets     map[string]bool
		at          time.Duration // after the leader was cut off
	}
	var (
		answers []answer
		lost    []string
	)
	var died time.Time
	poll := func() {
		for _, r := range survivors {
			for _, job := range names {
				s, err := share(r, job)
				if err != nil {
					lost = append(lost, fmt.Sprintf("%s %s: %v", r.identity, job, err))
				}
				answers = append(answers, answer{r.identity, job, s, time.Since(died)})
			}
			var configs map[string]any
			err := fetchJSON(r.url()+"/scrape_configs", &configs)
			if got := slices.Sorted(maps.Keys(configs)); err != nil || !slices.Equal(got, names) {
				lost = append(lost, fmt.Sprintf("%s: /scrape_configs has jobs %v (%v)", r.identity, got, err))
			}
		}
	}

	died = time.Now()
	leader.proxy.Cut()
	newLeader(t, survivors, died, 20*time.Second)
	elected := time.Since(died)
	// Past the new leader's slow discovery (3 s), and a margin.
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		poll()
	}

	// The new term's allocation holds every target again, the dead
	// member's moved to the survivors.
	after := map[string]map[string]map[string]bool{}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		total := map[string]int{}
		for _, r := range survivors {
			after[r.identity] = map[string]map[string]bool{}
			for _, job := range names {
				s, err := share(r, job)
				assert.NoError(c, err)
				after[r.identity][job] = s
				total[job] += len(s)
			}
		}
		assert.Equal(c, map[string]int{"pods": 6, "slow": 6, "static": 6}, total)
	}, 20*time.Second, 200*time.Millisecond)

	// A target a survivor holds before and after the election is in every
	// answer in between. (With so few targets, the load bounds may move a
	// survivor's target to the other survivor: that is a move, not a loss.)
	for _, a := range answers {
		for target := range before[a.member][a.job] {
			if after[a.member][a.job][target] && !a.targets[target] {
				lost = append(lost, fmt.Sprintf("%s lost %s of job %s %s after the leader was cut off", a.member, target, a.job, a.at.Round(time.Millisecond)))
			}
		}
	}
	t.Logf("measured: new leader after %s; %d answers of the survivors polled through the election", elected.Round(time.Millisecond), len(answers))
	assert.Empty(t, lost, "a survivor's answer got emptier")
}

// Jobs named "." and ".." are answered, not redirected: Go's ServeMux would
// answer /jobs/./targets with a redirect to /jobs/targets, and the stock
// client does not follow redirects.
func TestDotJobNames(t *testing.T) {
	ns := controlPlane.Namespace(t)
	r := startReplica(t, controlPlane.Config, ns, "dots-0", "dots",
		withScrapeConfigs(staticJob(".", "10.0.3.1:9100"), staticJob("..", "10.0.3.2:9100")))
	settled(t, []*replica{r}, 10*time.Second)
	for job, target := range map[string]string{".": "10.0.3.1:9100", "..": "10.0.3.2:9100"} {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := client.Get(r.url() + "/jobs/" + url.QueryEscape(job) + "/targets?collector_id=dots-0")
			if !assert.NoError(c, err) {
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			assert.Equal(c, http.StatusOK, resp.StatusCode, "job %q: %s", job, body)
			assert.Contains(c, string(body), target)
		}, 10*time.Second, 100*time.Millisecond)
	}
}

// A term that cannot start (a file of scrape_config_files that does not
// parse for a moment, as while its ConfigMap is updated) is retried while the
// member leads: the component reports a recoverable error meanwhile, and once
// the file parses the leader allocates its jobs, in the same term.
func TestFailedTermIsRetried(t *testing.T) {
	ns := controlPlane.Namespace(t)
	file := filepath.Join(t.TempDir(), "jobs.yaml")
	good := []byte("scrape_configs: [{job_name: late, static_configs: [{targets: [10.0.4.1:9100]}]}]\n")
	require.NoError(t, os.WriteFile(file, good, 0o600))
	replicas := startGroup(t, ns, "retry", 2, func(c *tae.Config) {
		c.Config = map[string]any{"scrape_config_files": []any{file}}
	})
	leader := settled(t, replicas, 10*time.Second)
	next := without(replicas, leader)[0]

	// The file breaks; the leader dies; its successor cannot start its term.
	require.NoError(t, os.WriteFile(file, []byte("scrape_configs: [{job_name: late, static_con"), 0o600))
	leader.proxy.Cut()
	newLeader(t, []*replica{next}, time.Now(), 20*time.Second)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ev := next.host.last()
		if assert.NotNil(c, ev) {
			assert.Equal(c, componentstatus.StatusRecoverableError, ev.Status())
			assert.ErrorContains(c, ev.Err(), "leader term")
		}
	}, 10*time.Second, 50*time.Millisecond)
	epoch := next.ext.View().Epoch

	require.NoError(t, os.WriteFile(file, good, 0o600))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var groups []struct {
			Targets []string `json:"targets"`
		}
		url := next.url() + "/jobs/late/targets?collector_id=" + next.identity
		if assert.NoError(c, fetchJSON(url, &groups)) && assert.Len(c, groups, 1) {
			assert.Equal(c, []string{"10.0.4.1:9100"}, groups[0].Targets)
		}
		assert.Equal(c, componentstatus.StatusOK, next.host.last().Status())
	}, 20*time.Second, 100*time.Millisecond)
	assert.Equal(t, epoch, next.ext.View().Epoch, "the same term, retried")
	assert.NotEmpty(t, next.logs.FilterMessage("Cannot start allocating targets while leading; retrying").All())
}

// A member cut off from the API server, but not from its peers, loses its
// Lease; once the leader has given its targets to the others, it answers
// its shares empty instead of scraping them too, and it takes targets again
// once the API server is back. The same for the leader: it steps down, the
// others elect a new leader, and it learns of it from its peers (it cannot
// read the Lease), so that its share stops as the others take it over.
func TestCutOffFromTheAPIServerStopsItsShare(t *testing.T) {
	for _, who := range []string{"member", "leader"} {
		t.Run(who, func(t *testing.T) {
			ns := controlPlane.Namespace(t)
			targets := make([]string, 12)
			for i := range targets {
				targets[i] = fmt.Sprintf("10.0.5.%d:9100", i+1)
			}
			replicas := startGroup(t, ns, "cut", 3, withScrapeConfigs(staticJob("static", targets...)))
			leader := settled(t, replicas, 10*time.Second)
			cut := without(replicas, leader)[0]
			if who == "leader" {
				cut = leader
			}
			own := func(r *replica) []string {
				var groups []struct {
					Targets []string `json:"targets"`
				}
				if err := fetchJSON(r.url()+"/jobs/static/targets?collector_id="+r.identity, &groups); err != nil {
					return nil
				}
				var out []string
				for _, g := range groups {
					out = append(out, g.Targets...)
				}
				return out
			}
			require.Eventually(t, func() bool { return len(own(cut)) > 0 }, 10*time.Second, 100*time.Millisecond)

			since := time.Now()
			cut.proxy.Cut()
			require.Eventually(t, func() bool {
				// An empty share, not an error: Prometheus HTTP SD keeps its
				// targets when an answer fails.
				var groups []any
				return fetchJSON(cut.url()+"/jobs/static/targets?collector_id="+cut.identity, &groups) == nil && len(groups) == 0
			}, 30*time.Second, 100*time.Millisecond, "the %s cut off from the API server goes on answering its share", who)
			stopped := time.Since(since)
			// The others answer from the new allocation within a round trip
			// of it (a cut-off leader's share empties as soon as it hears
			// from the new leader, whose first allocation may still be on
			// its way to them).
			held := 0
			assert.Eventually(t, func() bool {
				held = 0
				for _, r := range without(replicas, cut) {
					held += len(own(r))
				}
				return held == len(targets)
			}, 5*time.Second, 50*time.Millisecond, "the others hold every target")
			t.Logf("measured: the cut-off %s's share was empty %s after the cut (lease %s); the others held all %d targets %s after that",
				who, stopped.Round(time.Millisecond), testLease.Duration, held, (time.Since(since) - stopped).Round(time.Millisecond))
			assert.LessOrEqual(t, stopped, testLease.Duration+testLease.RetryPeriod+2*time.Second)

			cut.proxy.Restore()
			require.Eventually(t, func() bool { return len(own(cut)) > 0 }, 20*time.Second, 100*time.Millisecond,
				"the %s does not rejoin once the API server is back", who)
		})
	}
}
