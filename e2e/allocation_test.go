package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

// metricsTarget is a real scrape target: an HTTP server on loopback that
// exposes one counter, as the demo's targets do.
func metricsTarget(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "# HELP TargetAllocator_total a sample counter metric\n# TYPE TargetAllocator_total counter\nTargetAllocator_total 1\n")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// stockReceiverConfig is a member that allocates with the target_allocator
// extension and scrapes its share with the stock prometheus receiver, whose
// target_allocator client asks this member's own API.
const stockReceiverConfig = `
extensions:
  target_allocator:
    auth_type: kubeConfig
    endpoint: ${env:ALLOCATOR_ENDPOINT}
    lease: {duration: 5s, renew_deadline: 3s, retry_period: 1s}
    config:
      scrape_configs:
%s
receivers:
  prometheus:
    config:
      scrape_configs: []
    target_allocator:
      endpoint: http://${env:ALLOCATOR_ENDPOINT}
      collector_id: ${env:POD_NAME}
      interval: 1s
      timeout: 5s
      http_sd_config:
        refresh_interval: 1s
exporters:
  prometheus:
    endpoint: ${env:EXPORTER_ENDPOINT}
service:
  extensions: [target_allocator]
  pipelines:
    metrics:
      receivers: [prometheus]
      exporters: [prometheus]
  telemetry:
    logs: {encoding: json}
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: ${env:TELEMETRY_PORT}
`

// seriesRE matches one exported sample of the demo counter.
var seriesRE = regexp.MustCompile(`^TargetAllocator_total\{.*instance="([^"]+)",job="([^"]+)".*\} `)

// scraped returns the job/instance pairs a member's prometheus exporter shows.
func scraped(exporter string) ([]string, error) {
	resp, err := http.Get("http://" + exporter + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := seriesRE.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, m[2]+"/"+m[1])
		}
	}
	return out, sc.Err()
}

// scrapedOnce checks that the members' exporters together show exactly
// want (job/instance pairs), each on one member, and returns who has which.
func scrapedOnce(c *assert.CollectT, procs []*process, want []string) map[string]string {
	owners := map[string]string{}
	var all []string
	for _, p := range procs {
		series, err := scraped(p.exporter)
		if !assert.NoError(c, err) {
			return nil
		}
		for _, s := range series {
			assert.NotContains(c, owners, s, "%s is scraped twice", s)
			owners[s] = p.name
		}
		all = append(all, series...)
	}
	slices.Sort(all)
	assert.Equal(c, want, all)
	return owners
}

// share asks a member's API for a member's targets in job, as the stock client does.
func share(t *testing.T, endpoint, job, collector string) []string {
	t.Helper()
	resp, err := http.Get("http://" + endpoint + "/jobs/" + url.QueryEscape(job) + "/targets?collector_id=" + url.QueryEscape(collector))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&groups))
	var out []string
	for _, g := range groups {
		out = append(out, g.Targets...)
	}
	slices.Sort(out)
	return out
}

// The stock prometheus receiver, pointed at any member with a member's
// collector_id, receives exactly that member's targets and scrapes them;
// across the group every target is scraped exactly once.
func TestStockReceiverScrapesItsShare(t *testing.T) {
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)

	// Jobs with awkward names, 12 real targets.
	jobs := []string{"otc0", "otc/1", "otc 2"}
	var want []string
	var scrapeConfigs strings.Builder
	for _, job := range jobs {
		var addrs []string
		for range 4 {
			addr := metricsTarget(t)
			addrs = append(addrs, fmt.Sprintf("%q", addr))
			want = append(want, job+"/"+addr)
		}
		fmt.Fprintf(&scrapeConfigs, "        - job_name: %q\n          scrape_interval: 1s\n          static_configs: [{targets: [%s]}]\n", job, strings.Join(addrs, ", "))
	}
	slices.Sort(want)
	config := filepath.Join(t.TempDir(), "replica.yaml")
	require.NoError(t, os.WriteFile(config, []byte(fmt.Sprintf(stockReceiverConfig, scrapeConfigs.String())), 0o600))

	var procs []*process
	for i := range 3 {
		procs = append(procs, startProcess(t, kubeconfig, fmt.Sprintf("otcta-collector-%d", i), config))
	}
	leader := settled(t, procs, 60*time.Second)
	follower := procs[0]
	if follower == leader {
		follower = procs[1]
	}

	// Every target is scraped by exactly one member: the one the API names.
	var owners map[string]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		owners = scrapedOnce(c, procs, want)
	}, 60*time.Second, 500*time.Millisecond)

	for _, p := range procs {
		for _, job := range jobs {
			fromLeader := share(t, leader.endpoint, job, p.name)
			assert.Equal(t, fromLeader, share(t, follower.endpoint, job, p.name), "a follower answers %s/%s as the leader does", job, p.name)
			var scrapedHere []string
			for s, owner := range owners {
				if owner == p.name && strings.HasPrefix(s, job+"/") {
					scrapedHere = append(scrapedHere, strings.TrimPrefix(s, job+"/"))
				}
			}
			slices.Sort(scrapedHere)
			assert.Equal(t, fromLeader, scrapedHere, "%s scrapes exactly its share of %s", p.name, job)
		}
	}
	counts := map[string]int{}
	for _, owner := range owners {
		counts[owner]++
	}
	t.Logf("measured: targets per replica %v", counts)
	for _, p := range procs {
		assert.Positive(t, counts[p.name], "%s has no target", p.name)
	}

	// The status page, asked of a follower, is the leader's: one row a member,
	// its endpoint, node and lease age, then its job and target counts.
	resp, err := http.Get("http://" + follower.endpoint + "/")
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, p := range procs {
		jobsOf := map[string]bool{}
		for s, owner := range owners {
			if owner == p.name {
				jobsOf[s[:strings.LastIndex(s, "/")]] = true
			}
		}
		row := fmt.Sprintf(`<tr><td>%s</td><td>[^<]+</td><td>[^<]*</td><td>[^<]+</td><td>%d</td><td>%d</td><td>[0-9]+</td></tr>`,
			regexp.QuoteMeta(p.name), len(jobsOf), counts[p.name])
		assert.Regexp(t, row, string(page))
	}

	// The leader's self-metrics count the same.
	v, err := leader.metric("otelcol_targetallocator_targets")
	require.NoError(t, err)
	assert.Equal(t, float64(len(want)), v)
	v, err = leader.metric("otelcol_targetallocator_targets_per_member")
	require.NoError(t, err)
	assert.Equal(t, float64(len(want)), v, "targets per member add up")
}
