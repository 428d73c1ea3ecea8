package leader

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	promconfig "github.com/prometheus/prometheus/config"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// state follows targets and members by their changes and builds
// allocations that share every unchanged share with the previous one.
//
// Costs, for k targets changed among n in a changed job of size n_j and m
// members: the diff is one merge of the job's old and new sorted targets,
// O(n_j) comparisons of hashes (a job that did not change costs one pointer
// comparison); the allocator's Update costs O(k·m) scores; each changed share
// is rebuilt by one merge, O(its size + its changes log its changes); an
// allocation costs O(jobs + changed shares). A membership change asks the
// allocator for every target's member once, O(n), and rebuilds only the shares
// that targets moved in or out of.
//
// Each target's member is kept beside the job's targets, one int32 a target
// (not in a map by hash: at 1M targets that map held ~60 MB), so that a
// target that leaves its share is known to leave it.
type state struct {
	alloc    allocation.Allocator
	configs  *shares.ScrapeConfigs
	jobNames map[string]bool // configured jobs: served even without targets
	members  []allocation.Member
	names    []string // of members, sorted
	jobs     map[string]*jobState
	index    map[string]int32 // of names: member index in names
	moved    int              // targets that changed member since takeMoved
	delta    map[shareKey]*shareDelta
	// unreported are the jobs whose discovery has not reported (see
	// discovery.Snapshot): their targets are kept as they were.
	unreported map[string]bool
	// keys index each job's targets by report.TargetKey, for the jobs the
	// members reported series of, until the job's targets change.
	keys map[string]jobKeys
	// lastSeries are the targets' last reported series.
	lastSeries map[uint64]lastSeries
	// series is each member's series load (allocation.SeriesLoads), kept
	// up to date as targets enter and leave shares, and recomputed when
	// the weights change.
	series map[string]int64
}

type jobKeys struct {
	targets []discovery.Target // the job's targets the index is of
	index   map[string]int     // by target key: a position in targets
}

type jobState struct {
	targets []discovery.Target // as discovery sent them: sorted by Hash, one per Hash
	// members are the targets' members, by index: an index in the state's
	// names, or unassigned.
	members []int32
	job     *shares.Job
}

// unassigned is the member index of targets that no member may take ("").
const unassigned = -1

// memberName returns the name of the member of index i in names.
func memberName(names []string, i int32) string {
	if i == unassigned {
		return ""
	}
	return names[i]
}

// memberIndex returns the index of member in names, unassigned for "".
func (s *state) memberIndex(member string) int32 {
	if i, ok := s.index[member]; ok {
		return i
	}
	return unassigned
}

type shareKey struct{ job, member string }

// shareDelta is what changes in one share: hashes that leave it (the old
// entry is dropped) and targets that enter it (replacing any old entry).
type shareDelta struct {
	out map[uint64]struct{}
	in  map[uint64]discovery.Target
}

func newState(alloc allocation.Allocator, configs map[string]*promconfig.ScrapeConfig) (*state, error) {
	s := &state{
		series:     map[string]int64{},
		alloc:      alloc,
		jobs:       map[string]*jobState{},
		delta:      map[shareKey]*shareDelta{},
		unreported: map[string]bool{},
	}
	return s, s.setScrapeConfigs(configs)
}

// setScrapeConfigs replaces the scrape configs: a job that is no longer
// configured is served until discovery, re-applied with the new configs,
// no longer sends it.
func (s *state) setScrapeConfigs(configs map[string]*promconfig.ScrapeConfig) error {
	encoded, err := shares.NewScrapeConfigs(configs)
	if err != nil {
		return err
	}
	s.configs = encoded
	s.jobNames = make(map[string]bool, len(configs))
	for name := range configs {
		s.jobNames[name] = true
		if _, known := s.jobs[name]; !known {
			s.unreported[name] = true // until discovery reports it
		}
		s.job(name)
	}
	for name, js := range s.jobs {
		if !s.jobNames[name] && len(js.targets) == 0 {
			delete(s.jobs, name)
		}
	}
	return nil
}

func (s *state) job(name string) *jobState {
	js, ok := s.jobs[name]
	if !ok {
		js = &jobState{job: shares.NewJob(map[string]*shares.Share{})}
		s.jobs[name] = js
	}
	return js
}

// setMembers hands the members to the allocator if they changed, moves the
// targets whose member changed, and reports whether they did.
func (s *state) setMembers(members []allocation.Member) (bool, error) {
	sorted := slices.SortedFunc(slices.Values(members), func(a, b allocation.Member) int { return strings.Compare(a.Identity, b.Identity) })
	if s.names != nil && slices.Equal(sorted, s.members) {
		return false, nil
	}
	if err := s.alloc.SetMembers(sorted); err != nil {
		return false, err
	}
	s.members = sorted
	old := s.names
	s.names = make([]string, len(sorted))
	s.index = make(map[string]int32, len(sorted))
	for i, m := range sorted {
		s.names[i] = m.Identity
		s.index[m.Identity] = int32(i)
	}
	for name, js := range s.jobs {
		for i, t := range js.targets {
			was := memberName(old, js.members[i])
			member, _ := s.alloc.MemberOf(t.Hash)
			js.members[i] = s.memberIndex(member)
			if member != was {
				s.leave(name, was, t.Hash)
				s.enter(name, member, t)
				s.moved++
			}
		}
	}
	return true, nil
}

// measurements turns the members' reports into the allocator's
// measurements. A target that several members report (one that just
// moved) is measured by its member, or else by the member of the smallest
// name; keys of targets the state does not have are ignored; a target
// that no member reports keeps the series it was last reported with.
func (s *state) measurements(series Series) []allocation.Measurement {
	if s.keys == nil {
		s.keys = map[string]jobKeys{}
	}
	type seen struct {
		at     int // in out
		member string
	}
	var out []allocation.Measurement
	first := map[uint64]seen{}
	jobOf := map[string][]uint64{} // the reported targets, by job
	for _, member := range slices.Sorted(maps.Keys(series)) {
		for job, byKey := range series[member] {
			js, ok := s.jobs[job]
			if !ok {
				continue
			}
			keys := s.jobKeys(job, js)
			for key, n := range byKey {
				i, ok := keys.index[key]
				if !ok {
					continue
				}
				m := allocation.Measurement{Hash: js.targets[i].Hash, Member: member, Series: n}
				was, dup := first[m.Hash]
				switch {
				case !dup:
					first[m.Hash] = seen{len(out), member}
					out = append(out, m)
					jobOf[job] = append(jobOf[job], m.Hash)
				case was.member != memberName(s.names, js.members[i]) && member == memberName(s.names, js.members[i]):
					out[was.at] = m
					first[m.Hash] = seen{was.at, member}
				}
			}
		}
	}
	for job, k := range s.keys {
		if js, ok := s.jobs[job]; !ok || !sameSlice(k.targets, js.targets) {
			delete(s.keys, job)
		}
	}
	// A target that no report names now (it just moved: its old member
	// no longer scrapes it, its new one has not reported it yet) keeps
	// its last series, by no member, while the state has it.
	if s.lastSeries == nil {
		s.lastSeries = map[uint64]lastSeries{}
	}
	for h, last := range s.lastSeries {
		if _, reported := first[h]; reported {
			continue
		}
		js, ok := s.jobs[last.job]
		if !ok {
			delete(s.lastSeries, h)
			continue
		}
		if _, found := slices.BinarySearchFunc(js.targets, h, func(t discovery.Target, h uint64) int { return cmp.Compare(t.Hash, h) }); !found {
			delete(s.lastSeries, h)
			continue
		}
		out = append(out, allocation.Measurement{Hash: h, Series: last.series})
	}
	for job, byJob := range jobOf {
		for _, h := range byJob {
			s.lastSeries[h] = lastSeries{job: job, series: out[first[h].at].Series}
		}
	}
	return out
}

// lastSeries is a target's last reported series, and its job.
type lastSeries struct {
	job    string
	series int64
}

// jobKeys returns the index of the job's targets by report.TargetKey,
// built anew when they changed.
func (s *state) jobKeys(job string, js *jobState) jobKeys {
	if k, ok := s.keys[job]; ok && sameSlice(k.targets, js.targets) {
		return k
	}
	k := jobKeys{targets: js.targets, index: make(map[string]int, len(js.targets))}
	for i, t := range js.targets {
		k.index[report.TargetKey(t.Element.Labels())] = i
	}
	s.keys[job] = k
	return k
}

// measure hands the members' measurements to the allocator, moves the
// targets whose member changed, and reports whether any did or a member's
// series load changed (the status shows it).
func (s *state) measure(ms []allocation.Measurement) bool {
	was := maps.Clone(s.series)
	s.alloc.Measure(ms)
	moved := s.refollow()
	s.series = s.alloc.SeriesLoads()
	for m, n := range was {
		if n != s.series[m] {
			return true
		}
	}
	for m, n := range s.series {
		if n != was[m] {
			return true
		}
	}
	return moved
}

// refollow asks the allocator for every target's member, and moves those
// whose member changed; it reports whether any did.
func (s *state) refollow() bool {
	moved := false
	for name, js := range s.jobs {
		for i, t := range js.targets {
			was := memberName(s.names, js.members[i])
			member, _ := s.alloc.MemberOf(t.Hash)
			if member != was {
				js.members[i] = s.memberIndex(member)
				s.leave(name, was, t.Hash)
				s.enter(name, member, t)
				s.moved++
				moved = true
			}
		}
	}
	return moved
}

// setTargets brings the targets to those of snap.
func (s *state) setTargets(snap discovery.Snapshot) {
	type entry struct {
		name string
		js   *jobState
		i    int // in js.targets
	}
	var added []allocation.Target
	var removed []uint64
	var entering []entry
	leaving := func(job string, js *jobState, i int) {
		removed = append(removed, js.targets[i].Hash)
		s.leave(job, memberName(s.names, js.members[i]), js.targets[i].Hash)
	}
	for name, ts := range snap.Jobs {
		js := s.job(name)
		if s.unreported[name] = snap.Unreported[name]; s.unreported[name] {
			continue // its targets are not known: keep those it had
		}
		if sameSlice(js.targets, ts) {
			continue
		}
		old := js.targets
		members := make([]int32, len(ts))
		add := func(j int) {
			added = append(added, allocation.Target{Hash: ts[j].Hash, Node: ts[j].Node, Job: name, Pin: ts[j].Pin})
			entering = append(entering, entry{name, js, j})
			members[j] = unassigned // until the allocator is updated
		}
		i, j := 0, 0
		for i < len(old) || j < len(ts) {
			switch {
			case j == len(ts) || i < len(old) && old[i].Hash < ts[j].Hash:
				leaving(name, js, i)
				i++
			case i == len(old) || ts[j].Hash < old[i].Hash:
				add(j)
				j++
			default:
				switch {
				case old[i].Node != ts[j].Node || old[i].Pin != ts[j].Pin: // placed anew
					leaving(name, js, i)
					add(j)
				case old[i].Element != ts[j].Element: // new metadata, same member
					member := memberName(s.names, js.members[i])
					s.leave(name, member, ts[j].Hash)
					s.enter(name, member, ts[j])
					members[j] = js.members[i]
				default:
					members[j] = js.members[i]
				}
				i++
				j++
			}
		}
		js.targets, js.members = ts, members
	}
	for name, js := range s.jobs {
		if _, ok := snap.Jobs[name]; ok {
			continue
		}
		for i := range js.targets {
			leaving(name, js, i)
		}
		js.targets, js.members = nil, nil
		if !s.jobNames[name] {
			defer delete(s.jobs, name) // once its shares are emptied below
			defer delete(s.unreported, name)
		}
	}

	displaced := s.alloc.Displaced()
	s.alloc.Update(added, removed)
	for _, e := range entering {
		t := e.js.targets[e.i]
		member, _ := s.alloc.MemberOf(t.Hash)
		e.js.members[e.i] = s.memberIndex(member)
		s.enter(e.name, member, t)
	}
	for _, h := range append(displaced, s.alloc.Displaced()...) {
		s.follow(h)
	}
}

// follow moves a known target to its member in the allocator, if that changed.
func (s *state) follow(h uint64) {
	for name, js := range s.jobs {
		i, found := slices.BinarySearchFunc(js.targets, h, func(t discovery.Target, h uint64) int { return cmp.Compare(t.Hash, h) })
		if !found {
			continue
		}
		t := js.targets[i]
		was := memberName(s.names, js.members[i])
		member, _ := s.alloc.MemberOf(h)
		if member == was {
			return
		}
		s.leave(name, was, h)
		s.enter(name, member, t)
		js.members[i] = s.memberIndex(member)
		s.moved++
		return
	}
}

func (s *state) shareDelta(job, member string) *shareDelta {
	k := shareKey{job, member}
	d, ok := s.delta[k]
	if !ok {
		d = &shareDelta{out: map[uint64]struct{}{}, in: map[uint64]discovery.Target{}}
		s.delta[k] = d
	}
	return d
}

func (s *state) leave(job, member string, h uint64) {
	if member != "" {
		s.series[member] -= s.alloc.Weight(h)
	}
	d := s.shareDelta(job, member)
	d.out[h] = struct{}{}
	delete(d.in, h)
}

func (s *state) enter(job, member string, t discovery.Target) {
	if member != "" {
		s.series[member] += s.alloc.Weight(t.Hash)
	}
	s.shareDelta(job, member).in[t.Hash] = t
}

// takeMoved returns how many targets changed member since its last call.
func (s *state) takeMoved() int {
	n := s.moved
	s.moved = 0
	return n
}

// allocation rebuilds the changed shares and returns the allocation to serve.
func (s *state) allocation(epoch int, identity string) *shares.Allocation {
	changed := map[string]map[string]*shares.Share{}
	for k, d := range s.delta {
		js, ok := s.jobs[k.job]
		if !ok {
			continue
		}
		if changed[k.job] == nil {
			changed[k.job] = map[string]*shares.Share{}
		}
		changed[k.job][k.member] = shares.NewShare(merge(js.job.Share(k.member).Targets(), d, k.member))
	}
	clear(s.delta)
	for name, byMember := range changed {
		s.jobs[name].job = s.jobs[name].job.With(byMember)
	}
	jobs := make(map[string]*shares.Job, len(s.jobs))
	for name, js := range s.jobs {
		jobs[name] = js.job
	}
	a := shares.New(epoch, identity, s.names, s.configs, jobs)
	a.OverLimit = s.alloc.Counts().OverLimit
	a.Series = make(map[string]int64, len(s.names))
	for _, m := range s.names {
		a.Series[m] = s.series[m]
	}
	maps.DeleteFunc(s.series, func(m string, n int64) bool { _, member := s.index[m]; return n == 0 && !member })
	a.Unreported = make(map[string]bool)
	for name, unreported := range s.unreported {
		if _, ok := jobs[name]; ok && unreported {
			a.Unreported[name] = true
		}
	}
	return a
}

// merge applies a share's changes to its targets, keeping them sorted by hash.
func merge(old []shares.Target, d *shareDelta, member string) []shares.Target {
	in := slices.SortedFunc(maps.Values(d.in), func(a, b discovery.Target) int { return cmp.Compare(a.Hash, b.Hash) })
	out := make([]shares.Target, 0, max(len(old)-len(d.out), 0)+len(in))
	j := 0
	for _, t := range old {
		for ; j < len(in) && in[j].Hash < t.Hash; j++ {
			out = append(out, sharesTarget(in[j], member))
		}
		if _, gone := d.out[t.Hash]; gone {
			continue
		}
		if j < len(in) && in[j].Hash == t.Hash {
			continue // replaced by the entering target, appended next
		}
		out = append(out, t)
	}
	for ; j < len(in); j++ {
		out = append(out, sharesTarget(in[j], member))
	}
	return out
}

func sharesTarget(t discovery.Target, member string) shares.Target {
	return shares.Target{Job: t.Job, Member: member, Hash: t.Hash, Element: t.Element}
}

// sameSlice reports whether a and b are the same slice: discovery shares the
// slices of jobs that did not change between snapshots.
func sameSlice(a, b []discovery.Target) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
