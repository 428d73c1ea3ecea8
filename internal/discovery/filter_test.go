package discovery

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
)

// updateAll makes groups the job's groups, as whole lists: each group a
// change of one provider, and one without targets for each group the filter
// holds that groups do not.
func updateAll(f *filter, job *config.ScrapeConfig, groups []*targetgroup.Group) (*jobTargets, bool) {
	changes := make([]change, 0, len(groups))
	kept := map[groupKey]bool{}
	for _, g := range groups {
		k := groupKey{source: g.Source}
		kept[k] = true
		changes = append(changes, change{key: k, group: g})
	}
	if last := f.jobs[job.JobName]; last != nil {
		for k := range last.byGroup {
			if !kept[k] {
				changes = append(changes, change{key: k, group: &targetgroup.Group{Source: k.source}})
			}
		}
	}
	return f.update(job, changes)
}

// staticJob loads a config with one job and returns it with its static groups.
func staticJob(t testing.TB, doc string) (*config.ScrapeConfig, []*targetgroup.Group) {
	t.Helper()
	cfg, err := LoadConfig(confmap(t, doc))
	require.NoError(t, err)
	require.Len(t, cfg.ScrapeConfigs, 1)
	job := cfg.ScrapeConfigs[0]
	var groups []*targetgroup.Group
	for _, sd := range job.ServiceDiscoveryConfigs {
		groups = append(groups, sd.(discovery.StaticConfig)...)
	}
	return job, groups
}

func TestRelabelFilter(t *testing.T) {
	const targets = `
  static_configs:
  - targets: ["10.0.0.1:80", "10.0.0.2:80"]
    labels: {__meta_app: web}
  - targets: ["10.0.0.3:80"]
    labels: {__meta_app: db}
  - targets: [""]
    labels: {__meta_app: none}
`
	all := []string{"", "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
	for _, tc := range []struct {
		name    string
		relabel string
		filter  FilterStrategy
		want    []string // discovered __address__ of the targets kept
		failed  int      // targets Prometheus would not scrape, dropped or not
	}{{
		name:    "keep",
		relabel: `[{source_labels: [__meta_app], regex: web, action: keep}]`,
		filter:  FilterRelabelConfig,
		want:    []string{"10.0.0.1:80", "10.0.0.2:80"},
	}, {
		name:    "drop",
		relabel: `[{source_labels: [__meta_app], regex: web|none, action: drop}]`,
		filter:  FilterRelabelConfig,
		want:    []string{"10.0.0.3:80"},
	}, {
		name:    "drop on the job's defaults",
		relabel: `[{source_labels: [job, __metrics_path__, __scheme__], regex: "j;/metrics;http", action: drop}]`,
		filter:  FilterRelabelConfig,
		want:    nil,
	}, {
		name:    "address set by relabeling",
		relabel: `[{source_labels: [__meta_app], regex: none, target_label: __address__, replacement: "10.0.0.9:80"}]`,
		filter:  FilterRelabelConfig,
		want:    all,
	}, {
		name:    "no rules: only the target without an address goes",
		relabel: `[]`,
		filter:  FilterRelabelConfig,
		want:    []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"},
		failed:  1,
	}, {
		name:    "keep without filtering",
		relabel: `[{source_labels: [__meta_app], regex: web, action: keep}]`,
		filter:  FilterNone,
		want:    all,
	}, {
		name:    "drop without filtering",
		relabel: `[{source_labels: [__meta_app], regex: web, action: drop}]`,
		filter:  FilterNone,
		want:    all,
		failed:  1,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			job, groups := staticJob(t, "scrape_configs:\n- job_name: j\n  relabel_configs: "+tc.relabel+targets)
			res, _ := updateAll(newFilter(tc.filter), job, groups)
			got := res.sorted
			assert.Equal(t, tc.want, addresses(Snapshot{Jobs: map[string][]Target{"j": got}}, "j"))
			assert.Equal(t, tc.failed, res.failed, "%v", res.err)
			if res.failed > 0 {
				assert.ErrorContains(t, res.err, "no address")
			}
			if tc.filter == FilterRelabelConfig {
				assertSameAsPrometheus(t, job, groups, got)
			}
		})
	}
}

// assertSameAsPrometheus checks that got are the targets Prometheus's scrape
// pool would create from groups.
func assertSameAsPrometheus(t *testing.T, job *config.ScrapeConfig, groups []*targetgroup.Group, got []Target) {
	t.Helper()
	lb := labels.NewBuilder(labels.EmptyLabels())
	var want []labels.Labels
	for _, g := range groups {
		targets, _ := scrape.TargetsFromGroup(g, job, nil, lb)
		for _, target := range targets {
			// The scrape pool's test for an active target.
			if !target.Labels(lb).IsEmpty() {
				want = append(want, target.DiscoveredLabels(lb))
			}
		}
	}
	require.Len(t, got, len(want))
	for _, target := range got {
		// Ours lack only the job's defaults.
		i := slices.IndexFunc(want, func(w labels.Labels) bool {
			return target.Labels().Len() <= w.Len() && target.Labels().Validate(func(l labels.Label) error {
				if w.Get(l.Name) != l.Value {
					return fmt.Errorf("differs")
				}
				return nil
			}) == nil
		})
		require.GreaterOrEqual(t, i, 0, "%s is not a Prometheus target", target.Labels())
		want = slices.Delete(want, i, i+1)
	}
}

// Prometheus scrapes two targets with the same labels after relabeling once.
func TestFilterDeduplicates(t *testing.T) {
	job, groups := staticJob(t, `
scrape_configs:
- job_name: j
  static_configs:
  - targets: ["10.0.0.1:80"]
    labels: {__meta_source: a}
  - targets: ["10.0.0.1:80"]
    labels: {__meta_source: b}
  - targets: ["10.0.0.2:80"]
`)
	for _, filter := range []FilterStrategy{FilterRelabelConfig, FilterNone} {
		res, _ := updateAll(newFilter(filter), job, groups)
		got := res.sorted
		require.Len(t, got, 2)
		assert.Equal(t, "a", byAddress(got)["10.0.0.1:80"].Labels().Get("__meta_source"), "the first in label order wins")
	}
}

// The filter reads a target's node with allocation.NodeOf (tested there
// with whole label sets), from its sorted discovered labels.
func TestNode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"pod", map[string]string{"__meta_kubernetes_pod_node_name": "n1"}, "n1"},
		{"node", map[string]string{"__meta_kubernetes_node_name": "n2"}, "n2"},
		{"endpoint", map[string]string{"__meta_kubernetes_endpoint_node_name": "n3"}, "n3"},
		{"endpointslice address of a Node", map[string]string{
			"__meta_kubernetes_endpointslice_address_target_kind": "Node",
			"__meta_kubernetes_endpointslice_address_target_name": "n5",
		}, "n5"},
		{"endpointslice node name alone, which the TA does not read", map[string]string{"__meta_kubernetes_endpointslice_endpoint_node_name": "n5"}, ""},
		{"pod first", map[string]string{
			"__meta_kubernetes_pod_node_name":                     "n1",
			"__meta_kubernetes_node_name":                         "n2",
			"__meta_kubernetes_endpoint_node_name":                "n3",
			"__meta_kubernetes_endpointslice_address_target_kind": "Node",
			"__meta_kubernetes_endpointslice_address_target_name": "n5",
		}, "n1"},
		{"empty is unset", map[string]string{
			"__meta_kubernetes_pod_node_name":      "",
			"__meta_kubernetes_endpoint_node_name": "n3",
		}, "n3"},
		{"none", map[string]string{"node": "n4"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sorted []labels.Label
			labels.FromMap(tc.labels).Range(func(l labels.Label) { sorted = append(sorted, l) })
			assert.Equal(t, tc.want, node(sorted))
		})
	}
}

// A target's pin is its __embedded_ta_member label after relabeling, which
// relabel_configs can set from a discovered label; a pin that differs makes
// another target (the label is part of the target's labels, and of its
// identity, until Prometheus drops it with the other "__" labels).
func TestPinAfterRelabeling(t *testing.T) {
	job, groups := staticJob(t, `
scrape_configs:
- job_name: pinned
  relabel_configs:
  - {source_labels: [__meta_heavy], regex: "true", target_label: __embedded_ta_member, replacement: otcta-collector-2}
  static_configs:
  - targets: ["10.0.0.1:80"]
    labels: {__meta_heavy: "true"}
  - targets: ["10.0.0.2:80"]
  - targets: ["10.0.0.3:80"]
    labels: {__embedded_ta_member: otcta-collector-0}
`)
	res, _ := updateAll(newFilter(FilterRelabelConfig), job, groups)
	require.Len(t, res.sorted, 3)
	pins := map[string]string{}
	for _, tg := range res.sorted {
		pins[tg.Labels().Get("__address__")] = tg.Pin
	}
	assert.Equal(t, map[string]string{"10.0.0.1:80": "otcta-collector-2", "10.0.0.2:80": "", "10.0.0.3:80": "otcta-collector-0"}, pins)
	assert.Empty(t, byAddress(res.sorted)["10.0.0.1:80"].Labels().Get("__embedded_ta_member"),
		"the served labels are the discovered ones: the receiver relabels them itself")
}

// BenchmarkFilter measures relabeling and hashing one job's targets: all of
// them, as on the first discovery update of a term, and then an update in
// which 1 % of the target groups changed.
func BenchmarkFilter(b *testing.B) {
	const n = 100_000
	job, _ := staticJob(b, `
scrape_configs:
- job_name: pods
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: "true", action: keep}
  - {source_labels: [__meta_kubernetes_pod_phase], regex: Succeeded|Failed, action: drop}
  - {action: labelmap, regex: __meta_kubernetes_pod_label_(.+)}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
`)
	groups := make([]*targetgroup.Group, n)
	for i := range groups {
		groups[i] = pod(i, false)
	}
	b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			res, _ := updateAll(newFilter(FilterRelabelConfig), job, groups)
			if len(res.sorted) != n || res.failed != 0 {
				b.Fatalf("%d targets, %d failed", len(res.sorted), res.failed)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/target")
	})
	b.Run(fmt.Sprintf("update,targets=%d,changed=%d", n, n/100), func(b *testing.B) {
		f := newFilter(FilterRelabelConfig)
		updateAll(f, job, groups)
		current := slices.Clone(groups)
		b.ReportAllocs()
		for b.Loop() {
			// The pods restart with new IP addresses; their SD sends
			// their groups.
			changes := make([]change, 0, n/100)
			for i := 0; i < n; i += 100 {
				current[i] = pod(i, current[i].Targets[0]["restarts"] == "0")
				changes = append(changes, change{key: groupKey{source: current[i].Source}, group: current[i]})
			}
			res, regrouped := f.update(job, changes)
			if len(res.sorted) != n || !regrouped {
				b.Fatalf("%d targets", len(res.sorted))
			}
		}
	})
}

// pod is a target group as Kubernetes pod SD sends it: one a pod, ~10 labels
// a target.
func pod(i int, restarted bool) *targetgroup.Group {
	r := 0
	if restarted {
		r = 1
	}
	return &targetgroup.Group{
		Source: fmt.Sprintf("pod/default/p-%d", i),
		Targets: []model.LabelSet{{
			"__address__":                          model.LabelValue(fmt.Sprintf("10.%d.%d.%d:8080", r<<7|i>>16&127, i>>8&255, i&255)),
			"__meta_kubernetes_pod_container_name": "app",
			"restarts":                             model.LabelValue(fmt.Sprint(r)),
		}},
		Labels: model.LabelSet{
			"__meta_kubernetes_namespace":                           "default",
			"__meta_kubernetes_pod_name":                            model.LabelValue(fmt.Sprintf("p-%d", i)),
			"__meta_kubernetes_pod_node_name":                       model.LabelValue(fmt.Sprintf("node-%d", i%100)),
			"__meta_kubernetes_pod_phase":                           "Running",
			"__meta_kubernetes_pod_label_app":                       "app",
			"__meta_kubernetes_pod_label_tier":                      "backend",
			"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
		},
	}
}

// An update reuses the targets of unchanged groups and gives what a fresh
// filter gives.
func TestFilterUpdate(t *testing.T) {
	job, _ := staticJob(t, "scrape_configs: [{job_name: pods}]")
	groups := []*targetgroup.Group{pod(1, false), pod(2, false), pod(3, false)}
	f := newFilter(FilterRelabelConfig)
	first, regrouped := updateAll(f, job, groups)
	require.True(t, regrouped)
	require.Len(t, first.sorted, 3)

	same, regrouped := updateAll(f, job, slices.Clone(groups))
	assert.False(t, regrouped)
	assert.Same(t, first, same)

	for _, next := range [][]*targetgroup.Group{
		{groups[0], pod(2, true), groups[2]},  // a pod restarts
		{groups[0], groups[2]},                // a pod goes
		{groups[0], groups[2], pod(4, false)}, // a pod comes
		{},
	} {
		got, regrouped := updateAll(f, job, next)
		assert.True(t, regrouped)
		want, _ := updateAll(newFilter(FilterRelabelConfig), job, next)
		assert.Equal(t, want.sorted, got.sorted)
	}
}

// Updates merged into the last targets give what a fresh filter gives, over
// random changes of groups, some of which hold the same targets as others
// (one identity, other metadata: the first in label order is kept).
func TestFilterUpdateMerges(t *testing.T) {
	job, _ := staticJob(t, "scrape_configs: [{job_name: pods}]")
	r := rand.New(rand.NewPCG(1, 2))
	twin := func(i int, restarted bool) *targetgroup.Group {
		g := pod(i, restarted)
		g.Source = "twin/" + g.Source
		g.Labels = g.Labels.Clone()
		g.Labels["__meta_twin"] = model.LabelValue(fmt.Sprint(r.IntN(3)))
		return g
	}
	var groups []*targetgroup.Group
	for i := range 200 {
		groups = append(groups, pod(i, false))
		if i%10 == 0 {
			groups = append(groups, twin(i, false))
		}
	}
	f := newFilter(FilterRelabelConfig)
	updateAll(f, job, groups)
	for round := range 50 {
		next := slices.Clone(groups)
		for i := range next {
			switch r.IntN(20) {
			case 0:
				next[i] = pod(i, r.IntN(2) == 0)
			case 1:
				next[i] = twin(i%200, r.IntN(2) == 0)
			case 2, 3: // sent anew as it was, as file_sd and http_sd do
				g := *next[i]
				next[i] = &g
			}
		}
		next = slices.DeleteFunc(next, func(*targetgroup.Group) bool { return r.IntN(50) == 0 })
		groups = next
		got, _ := updateAll(f, job, groups)
		want, _ := updateAll(newFilter(FilterRelabelConfig), job, groups)
		require.Equal(t, want.sorted, got.sorted, "round %d", round)
		require.Equal(t, want.all, got.all, "round %d", round)
	}
}

// Relabeling many groups on several cores gives what one core gives: the
// same targets in the same order, the same failures, on a job's first
// update and on an update that brings many groups.
func TestFilterOnEveryCore(t *testing.T) {
	job, _ := staticJob(t, `
scrape_configs:
- job_name: pods
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_label_tier], regex: frontend, action: drop}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
`)
	groups := func(n int, restarted bool) []*targetgroup.Group {
		out := make([]*targetgroup.Group, n)
		for i := range out {
			out[i] = pod(i, restarted)
			switch i % 7 {
			case 0: // dropped by relabeling
				out[i].Labels = out[i].Labels.Clone()
				out[i].Labels["__meta_kubernetes_pod_label_tier"] = "frontend"
			case 1: // no address: Prometheus would not scrape it
				out[i].Targets = []model.LabelSet{{"__meta_kubernetes_pod_container_name": "app"}}
			}
		}
		return out
	}
	first, next := groups(3*parallelGroups, false), groups(3*parallelGroups, true)
	run := func(procs int) (*jobTargets, *jobTargets) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		f := newFilter(FilterRelabelConfig)
		a, _ := updateAll(f, job, first)
		a = &jobTargets{all: slices.Clone(a.all), sorted: slices.Clone(a.sorted), failed: a.failed, err: a.err}
		b, _ := updateAll(f, job, next)
		if procs > 1 && len(f.relabelers) < 2 {
			t.Fatalf("GOMAXPROCS=%d: %d relabelers: the groups were not relabeled on several cores", procs, len(f.relabelers))
		}
		return a, b
	}
	oneFirst, oneNext := run(1)
	manyFirst, manyNext := run(4)
	require.NotEmpty(t, oneFirst.sorted)
	require.Positive(t, oneFirst.failed)
	for i, pair := range [][2]*jobTargets{{oneFirst, manyFirst}, {oneNext, manyNext}} {
		require.Equal(t, pair[0].sorted, pair[1].sorted, "update %d", i)
		require.Equal(t, pair[0].all, pair[1].all, "update %d", i)
		require.Equal(t, pair[0].failed, pair[1].failed, "update %d", i)
		require.Equal(t, pair[0].err != nil, pair[1].err != nil, "update %d: err is one of the failures, or none", i)
	}
}

// Sorting many targets in parts on several cores gives one sort's order,
// targets of one identity included.
func TestSortTargetsOnEveryCore(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	r := rand.New(rand.NewPCG(3, 4))
	ts := make([]Target, 3*parallelSort+17)
	for i := range ts {
		ts[i] = Target{Hash: r.Uint64N(uint64(len(ts))), Element: httpsdElement(r.IntN(5)), Node: fmt.Sprint(r.IntN(3))}
	}
	want := slices.Clone(ts)
	slices.SortFunc(want, compareTargets)
	got := sortTargets(slices.Clone(ts))
	require.Equal(t, want, got)
}

func httpsdElement(i int) httpsd.Element {
	return httpsd.EncodeSorted([]labels.Label{{Name: "__address__", Value: fmt.Sprintf("10.0.0.%d:80", i)}})
}

// A group keeps room for the targets relabeling kept, not for those it
// dropped: a job whose keep rule drops most groups holds little.
func TestDroppedTargetsKeepNoRoom(t *testing.T) {
	job, groups := staticJob(t, `
scrape_configs:
- job_name: j
  static_configs:
  - targets: [a:1, a:2, a:3, a:4, a:5, a:6, a:7, a:8, a:9, a:10]
    labels: {keep: "no"}
  - targets: [b:1, b:2, b:3, b:4, b:5, b:6, b:7, b:8, b:9, b:10]
  relabel_configs:
  - {source_labels: [keep], regex: "no", action: drop}
  - {source_labels: [__address__], regex: "b:[2-9]|b:10", action: drop}
`)
	r := newRelabeler(FilterRelabelConfig)
	none, one := r.group(job, groups[0]), r.group(job, groups[1])
	require.Empty(t, none.targets)
	require.Zero(t, cap(none.targets), "room kept for dropped targets")
	require.Len(t, one.targets, 1)
	require.LessOrEqual(t, cap(one.targets), 2, "room kept for dropped targets")
}
