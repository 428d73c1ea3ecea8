package e2e

import (
	"bufio"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/demotarget"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

// fast makes the members scrape and refresh every second.
var fast = []string{"SCRAPE_INTERVAL=1s", "REFRESH_INTERVAL=1s"}

// The demo's merged listing, as instance/job pairs.
var demoSeries = []string{
	"otc0 127.0.0.1:9090", "otc1 127.0.0.1:9091", "otc2 127.0.0.1:9092",
	"otc3 127.0.0.2:9090", "otc4 127.0.0.2:9091", "otc5 127.0.0.2:9092",
}

func startDemoTargets(t *testing.T) map[string]*demotarget.Target {
	t.Helper()
	targets, err := demotarget.StartDemo()
	require.NoError(t, err)
	byAddr := map[string]*demotarget.Target{}
	for _, target := range targets {
		byAddr[target.Addr] = target
		t.Cleanup(func() { _ = target.Close() })
	}
	return byAddr
}

var (
	counterRE    = regexp.MustCompile(`^TargetAllocator_total\{instance="([^"]+)",job="([^"]+)"`)
	targetInfoRE = regexp.MustCompile(`^target_info\{instance="([^"]+)",job="([^"]+)"[^}]*\} 1$`)
)

// listing is what `curl <exporter>/metrics | grep -E '(target_info|TargetAllocator_total)'`
// shows of a member: the counters and target_info series as "job instance".
type listing struct {
	counters, infos []string
	lines           []string
}

func exported(p *process) (listing, error) {
	var l listing
	resp, err := http.Get("http://" + p.exporter + "/metrics")
	if err != nil {
		return l, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := counterRE.FindStringSubmatch(line); m != nil {
			l.counters = append(l.counters, m[2]+" "+m[1])
			l.lines = append(l.lines, line)
		}
		if m := targetInfoRE.FindStringSubmatch(line); m != nil {
			l.infos = append(l.infos, m[2]+" "+m[1])
			l.lines = append(l.lines, line)
		}
	}
	return l, sc.Err()
}

// scrapedBy returns which replica scrapes each series of the demo counter,
// and fails if one is scraped by two.
func scrapedBy(procs []*process) (owners map[string]string, infos []string, err error) {
	owners = map[string]string{}
	for _, p := range procs {
		l, err := exported(p)
		if err != nil {
			return nil, nil, err
		}
		for _, s := range l.counters {
			if other, dup := owners[s]; dup {
				return nil, nil, fmt.Errorf("%s is scraped by %s and %s", s, other, p.name)
			}
			owners[s] = p.name
		}
		infos = append(infos, l.infos...)
	}
	return owners, infos, nil
}

// union waits until the members' exporters together show exactly want,
// each series on one member only, and returns which replica has which.
func union(t *testing.T, procs []*process, want []string, within time.Duration) map[string]string {
	t.Helper()
	return exportedOnce(t, procs, want, within, false)
}

// balancedOwners is union that also waits until every replica exports
// within one target of every other, as the default strategy ends. A member
// that joins gets its targets make before break, after its first scrape of
// each, so the first replica may hold them all for a while.
func balancedOwners(t *testing.T, procs []*process, want []string, within time.Duration) map[string]string {
	t.Helper()
	return exportedOnce(t, procs, want, within, true)
}

func exportedOnce(t *testing.T, procs []*process, want []string, within time.Duration, balanced bool) map[string]string {
	t.Helper()
	var owners map[string]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var infos []string
		var err error
		owners, infos, err = scrapedBy(procs)
		if !assert.NoError(c, err) {
			return
		}
		slices.Sort(infos)
		assert.Equal(c, want, slices.Sorted(maps.Keys(owners)), "TargetAllocator_total series")
		assert.Equal(c, want, infos, "target_info series")
		if !balanced {
			return
		}
		perReplica := map[string]int{}
		for _, o := range owners {
			perReplica[o]++
		}
		var counts []int
		for _, p := range procs {
			counts = append(counts, perReplica[p.name])
		}
		assert.LessOrEqual(c, slices.Max(counts)-slices.Min(counts), 1, "targets per replica %v", perReplica)
	}, within, 250*time.Millisecond)
	return owners
}

func startGroup(t *testing.T, kubeconfig, group string, n int, config string, env ...string) []*process {
	t.Helper()
	var procs []*process
	for i := range n {
		procs = append(procs, startProcess(t, kubeconfig, fmt.Sprintf("%s-%d", group, i), config, env...))
	}
	return procs
}

// The demo, as `make demo` runs it, without a separate Target Allocator: six
// jobs, six targets, three replicas; every target scraped by exactly one
// replica, and the merged listing is demoSeries.
func TestDemoScenario(t *testing.T) {
	startDemoTargets(t)
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	procs := startGroup(t, kubeconfig, "otcta-collector", 3, replicaConfig, fast...)
	settled(t, procs, 60*time.Second)

	owners := balancedOwners(t, procs, demoSeries, 60*time.Second)
	perReplica := map[string]int{}
	for _, o := range owners {
		perReplica[o]++
	}
	for _, p := range procs {
		assert.Positive(t, perReplica[p.name], "%s scrapes nothing", p.name)
	}
	var merged []string
	for _, p := range procs {
		l, err := exported(p)
		require.NoError(t, err)
		merged = append(merged, l.lines...)
	}
	slices.Sort(merged)
	// target_info exactly as in demoSeries.
	for _, series := range demoSeries {
		job, instance, _ := strings.Cut(series, " ")
		_, port, _ := strings.Cut(instance, ":")
		assert.Contains(t, merged, fmt.Sprintf(`target_info{instance="%s",job="%s",server_port="%s",url_scheme="http"} 1`, instance, job, port))
	}
	t.Logf("measured: series per replica %v; merged listing:\n%s", perReplica, strings.Join(merged, "\n"))
}

// Many jobs of one target each, as when every exporter has a job of its
// own: the default strategy balances the members' totals, not each job, so
// 14 one-target jobs over 4 replicas end 3 or 4 a replica, every target
// scraped by exactly one.
func TestManyOneTargetJobsBalance(t *testing.T) {
	const jobs, replicas = 14, 4
	var want []string
	var configs strings.Builder
	for i := range jobs {
		addr := fmt.Sprintf("127.0.0.5:%d", 9090+i)
		target, err := demotarget.Start(addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = target.Close() })
		job := fmt.Sprintf("exporter%02d", i)
		want = append(want, job+" "+addr)
		fmt.Fprintf(&configs, "        - job_name: %s\n          static_configs: [{targets: [%q]}]\n          metric_relabel_configs: *keep\n", job, addr)
	}
	slices.Sort(want)
	base, err := os.ReadFile(replicaConfig)
	require.NoError(t, err)
	// The demo's six jobs make way for the many: the first keeps the
	// &keep anchor the others refer to.
	jobsRE := regexp.MustCompile(`(?s)        - job_name: otc0\n.*?regex: up\|TargetAllocator\.\*\n              action: keep\n(        - job_name: otc.*?metric_relabel_configs: \*keep\n)+`)
	require.Regexp(t, jobsRE, string(base), "the demo's jobs in %s", replicaConfig)
	first := strings.Replace(configs.String(), "metric_relabel_configs: *keep\n", "metric_relabel_configs: &keep\n            - source_labels: [__name__]\n              regex: up|TargetAllocator.*\n              action: keep\n", 1)
	cfg := jobsRE.ReplaceAllLiteralString(string(base), first)
	path := filepath.Join(t.TempDir(), "many-jobs.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))

	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	procs := startGroup(t, kubeconfig, "otcta-collector", replicas, path, fast...)
	settled(t, procs, 60*time.Second)
	owners := balancedOwners(t, procs, want, 60*time.Second)
	perReplica := map[string]int{}
	for _, o := range owners {
		perReplica[o]++
	}
	t.Logf("measured: %d one-target jobs over %d replicas: targets per replica %v", jobs, replicas, perReplica)
}

// The problem of a second Target Allocator: a second group in the same namespace
// with jobs of its own. Neither group scrapes the other's targets, and no
// replica sits empty.
func TestTwoGroupsNeverShareTargets(t *testing.T) {
	startDemoTargets(t)
	var second []string
	for _, addr := range []string{"127.0.0.3:9090", "127.0.0.3:9091", "127.0.0.4:9090", "127.0.0.4:9091"} {
		target, err := demotarget.Start(addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = target.Close() })
		second = append(second, addr)
	}
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)

	// otcta2: the same file with other jobs and targets.
	base, err := os.ReadFile(replicaConfig)
	require.NoError(t, err)
	cfg2 := strings.NewReplacer(
		"127.0.0.1:9090", second[0], "127.0.0.1:9091", second[1], "127.0.0.1:9092", second[2], "127.0.0.2:9090", second[3],
		"job_name: otc", "job_name: otcta2-job",
	).Replace(string(base))
	// Keep four jobs of the second group's file: drop otc4 and otc5.
	cfg2 = regexp.MustCompile(`(?s)        - job_name: otcta2-job4.*?metric_relabel_configs: \*keep\n        - job_name: otcta2-job5.*?metric_relabel_configs: \*keep\n`).ReplaceAllString(cfg2, "")
	require.NotContains(t, cfg2, "127.0.0.2:", "the second group must not list the first group's targets")
	path2 := filepath.Join(t.TempDir(), "otcta2.yaml")
	require.NoError(t, os.WriteFile(path2, []byte(cfg2), 0o600))

	first := startGroup(t, kubeconfig, "otcta-collector", 3, replicaConfig, fast...)
	other := startGroup(t, kubeconfig, "otcta2-collector", 2, path2, fast...)
	settled(t, first, 60*time.Second)
	settled(t, other, 60*time.Second)

	var want2 []string
	for i, addr := range second {
		want2 = append(want2, fmt.Sprintf("otcta2-job%d %s", i, addr))
	}
	slices.Sort(want2)
	owners1 := balancedOwners(t, first, demoSeries, 60*time.Second)
	owners2 := balancedOwners(t, other, want2, 60*time.Second)
	for _, group := range []struct {
		procs  []*process
		owners map[string]string
	}{{first, owners1}, {other, owners2}} {
		count := map[string]int{}
		for _, o := range group.owners {
			count[o]++
		}
		for _, p := range group.procs {
			assert.Positive(t, count[p.name], "%s sits empty", p.name)
		}
		t.Logf("measured: series per replica %v", count)
	}
}
