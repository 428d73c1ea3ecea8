package discovery

import (
	"cmp"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/httpsd"
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

// Hash separators: 0xff does not occur in UTF-8 text. A target that
// relabeling drops has no Prometheus identity; under FilterNone it is
// identified by its discovered labels, hashed after a different mark so
// that the bytes hashed for it never equal those of a kept target.
var (
	sep        = []byte{0xff}
	keptMark   = []byte{0xff, 'k'}
	unkeptMark = []byte{0xff, 'd'}
)

// filter turns target groups into Targets. It keeps each job's targets of
// the last update by target group, so that an update costs in proportion to
// the groups that changed: a discoverer sends a changed group as a new
// *targetgroup.Group, and the discovery manager passes the others on as they
// are (it reads them concurrently, so they are never modified in place).
// A filter belongs to one goroutine; it relabels many groups on every core
// (relabelGroups).
type filter struct {
	strategy FilterStrategy
	jobs     map[string]*jobTargets
	gen      uint64 // updates so far
	// relabelers are one a goroutine that relabels: the first is the
	// filter's own.
	relabelers []*relabeler
}

// relabeler relabels groups in one goroutine, with buffers of its own.
type relabeler struct {
	strategy FilterStrategy
	lb       *labels.Builder
	// discovered is a buffer for a target's discovered labels, own and
	// shared its target's and its group's.
	discovered, own, shared []labels.Label
	digest                  *xxhash.Digest
}

func newRelabeler(strategy FilterStrategy) *relabeler {
	return &relabeler{strategy: strategy, lb: labels.NewBuilder(labels.EmptyLabels()), digest: xxhash.New()}
}

// parallelGroups is the least number of groups relabeled on more than one
// core: fewer cost less than starting goroutines.
const parallelGroups = 256

// relabelGroups relabels groups, on every core (GOMAXPROCS) when they are
// many, each core a contiguous part of them; the result is in their order.
func (f *filter) relabelGroups(job *config.ScrapeConfig, groups []*targetgroup.Group) []groupTargets {
	out := make([]groupTargets, len(groups))
	workers := min(runtime.GOMAXPROCS(0), len(groups)/parallelGroups)
	if workers <= 1 {
		for i, g := range groups {
			out[i] = f.relabelers[0].group(job, g)
		}
		return out
	}
	for len(f.relabelers) < workers {
		f.relabelers = append(f.relabelers, newRelabeler(f.strategy))
	}
	var wg sync.WaitGroup
	for w := range workers {
		r := f.relabelers[w]
		lo, hi := w*len(groups)/workers, (w+1)*len(groups)/workers
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				out[i] = r.group(job, groups[i])
			}
		})
	}
	wg.Wait()
	return out
}

// jobTargets are one job's targets after an update.
type jobTargets struct {
	byGroup map[*targetgroup.Group]*groupTargets
	// all are the targets of every group, sorted by compareTargets, with
	// those of equal identity as many times as groups hold them.
	all []Target
	// sorted are all of them sorted by Hash, one per Hash: Prometheus
	// scrapes targets with the same identity once. It is all itself when
	// no two targets share an identity.
	sorted []Target
	// failed counts the targets Prometheus would not scrape (no address,
	// bad interval): dropped, or kept under FilterNone. err is one of them.
	failed int
	err    error
}

type groupTargets struct {
	targets []Target
	failed  int
	err     error
	gen     uint64 // the last update that saw the group
}

func newFilter(strategy FilterStrategy) *filter {
	return &filter{
		strategy:   strategy,
		jobs:       map[string]*jobTargets{},
		relabelers: []*relabeler{newRelabeler(strategy)},
	}
}

// update returns the job's targets given all its current target groups, and
// whether any group changed since the last update.
func (f *filter) update(job *config.ScrapeConfig, groups []*targetgroup.Group) (*jobTargets, bool) {
	last := f.jobs[job.JobName]
	if last == nil {
		next := &jobTargets{byGroup: make(map[*targetgroup.Group]*groupTargets, len(groups))}
		distinct := make([]*targetgroup.Group, 0, len(groups))
		for _, g := range groups {
			if _, ok := next.byGroup[g]; !ok && !isMarker(g) {
				next.byGroup[g] = nil // relabeled below
				distinct = append(distinct, g)
			}
		}
		relabeled := f.relabelGroups(job, distinct)
		n := 0
		for i := range relabeled {
			n += len(relabeled[i].targets)
		}
		next.all = make([]Target, 0, n)
		for i, g := range distinct {
			gt := &groupTargets{} // its own: a group that goes frees its targets
			*gt = relabeled[i]
			next.byGroup[g] = gt
			next.all = append(next.all, gt.targets...)
			next.failed += gt.failed
		}
		next.err = firstErr(next.byGroup)
		slices.SortFunc(next.all, compareTargets)
		return f.finish(job.JobName, next), true
	}
	// One lookup per group: the groups seen are marked with this update's
	// generation, those not seen are gone. The map is updated in place: only
	// the filter reads it.
	f.gen++
	seen := 0
	var fresh []*targetgroup.Group
	for _, g := range groups {
		gt, ok := last.byGroup[g]
		switch {
		case !ok && isMarker(g):
		case !ok:
			fresh = append(fresh, g)
		case gt.gen != f.gen:
			gt.gen = f.gen
			seen++
		}
	}
	if len(fresh) == 0 && seen == len(last.byGroup) {
		return last, false
	}
	next := &jobTargets{byGroup: last.byGroup, failed: last.failed, err: last.err}
	// Merge the targets of the groups that came and went into the sorted
	// list rather than sort it anew: a copy instead of a sort.
	var came, gone []Target
	// Groups that went, by source, while fresh ones may bring them back
	// unchanged: file_sd and http_sd send every group anew on each refresh.
	var went map[string]wentGroup
	drop := func(gt *groupTargets) {
		gone = append(gone, gt.targets...)
		next.failed -= gt.failed
	}
	if seen < len(last.byGroup) {
		for g, gt := range next.byGroup {
			if gt.gen == f.gen {
				continue
			}
			delete(next.byGroup, g)
			if len(fresh) == 0 {
				drop(gt)
				continue
			}
			if went == nil {
				went = map[string]wentGroup{}
			}
			if other, ok := went[g.Source]; ok {
				drop(other.targets) // two providers' groups of one source
			}
			went[g.Source] = wentGroup{g, gt}
		}
	}
	var changed []*targetgroup.Group
	for _, g := range fresh {
		if _, ok := next.byGroup[g]; ok {
			continue // twice in groups
		}
		if old, ok := went[g.Source]; ok && sameGroup(old.group, g) {
			delete(went, g.Source)
			old.targets.gen = f.gen
			next.byGroup[g] = old.targets // the same labels relabel the same
			continue
		}
		next.byGroup[g] = nil // relabeled below
		changed = append(changed, g)
	}
	relabeled := f.relabelGroups(job, changed)
	for i, g := range changed {
		gt := &groupTargets{}
		*gt = relabeled[i]
		gt.gen = f.gen
		next.byGroup[g] = gt
		came = append(came, gt.targets...)
		next.failed += gt.failed
	}
	for _, old := range went {
		drop(old.targets)
	}
	if len(came) == 0 && len(gone) == 0 {
		return last, false // every group came back as it was
	}
	if next.failed == 0 {
		next.err = nil
	} else if next.err == nil || len(gone) > 0 {
		next.err = firstErr(next.byGroup) // the last one may have gone with its group
	}
	slices.SortFunc(came, compareTargets)
	slices.SortFunc(gone, compareTargets)
	next.all = mergeTargets(last.all, gone, came)
	return f.finish(job.JobName, next), true
}

// finish derives the job's targets of one identity each and keeps next.
func (f *filter) finish(job string, next *jobTargets) *jobTargets {
	if next.all == nil {
		next.all = []Target{}
	}
	next.sorted = next.all
	if hasDuplicates(next.all) {
		next.sorted = slices.Clip(slices.CompactFunc(slices.Clone(next.all), func(a, b Target) bool { return a.Hash == b.Hash }))
	}
	f.jobs[job] = next
	return next
}

// compareTargets orders targets by Hash, then by labels, so that of several
// targets with one identity the first in label order is kept, then by Node
// and Element (which differ for equal decoded labels only where invalid
// UTF-8 was decoded as U+FFFD). Labels are decoded only for targets of one
// Hash with different elements, which is rare.
func compareTargets(a, b Target) int {
	if c := cmp.Compare(a.Hash, b.Hash); c != 0 {
		return c
	}
	if a.Element != b.Element {
		if c := labels.Compare(a.Labels(), b.Labels()); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(a.Node, b.Node); c != 0 {
		return c
	}
	return cmp.Compare(a.Element, b.Element)
}

// mergeTargets returns all, sorted by compareTargets, without one of each
// of gone and with came, both sorted the same way.
func mergeTargets(all, gone, came []Target) []Target {
	out := make([]Target, 0, max(len(all)-len(gone), 0)+len(came))
	g, c := 0, 0
	for _, t := range all {
		for g < len(gone) && compareTargets(gone[g], t) < 0 {
			g++ // not there: cannot happen
		}
		if g < len(gone) && compareTargets(gone[g], t) == 0 {
			g++
			continue
		}
		for ; c < len(came) && compareTargets(came[c], t) < 0; c++ {
			out = append(out, came[c])
		}
		out = append(out, t)
	}
	return append(out, came[c:]...)
}

type wentGroup struct {
	group   *targetgroup.Group
	targets *groupTargets
}

// sameGroup reports whether two groups hold the same labels.
func sameGroup(a, b *targetgroup.Group) bool {
	return maps.Equal(a.Labels, b.Labels) && slices.EqualFunc(a.Targets, b.Targets, func(x, y model.LabelSet) bool { return maps.Equal(x, y) })
}

func firstErr(groups map[*targetgroup.Group]*groupTargets) error {
	for _, gt := range groups {
		if gt.err != nil {
			return gt.err
		}
	}
	return nil
}

func hasDuplicates(sorted []Target) bool {
	for i := 1; i < len(sorted); i++ {
		if sorted[i].Hash == sorted[i-1].Hash {
			return true
		}
	}
	return false
}

// group relabels one target group with Prometheus's own code
// (scrape.PopulateLabels), with the job's defaults (job, __scheme__,
// __metrics_path__, __scrape_interval__, __scrape_timeout__, __param_*) in
// place, so a target is kept exactly when Prometheus would scrape it, and
// two targets that Prometheus would take for one share a Hash.
func (f *relabeler) group(job *config.ScrapeConfig, g *targetgroup.Group) groupTargets {
	var out groupTargets
	// The group's labels are sorted once; each target's own, sorted, are
	// merged in.
	f.shared = sortedLabels(f.shared[:0], g.Labels)
	for i, t := range g.Targets {
		// Target labels win over group labels, as in Prometheus. The
		// discovered labels are kept only encoded (Target.Element): the
		// slices are reused, and their strings are Prometheus's.
		f.own = sortedLabels(f.own[:0], t)
		discovered := mergeLabels(f.discovered[:0], f.own, f.shared)
		f.discovered = discovered

		scraped, err := scrape.PopulateLabels(f.lb, job, t, g.Labels)
		if err != nil {
			out.failed++
			if out.err == nil {
				out.err = fmt.Errorf("target %d in group %s: %w", i, g.Source, err)
			}
		}
		var hash uint64
		var pin string
		switch {
		case err == nil && !scraped.IsEmpty():
			hash = f.hash(job.JobName, keptMark, scraped.Range)
			pin = scraped.Get(allocation.PinLabel)
		case f.strategy == FilterRelabelConfig:
			continue
		default:
			hash = f.hash(job.JobName, unkeptMark, func(put func(labels.Label)) {
				for _, l := range discovered {
					put(l)
				}
			})
		}
		out.targets = append(out.targets, Target{Job: job.JobName, Element: httpsd.EncodeSorted(discovered), Hash: hash, Node: node(discovered), Pin: pin})
	}
	return out
}

// sortedLabels appends the labels of set to buf, sorted by name.
func sortedLabels(buf []labels.Label, set model.LabelSet) []labels.Label {
	for name, value := range set {
		buf = append(buf, labels.Label{Name: string(name), Value: string(value)})
	}
	slices.SortFunc(buf, func(a, b labels.Label) int { return strings.Compare(a.Name, b.Name) })
	return buf
}

// mergeLabels appends to buf the labels of own and shared, both sorted by
// name, in order of name; of two with one name, own's.
func mergeLabels(buf, own, shared []labels.Label) []labels.Label {
	i, j := 0, 0
	for i < len(own) && j < len(shared) {
		switch c := strings.Compare(own[i].Name, shared[j].Name); {
		case c < 0:
			buf = append(buf, own[i])
			i++
		case c > 0:
			buf = append(buf, shared[j])
			j++
		default:
			buf = append(buf, own[i])
			i++
			j++
		}
	}
	buf = append(buf, own[i:]...)
	return append(buf, shared[j:]...)
}

// hash is the target's identity for allocation. It is spelled out here
// rather than taken from labels.Labels.Hash, whose value is Prometheus's
// business and may differ between its label implementations (build tags):
// every leader must compute the same hash for the same target.
func (f *relabeler) hash(job string, mark []byte, each func(func(labels.Label))) uint64 {
	d := f.digest
	d.Reset()
	_, _ = d.WriteString(job)
	_, _ = d.Write(mark)
	each(func(l labels.Label) {
		_, _ = d.WriteString(l.Name)
		_, _ = d.Write(sep)
		_, _ = d.WriteString(l.Value)
		_, _ = d.Write(sep)
	})
	return d.Sum64()
}

// node returns the target's node, of its discovered labels sorted by name,
// as per-node reads it (allocation.NodeOf). The value is Prometheus's
// string, not a copy.
func node(discovered []labels.Label) string {
	return allocation.NodeOf(func(name string) string {
		i, ok := slices.BinarySearchFunc(discovered, name, func(l labels.Label, name string) int { return strings.Compare(l.Name, name) })
		if !ok {
			return ""
		}
		return discovered[i].Value
	})
}
