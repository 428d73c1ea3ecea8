package discovery

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
)

// FilterStrategy says which discovered targets are allocated.
type FilterStrategy string

const (
	// FilterRelabelConfig drops the targets that the job's relabel_configs
	// drop, and those Prometheus would not scrape (no address, bad interval),
	// exactly as Prometheus decides. The target allocator's default.
	FilterRelabelConfig FilterStrategy = "relabel-config"
	// FilterNone allocates every discovered target.
	FilterNone FilterStrategy = ""
)

// Validate reports an unknown strategy, naming the valid ones.
func (s FilterStrategy) Validate() error {
	switch s {
	case FilterRelabelConfig, FilterNone:
		return nil
	}
	return fmt.Errorf("filter_strategy: unknown value %q; valid values are %q and \"\" (no filtering)", string(s), string(FilterRelabelConfig))
}

// nodeLabels name the Kubernetes node a target runs on, by SD role, in the
// order they are looked up.
var nodeLabels = []string{
	"__meta_kubernetes_pod_node_name",
	"__meta_kubernetes_node_name",
	"__meta_kubernetes_endpoint_node_name",
}

// Hash separators: 0xff cannot occur in valid UTF-8 label names or values.
// A target that relabeling drops has no Prometheus identity; under
// FilterNone it is identified by its discovered labels, hashed after a
// different marker so that it can never collide with a kept target.
var (
	sep        = []byte{0xff}
	keptMark   = []byte{0xff, 'k'}
	unkeptMark = []byte{0xff, 'd'}
)

// filter turns one job's target groups into Targets. It holds scratch space
// reused from one target to the next, so it is used by one goroutine at a time.
type filter struct {
	strategy FilterStrategy
	lb       *labels.Builder
	sb       labels.ScratchBuilder
	digest   *xxhash.Digest
}

func newFilter(strategy FilterStrategy) *filter {
	return &filter{strategy: strategy, lb: labels.NewBuilder(labels.EmptyLabels()), digest: xxhash.New()}
}

// targets returns the job's targets sorted by Hash, one per Hash, and how many
// targets relabeling could not turn into a scrape target (with the first such
// error). Relabeling is Prometheus's own (scrape.PopulateLabels), with the
// job's defaults (job, __scheme__, __metrics_path__, __scrape_interval__,
// __scrape_timeout__, __param_*) in place, so a target is kept exactly when
// Prometheus would scrape it, and two targets that Prometheus would take for
// one share a Hash.
func (f *filter) targets(job *config.ScrapeConfig, groups []*targetgroup.Group) (out []Target, failed int, firstErr error) {
	n := 0
	for _, g := range groups {
		n += len(g.Targets)
	}
	out = make([]Target, 0, n)
	for _, g := range groups {
		for i, t := range g.Targets {
			// Target labels win over group labels, as in Prometheus.
			f.sb.Reset()
			for name, value := range t {
				f.sb.Add(string(name), string(value))
			}
			for name, value := range g.Labels {
				if _, ok := t[name]; !ok {
					f.sb.Add(string(name), string(value))
				}
			}
			f.sb.Sort()
			discovered := f.sb.Labels()

			scraped, err := scrape.PopulateLabels(f.lb, job, t, g.Labels)
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = fmt.Errorf("target %d in group %s: %w", i, g.Source, err)
				}
			}
			var hash uint64
			switch {
			case err == nil && !scraped.IsEmpty():
				hash = f.hash(job.JobName, keptMark, scraped)
			case f.strategy == FilterRelabelConfig:
				continue
			default:
				hash = f.hash(job.JobName, unkeptMark, discovered)
			}
			out = append(out, Target{Job: job.JobName, Labels: discovered, Hash: hash, Node: node(discovered)})
		}
	}
	slices.SortFunc(out, func(a, b Target) int {
		if c := cmp.Compare(a.Hash, b.Hash); c != 0 {
			return c
		}
		return labels.Compare(a.Labels, b.Labels)
	})
	// Prometheus scrapes targets with the same identity once; so do we.
	return slices.CompactFunc(out, func(a, b Target) bool { return a.Hash == b.Hash }), failed, firstErr
}

// hash is the target's identity for allocation. It is spelled out here,
// rather than taken from labels.Labels.Hash, so that it stays the same across
// Prometheus versions and label implementations: a leader on a new version
// must reproduce the old leader's assignment.
func (f *filter) hash(job string, mark []byte, ls labels.Labels) uint64 {
	d := f.digest
	d.Reset()
	_, _ = d.WriteString(job)
	_, _ = d.Write(mark)
	ls.Range(func(l labels.Label) {
		_, _ = d.WriteString(l.Name)
		_, _ = d.Write(sep)
		_, _ = d.WriteString(l.Value)
		_, _ = d.Write(sep)
	})
	return d.Sum64()
}

func node(ls labels.Labels) string {
	for _, name := range nodeLabels {
		if v := ls.Get(name); v != "" {
			return v
		}
	}
	return ""
}
