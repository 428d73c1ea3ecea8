package discovery

import (
	"cmp"
	"errors"
	"fmt"
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

// filter turns target groups into Targets. It keeps each job's targets by
// target group (its provider and source), not the groups themselves: an
// update brings the groups a provider sent, each replacing the job's group
// of the same key (one without targets removes it), and costs in
// proportion to them; a group sent again as it was (file_sd and http_sd
// send every group on each refresh) is known by its fingerprint and not
// relabeled. A filter belongs to one goroutine; it relabels many groups on
// every core (relabelGroups).
type filter struct {
	strategy FilterStrategy
	jobs     map[string]*jobTargets
	// relabelers are one a goroutine that relabels: the first is the
	// filter's own.
	relabelers []*relabeler
}

// change is a target group as its provider sent it: it replaces the job's
// group of the same key; one without targets removes it.
type change struct {
	key   groupKey
	group *targetgroup.Group
}

// groupKey identifies a job's target group: its provider (the index of its
// SD config in the job) and its source, which is unique within a provider.
type groupKey struct {
	provider int
	source   string
}

// relabeler relabels groups in one goroutine, with buffers of its own.
type relabeler struct {
	strategy FilterStrategy
	lb       *labels.Builder
	// discovered is a buffer for a target's discovered labels, own and
	// shared its target's and its group's, scraped for its labels after
	// relabeling.
	discovered, own, shared, scraped []labels.Label
	// digest hashes targets, printer fingerprints groups.
	digest, printer *xxhash.Digest
	// defaults are the last job's (populate).
	defaults *jobDefaults
}

func newRelabeler(strategy FilterStrategy) *relabeler {
	return &relabeler{strategy: strategy, lb: labels.NewBuilder(labels.EmptyLabels()), digest: xxhash.New(), printer: xxhash.New()}
}

// parallelGroups is the least number of groups relabeled on more than one
// core: fewer cost less than starting goroutines.
const parallelGroups = 256

// relabelGroups relabels groups, on every core (GOMAXPROCS) when they are
// many, each core a contiguous part of them; the result is in their order.
func (f *filter) relabelGroups(job *config.ScrapeConfig, groups []*targetgroup.Group) []groupTargets {
	out := make([]groupTargets, len(groups))
	f.eachPart(len(groups), func(r *relabeler, lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = r.group(job, groups[i])
		}
	})
	return out
}

// eachPart calls part for contiguous ranges covering n groups, each with a
// relabeler of its own, on every core when there are parallelGroups or more.
func (f *filter) eachPart(n int, part func(r *relabeler, lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n/parallelGroups)
	if workers <= 1 {
		part(f.relabelers[0], 0, n)
		return
	}
	for len(f.relabelers) < workers {
		f.relabelers = append(f.relabelers, newRelabeler(f.strategy))
	}
	var wg sync.WaitGroup
	for w := range workers {
		r := f.relabelers[w]
		lo, hi := w*n/workers, (w+1)*n/workers
		wg.Go(func() { part(r, lo, hi) })
	}
	wg.Wait()
}

// fingerprints returns the fingerprint of each group, on every core when
// they are many, as relabelGroups.
func (f *filter) fingerprints(groups []*targetgroup.Group) []uint64 {
	out := make([]uint64, len(groups))
	f.eachPart(len(groups), func(r *relabeler, lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = r.fingerprint(groups[i])
		}
	})
	return out
}

// parallelSort is the least number of targets sortTargets sorts on more
// than one core.
const parallelSort = 1 << 16

// sortTargets sorts ts by compareTargets: in parts on every core when they
// are many, merged two at a time.
func sortTargets(ts []Target) []Target {
	n := min(runtime.GOMAXPROCS(0), len(ts)/parallelSort)
	if n <= 1 {
		slices.SortFunc(ts, compareTargets)
		return ts
	}
	parts := make([][]Target, n)
	var wg sync.WaitGroup
	for p := range parts {
		parts[p] = ts[p*len(ts)/n : (p+1)*len(ts)/n]
		wg.Go(func() { slices.SortFunc(parts[p], compareTargets) })
	}
	wg.Wait()
	for len(parts) > 1 {
		merged := parts[:0:0]
		for p := 0; p < len(parts); p += 2 {
			if p+1 < len(parts) {
				merged = append(merged, mergeTargets(parts[p], nil, parts[p+1]))
			} else {
				merged = append(merged, parts[p])
			}
		}
		parts = merged
	}
	return parts[0]
}

// jobTargets are one job's targets after an update.
type jobTargets struct {
	byGroup map[groupKey]*groupTargets
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
	// discovered counts the targets of every group, before relabeling.
	discovered int
}

type groupTargets struct {
	targets []Target
	failed  int
	err     error
	// discovered is how many targets the group held; fingerprint tells the
	// group sent again as it was (fingerprint).
	discovered  int
	fingerprint uint64
}

func newFilter(strategy FilterStrategy) *filter {
	return &filter{
		strategy:   strategy,
		jobs:       map[string]*jobTargets{},
		relabelers: []*relabeler{newRelabeler(strategy)},
	}
}

// update applies changes to the job's targets and returns them, and whether
// any group changed. Of two changes of one key, the later counts.
func (f *filter) update(job *config.ScrapeConfig, changes []change) (*jobTargets, bool) {
	last := f.jobs[job.JobName]
	if last == nil {
		last = &jobTargets{byGroup: map[groupKey]*groupTargets{}, all: []Target{}}
		last.sorted = last.all
		f.jobs[job.JobName] = last
	}
	// Of the changes of one key, the later counts. Each removes its group,
	// brings a new one, or replaces one: a replacing group is fingerprinted
	// first, as it may be the same; relabeling fingerprints the others
	// (groupTargets.fingerprint).
	latest := make(map[groupKey]int, len(changes))
	for i, c := range changes {
		latest[c.key] = i
	}
	var removed []groupKey
	var fresh, replacing []change
	for i, c := range changes {
		old := last.byGroup[c.key]
		switch {
		case latest[c.key] != i:
		case len(c.group.Targets) == 0:
			if old != nil {
				removed = append(removed, c.key)
			}
		case old != nil:
			replacing = append(replacing, c)
		default:
			fresh = append(fresh, c)
		}
	}
	for i, fp := range f.fingerprints(groupsOf(replacing)) {
		if last.byGroup[replacing[i].key].fingerprint != fp {
			fresh = append(fresh, replacing[i])
		}
	}
	if len(fresh) == 0 && len(removed) == 0 {
		return last, false
	}
	next := &jobTargets{byGroup: last.byGroup, failed: last.failed, err: last.err, discovered: last.discovered}
	// The map is updated in place: only the filter reads it.
	var came, gone []Target
	errGone := false
	drop := func(key groupKey) {
		if gt := next.byGroup[key]; gt != nil {
			gone = append(gone, gt.targets...)
			next.failed -= gt.failed
			next.discovered -= gt.discovered
			errGone = errGone || gt.err != nil
			delete(next.byGroup, key)
		}
	}
	for _, key := range removed {
		drop(key)
	}
	relabeled := f.relabelGroups(job, groupsOf(fresh))
	n := 0
	for i := range relabeled {
		n += len(relabeled[i].targets)
	}
	came = make([]Target, 0, n)
	for i, c := range fresh {
		drop(c.key)
		gt := &groupTargets{} // its own: a group that goes frees its targets
		*gt = relabeled[i]
		gt.discovered = len(c.group.Targets)
		next.byGroup[c.key] = gt
		came = append(came, gt.targets...)
		next.failed += gt.failed
		next.discovered += gt.discovered
		if next.err == nil {
			next.err = gt.err
		}
	}
	switch {
	case next.failed == 0:
		next.err = nil
	case errGone:
		next.err = firstErr(next.byGroup) // the last one may have gone with its group
	}
	if len(came) == 0 && len(gone) == 0 {
		// Groups came and went without a target Prometheus would scrape.
		next.all, next.sorted = last.all, last.sorted
		f.jobs[job.JobName] = next
		return next, false
	}
	came = sortTargets(came)
	if len(last.all) == 0 {
		next.all = came // a job's first targets: one sort, no merge
	} else {
		slices.SortFunc(gone, compareTargets)
		next.all = mergeTargets(last.all, gone, came)
	}
	return f.finish(job.JobName, next), true
}

func groupsOf(changes []change) []*targetgroup.Group {
	out := make([]*targetgroup.Group, len(changes))
	for i, c := range changes {
		out[i] = c.group
	}
	return out
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

// fingerprint hashes a group's labels and its targets' labels, in order,
// each set's sorted by name: a group sent again as it was has the one of
// before. group computes the same as it relabels.
func (f *relabeler) fingerprint(g *targetgroup.Group) uint64 {
	d := f.printer
	d.Reset()
	f.shared = sortedLabels(f.shared[:0], g.Labels)
	putLabels(d, f.shared)
	for _, t := range g.Targets {
		f.own = sortedLabels(f.own[:0], t)
		putLabels(d, f.own)
	}
	return d.Sum64()
}

// putLabels adds a set of labels, sorted by name, to a fingerprint.
func putLabels(d *xxhash.Digest, ls []labels.Label) {
	writeLabels(d, ls)
	_, _ = d.Write(unkeptMark) // ends the set
}

// writeLabels writes each label's name and value to d, each followed by
// sep.
func writeLabels(d *xxhash.Digest, ls []labels.Label) {
	for _, l := range ls {
		_, _ = d.WriteString(l.Name)
		_, _ = d.Write(sep)
		_, _ = d.WriteString(l.Value)
		_, _ = d.Write(sep)
	}
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

func firstErr(groups map[groupKey]*groupTargets) error {
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

// group relabels one target group the way Prometheus does
// (scrape.PopulateLabels: populate, and Prometheus's own code for what it
// would not scrape), with the job's defaults (job, __scheme__,
// __metrics_path__, __scrape_interval__, __scrape_timeout__, __param_*) in
// place, so a target is kept exactly when Prometheus would scrape it, and
// two targets that Prometheus would take for one share a Hash.
func (f *relabeler) group(job *config.ScrapeConfig, g *targetgroup.Group) groupTargets {
	out := groupTargets{targets: make([]Target, 0, len(g.Targets))}
	// The group's labels are sorted once; each target's own, sorted, are
	// merged in. The fingerprint is made of the same sorted labels.
	f.shared = sortedLabels(f.shared[:0], g.Labels)
	f.printer.Reset()
	putLabels(f.printer, f.shared)
	for i, t := range g.Targets {
		// Target labels win over group labels, as in Prometheus. The
		// discovered labels are kept only encoded (Target.Element): the
		// slices are reused, and their strings are Prometheus's.
		f.own = sortedLabels(f.own[:0], t)
		putLabels(f.printer, f.own)
		discovered := mergeLabels(f.discovered[:0], f.own, f.shared)
		f.discovered = discovered

		scraped, kept, err := f.populate(job, discovered)
		if errors.Is(err, errNotScraped) {
			// Prometheus tells why, or (should populate be wrong) keeps it.
			res, perr := scrape.PopulateLabels(f.lb, job, t, g.Labels)
			scraped, kept, err = scraped[:0], !res.IsEmpty(), perr
			res.Range(func(l labels.Label) { scraped = append(scraped, l) })
		}
		f.scraped = scraped
		if err != nil {
			out.failed++
			if out.err == nil {
				out.err = fmt.Errorf("target %d in group %s: %w", i, g.Source, err)
			}
		}
		var hash uint64
		var pin string
		switch {
		case err == nil && kept:
			hash = f.hash(job.JobName, keptMark, scraped)
			if i, ok := slices.BinarySearchFunc(scraped, allocation.PinLabel, byName); ok {
				pin = scraped[i].Value
			}
		case f.strategy == FilterRelabelConfig:
			continue
		default:
			hash = f.hash(job.JobName, unkeptMark, discovered)
		}
		out.targets = append(out.targets, Target{Element: httpsd.EncodeSorted(discovered), Hash: hash, Node: node(discovered), Pin: pin})
	}
	out.fingerprint = f.printer.Sum64()
	// The targets are kept while the group is: not the room of those
	// relabeling dropped (a keep rule may drop most groups of a job).
	switch {
	case len(out.targets) == 0:
		out.targets = nil
	case len(out.targets) < cap(out.targets)/2:
		out.targets = slices.Clone(out.targets)
	}
	return out
}

// byName finds a label by name in labels sorted by name; compareNames sorts
// them so.
func byName(l labels.Label, name string) int { return strings.Compare(l.Name, name) }

func compareNames(a, b labels.Label) int { return strings.Compare(a.Name, b.Name) }

// sortedLabels appends the labels of set to buf, sorted by name.
func sortedLabels(buf []labels.Label, set model.LabelSet) []labels.Label {
	for name, value := range set {
		buf = append(buf, labels.Label{Name: string(name), Value: string(value)})
	}
	slices.SortFunc(buf, compareNames)
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

// hash is the target's identity for allocation: the job and ls, sorted by
// name. It is spelled out here rather than taken from labels.Labels.Hash,
// whose value is Prometheus's business and may differ between its label
// implementations (build tags): every leader must compute the same hash for
// the same target.
func (f *relabeler) hash(job string, mark []byte, ls []labels.Label) uint64 {
	d := f.digest
	d.Reset()
	_, _ = d.WriteString(job)
	_, _ = d.Write(mark)
	writeLabels(d, ls)
	return d.Sum64()
}

// node returns the target's node, of its discovered labels sorted by name,
// as per-node reads it (allocation.NodeOf). The value is Prometheus's
// string, not a copy.
func node(discovered []labels.Label) string {
	return allocation.NodeOf(func(name string) string {
		i, ok := slices.BinarySearchFunc(discovered, name, byName)
		if !ok {
			return ""
		}
		return discovered[i].Value
	})
}
