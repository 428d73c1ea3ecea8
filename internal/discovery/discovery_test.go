package discovery

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// waitFor is how long a test waits for discovery to report a change
// (batched for up to maxBatch; HTTP SD's first request may be slow).
const waitFor = 30 * time.Second

// newLogger records logs, and prints them if the test fails. Unlike a zaptest
// logger it is safe to use from goroutines that outlive the test.
func newLogger(t testing.TB) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range logs.All() {
				t.Logf("%s %s %v", e.Level, e.Message, e.ContextMap())
			}
		}
	})
	return zap.New(core), logs
}

// start runs a Discoverer for the config in doc until the test ends.
func start(t testing.TB, doc string, filter FilterStrategy) *Discoverer {
	t.Helper()
	cfg, err := LoadConfig(confmap(t, doc))
	require.NoError(t, err)
	logger, _ := newLogger(t)
	d, err := New(cfg, filter, logger, prometheus.NewRegistry())
	require.NoError(t, err)
	run(t, d)
	return d
}

// run runs d until the test ends and checks that Run returns nil.
func run(t testing.TB, d *Discoverer) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(waitFor):
			t.Error("Run did not return after its context was cancelled")
		}
	})
	t.Cleanup(stop)
	return stop
}

// await returns the first snapshot for which ok holds.
func await(t testing.TB, d *Discoverer, what string, ok func(Snapshot) bool) Snapshot {
	t.Helper()
	timeout := time.After(waitFor)
	var last Snapshot
	for {
		select {
		case s := <-d.Snapshots():
			if ok(s) {
				return s
			}
			last = s
		case <-timeout:
			t.Fatalf("no snapshot with %s within %s; last: %s", what, waitFor, describe(last))
		}
	}
}

// addresses returns a job's target addresses, sorted.
func addresses(s Snapshot, job string) []string {
	var out []string
	for _, t := range s.Jobs[job] {
		out = append(out, t.Labels().Get("__address__"))
	}
	slices.Sort(out)
	return out
}

func hasAddresses(job string, want ...string) func(Snapshot) bool {
	slices.Sort(want)
	return func(s Snapshot) bool { return slices.Equal(addresses(s, job), want) }
}

func describe(s Snapshot) string {
	var b strings.Builder
	for job, targets := range s.Jobs {
		fmt.Fprintf(&b, "\n  %s:", job)
		for _, t := range targets {
			fmt.Fprintf(&b, "\n    %016x node=%q %s", t.Hash, t.Node, t.Labels())
		}
	}
	return b.String()
}

func byAddress(targets []Target) map[string]Target {
	out := map[string]Target{}
	for _, t := range targets {
		out[t.Labels().Get("__address__")] = t
	}
	return out
}

func TestStaticConfigs(t *testing.T) {
	const doc = `
global: {scrape_interval: 15s}
scrape_configs:
- job_name: web
  static_configs:
  - targets: ["10.0.0.1:80", "10.0.0.2:80"]
    labels: {team: web, __meta_zone: a}
  - targets: ["10.0.0.3:80"]
- job_name: db
  metrics_path: /stats
  static_configs:
  - targets: ["10.0.1.1:9187"]
    labels: {__address__: "ignored:1"}
- job_name: idle
`
	d := start(t, doc, FilterRelabelConfig)
	s := await(t, d, "web and db targets", func(s Snapshot) bool { return len(s.Jobs["web"]) == 3 && len(s.Jobs["db"]) == 1 })

	assert.Equal(t, []string{"db", "idle", "web"}, slices.Sorted(maps.Keys(s.Jobs)), "every configured job, with or without targets")
	assert.Empty(t, s.Jobs["idle"])
	assert.Equal(t, []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}, addresses(s, "web"))
	assert.Equal(t, []string{"10.0.1.1:9187"}, addresses(s, "db"), "a target label wins over a group label")

	web := byAddress(s.Jobs["web"])
	// Discovered labels: group labels merged with target labels, as Prometheus
	// merges them, without the job's defaults (the receiver adds those).
	assert.Equal(t, labels.FromStrings("__address__", "10.0.0.1:80", "__meta_zone", "a", "team", "web"), web["10.0.0.1:80"].Labels())
	assert.Equal(t, labels.FromStrings("__address__", "10.0.0.3:80"), web["10.0.0.3:80"].Labels())
	for _, target := range s.Jobs["web"] {
		assert.Empty(t, target.Node)
	}
	assert.True(t, slices.IsSortedFunc(s.Jobs["web"], func(a, b Target) int { return cmp.Compare(a.Hash, b.Hash) }))

	// The same targets get the same hashes from another Discoverer.
	again := await(t, start(t, doc, FilterRelabelConfig), "web and db targets", func(s Snapshot) bool { return len(s.Jobs["web"]) == 3 && len(s.Jobs["db"]) == 1 })
	assert.Equal(t, hashes(s), hashes(again))
}

func hashes(s Snapshot) map[string]uint64 {
	out := map[string]uint64{}
	for job, targets := range s.Jobs {
		for _, t := range targets {
			out[job+"/"+t.Labels().Get("__address__")] = t.Hash
		}
	}
	return out
}

// A target keeps its hash when only its metadata changes, and gets a new one
// when what Prometheus scrapes changes.
func TestHashIsPrometheusIdentity(t *testing.T) {
	const base = `
scrape_configs:
- job_name: j
  static_configs:
  - targets: ["10.0.0.1:80"]
    labels: {__meta_zone: a, team: x}
  relabel_configs:
  - {source_labels: [__meta_role], target_label: role}
`
	hashOf := func(t *testing.T, doc string, filter FilterStrategy) uint64 {
		t.Helper()
		s := await(t, start(t, doc, filter), "the target", func(s Snapshot) bool { return len(s.Jobs["j"]) == 1 })
		return s.Jobs["j"][0].Hash
	}
	want := hashOf(t, base, FilterRelabelConfig)
	for _, tc := range []struct {
		name, old, new string
		same           bool
	}{
		{"meta label changes", "__meta_zone: a", "__meta_zone: b", true},
		{"meta label added", "__meta_zone: a", "__meta_zone: a, __meta_other: z", true},
		{"meta label used by relabeling changes", "__meta_zone: a", "__meta_zone: a, __meta_role: db", false},
		{"target label changes", "team: x", "team: y", false},
		{"address changes", "10.0.0.1:80", "10.0.0.1:81", false},
		{"metrics path changes", "- job_name: j", "- job_name: j\n  metrics_path: /other", false},
		{"job name changes", "- job_name: j\n", "- job_name: k\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(base, tc.old, tc.new, 1)
			require.NotEqual(t, base, doc)
			job := "j"
			if strings.Contains(tc.new, "job_name: k") {
				job = "k"
			}
			s := await(t, start(t, doc, FilterRelabelConfig), "the target", func(s Snapshot) bool { return len(s.Jobs[job]) == 1 })
			if tc.same {
				assert.Equal(t, want, s.Jobs[job][0].Hash)
			} else {
				assert.NotEqual(t, want, s.Jobs[job][0].Hash)
			}
		})
	}
	t.Run("same under either filter strategy", func(t *testing.T) {
		assert.Equal(t, want, hashOf(t, base, FilterNone))
	})
}

func TestFileSD(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "targets.json")
	write := func(content string) {
		// Write and rename, as a config management tool would: the reader
		// never sees half a file.
		tmp := filepath.Join(dir, "tmp")
		require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
		require.NoError(t, os.Rename(tmp, file))
	}
	write(`[{"targets": ["127.0.0.1:9100", "127.0.0.2:9100"], "labels": {"env": "prod"}}]`)

	d := start(t, fmt.Sprintf(`
scrape_configs:
- job_name: files
  file_sd_configs: [{files: [%q], refresh_interval: 1h}]
`, filepath.Join(dir, "*.json")), FilterRelabelConfig)

	s := await(t, d, "the file's targets", hasAddresses("files", "127.0.0.1:9100", "127.0.0.2:9100"))
	target := s.Jobs["files"][0]
	assert.Equal(t, "prod", target.Labels().Get("env"))
	assert.Equal(t, file, target.Labels().Get("__meta_filepath"))

	write(`[{"targets": ["127.0.0.2:9100", "127.0.0.3:9100"], "labels": {"env": "prod"}}]`)
	await(t, d, "the rewritten file's targets", hasAddresses("files", "127.0.0.2:9100", "127.0.0.3:9100"))

	require.NoError(t, os.Remove(file))
	await(t, d, "no targets once the file is gone", hasAddresses("files"))
}

// A leader runs discovery once per term; nothing may outlive a term.
func TestRunLeavesNoGoroutines(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "t.yaml"), []byte("- targets: ['127.0.0.1:1']\n"), 0o600))
	cfg, err := LoadConfig(confmap(t, fmt.Sprintf(`
scrape_configs:
- job_name: static
  static_configs: [{targets: ["127.0.0.1:2"]}]
- job_name: files
  file_sd_configs: [{files: [%q]}]
`, filepath.Join(dir, "*.yaml"))))
	require.NoError(t, err)
	logger, _ := newLogger(t)

	ignore := goleak.IgnoreCurrent()
	for term := range 3 {
		d, err := New(cfg, FilterRelabelConfig, logger, prometheus.NewRegistry())
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		await(t, d, "both jobs' targets", func(s Snapshot) bool { return len(s.Jobs["static"]) == 1 && len(s.Jobs["files"]) == 1 })
		cancel()
		require.NoError(t, <-done, "term %d", term)
		goleak.VerifyNone(t, ignore)
	}
}

// Each term's SD metrics are on its own registry, where the caller reads
// them; a registry that holds another term's refuses them, and Run says so.
func TestMetricsOnTheTermsRegistry(t *testing.T) {
	cfg, err := LoadConfig(confmap(t, `scrape_configs: [{job_name: j, static_configs: [{targets: ["127.0.0.1:1", "127.0.0.1:2"]}]}]`))
	require.NoError(t, err)
	discovered := func(reg *prometheus.Registry) map[string]float64 {
		families, err := reg.Gather()
		require.NoError(t, err)
		n := map[string]float64{}
		for _, f := range families {
			if f.GetName() == DiscoveredTargetsMetric {
				for _, m := range f.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "job" {
							n[l.GetValue()] = m.GetGauge().GetValue()
						}
					}
				}
			}
		}
		return n
	}

	for range 2 {
		reg := prometheus.NewRegistry()
		d, err := New(cfg, FilterRelabelConfig, nil, reg)
		require.NoError(t, err)
		run(t, d)
		await(t, d, "the targets", hasAddresses("j", "127.0.0.1:1", "127.0.0.1:2"))
		assert.Equal(t, map[string]float64{"j": 2}, discovered(reg))
		assert.Positive(t, processed(t, reg), "each pass over the targets is timed")

		again, err := New(cfg, FilterRelabelConfig, nil, reg)
		require.NoError(t, err)
		assert.ErrorContains(t, again.Run(context.Background()), "register SD metrics")
	}
}

// processed counts the passes over the targets that reg's histogram timed.
func processed(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == ProcessTargetsDurationMetric {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func TestRunRunsOnce(t *testing.T) {
	cfg, err := LoadConfig(nil)
	require.NoError(t, err)
	d, err := New(cfg, FilterRelabelConfig, nil, nil)
	require.NoError(t, err)
	stop := run(t, d)
	require.Eventually(t, d.ran.Load, waitFor, 10*time.Millisecond)
	assert.ErrorContains(t, d.Run(context.Background()), "Run runs once")
	stop()
	assert.ErrorContains(t, d.Run(context.Background()), "Run runs once")
}

func TestNewRejectsUnknownFilter(t *testing.T) {
	_, err := New(nil, "relabel", nil, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"relabel"`)
	assert.Contains(t, err.Error(), `"relabel-config"`)
}

// A reader that falls behind gets the latest snapshot, and Run never waits for it.
func TestSnapshotsCoalesce(t *testing.T) {
	d, err := New(nil, FilterNone, nil, nil)
	require.NoError(t, err)
	for i := range 3 {
		d.publish(Snapshot{Jobs: map[string][]Target{"j": make([]Target, i)}})
	}
	s := <-d.Snapshots()
	assert.Len(t, s.Jobs["j"], 2)
	select {
	case s := <-d.Snapshots():
		t.Fatalf("a second snapshot: %v", s)
	default:
	}
}

// Prometheus logs through slog; they reach the zap logger at their level. An
// SD config that cannot start leaves its job without targets, and says so.
func TestPrometheusLogsReachZap(t *testing.T) {
	cfg, err := LoadConfig(confmap(t, `
scrape_configs:
- job_name: broken
  kubernetes_sd_configs: [{role: pod, kubeconfig_file: /nonexistent/kubeconfig}]
- job_name: fine
  static_configs: [{targets: ["127.0.0.1:1"]}]
`))
	require.NoError(t, err)
	logger, logs := newLogger(t)
	d, err := New(cfg, FilterRelabelConfig, logger.Named("discovery"), nil)
	require.NoError(t, err)
	run(t, d)
	s := await(t, d, "the fine job's target", hasAddresses("fine", "127.0.0.1:1"))
	assert.Contains(t, s.Jobs, "broken")
	assert.Empty(t, s.Jobs["broken"])

	failed := logs.FilterMessage("Cannot create service discovery").All()
	require.Len(t, failed, 1)
	assert.Equal(t, zapcore.ErrorLevel, failed[0].Level)
	assert.Equal(t, "discovery", failed[0].LoggerName)
	assert.Equal(t, "broken", failed[0].ContextMap()["config"])
	assert.Empty(t, failed[0].Stack, "no stack trace for an SD error")
}

// SetJobs adds, changes and removes jobs while Run runs; a job whose config
// is the same pointer keeps its targets and their hashes.
func TestSetJobs(t *testing.T) {
	load := func(doc string) []*config.ScrapeConfig {
		cfg, err := LoadConfig(confmap(t, doc))
		require.NoError(t, err)
		jobs, err := cfg.GetScrapeConfigs()
		require.NoError(t, err)
		return jobs
	}
	static := load(`
scrape_configs:
- job_name: static
  static_configs: [{targets: ["10.0.0.1:80"]}]
`)
	d := start(t, `
scrape_configs:
- job_name: static
  static_configs: [{targets: ["10.0.0.9:80"]}]
`, FilterRelabelConfig)
	await(t, d, "the first config", hasAddresses("static", "10.0.0.9:80"))

	d.SetJobs(static)
	first := await(t, d, "the new static job", hasAddresses("static", "10.0.0.1:80"))

	added := load(`
scrape_configs:
- job_name: added
  static_configs: [{targets: ["10.0.1.1:80", "10.0.1.2:80"]}]
`)
	d.SetJobs(append(slices.Clone(static), added...))
	both := await(t, d, "both jobs", func(s Snapshot) bool {
		return hasAddresses("static", "10.0.0.1:80")(s) && hasAddresses("added", "10.0.1.1:80", "10.0.1.2:80")(s)
	})
	assert.Equal(t, first.Jobs["static"][0].Hash, both.Jobs["static"][0].Hash)

	// A changed config of the same job: the relabeling now drops one target.
	changed := load(`
scrape_configs:
- job_name: added
  static_configs: [{targets: ["10.0.1.1:80", "10.0.1.2:80"]}]
  relabel_configs: [{source_labels: [__address__], regex: "10.0.1.2:80", action: drop}]
`)
	d.SetJobs(append(slices.Clone(static), changed...))
	await(t, d, "the relabeled job", hasAddresses("added", "10.0.1.1:80"))

	d.SetJobs(static)
	gone := await(t, d, "the job removed", func(s Snapshot) bool { _, ok := s.Jobs["added"]; return !ok })
	assert.Equal(t, []string{"static"}, slices.Sorted(maps.Keys(gone.Jobs)))
}
