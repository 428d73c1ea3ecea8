package leader

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"

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
// allocation costs O(jobs + changed shares). A membership change renumbers
// every target's member index, one pass over an int32 a target, and asks the
// allocator for the member of the targets it names as moved
// (Allocator.MovedByMembers) and of those of members that left; it rebuilds
// only the shares that targets moved in or out of, each by copying its
// unchanged runs whole. With a strategy that does not name what moved, it
// asks for every target's member, O(n).
//
// Each target's member is kept beside the job's targets, one int32 a target
// (not in a map by hash: at 1M targets that map held ~60 MB), so that a
// target that leaves its share is known to leave it.
type state struct {
	// placedByWeight is whether the members' measurements may change a
	// target's member (series-weighted, or max_series_per_collector): only
	// then does a report cost a pass over every target's member.
	placedByWeight bool
	alloc          allocation.Allocator
	configs        *shares.ScrapeConfigs
	jobNames       map[string]bool // configured jobs: served even without targets
	// intervals are the configured jobs' scrape intervals.
	intervals map[string]time.Duration
	// all are the group's members, sorted; members those of them the
	// allocator has (not leaving).
	all     []allocation.Member
	members []allocation.Member
	names   []string // of all, sorted
	jobs    map[string]*jobState
	index   map[string]int32 // of names: member index in names
	moved   int              // targets that changed member since takeMoved
	delta   map[shareKey]*shareDelta
	// unreported are the jobs whose discovery has not reported (see
	// discovery.Snapshot): their targets are kept as they were.
	unreported map[string]bool

	// handoff is set when members report (handoff.go): moves are made
	// before they are broken; else at once.
	handoff bool
	// now is the time of the change being applied.
	now time.Time
	// facts are what members last reported of themselves.
	facts map[string]memberFacts
	// handoffs are the moves under way, and releases the moves made whose
	// old member still exports the target for an interval, by target hash.
	handoffs map[uint64]*handoff
	releases map[uint64]*handoff
	// extra are the targets each member scrapes beyond its share (warming
	// and releasing ones), and extraChanged the shares whose extra
	// targets changed since the last allocation.
	extra        map[shareKey]map[uint64]shares.Target
	extraChanged map[shareKey]bool
	// standby are the targets each hot standby member warms (handoff.go),
	// and standbyChanged is set when a member's hot_standby changed.
	standby        map[shareKey]map[uint64]shares.Target
	standbyChanged bool
	// joined is when each member was first seen in this term (its start
	// for the members there then).
	joined map[string]time.Time
	// held are the targets the members reported they hold
	// (report.Report.Held) as the term began, by job and target key: a
	// job's first targets start at their holders (see setTargets). Kept
	// while seeding, and each job's until its first targets came.
	held    map[string]map[string]string
	seeding bool
	// parked are the targets of a new term's first allocation that stay
	// at the member that holds them, though the allocator places them
	// elsewhere, until discovery has reported every job and the resources'
	// jobs (jobsPending) are known: placed while other jobs' targets are
	// still to come, a target would move twice, away and back, as the load
	// bounds take the later targets in. Discovery reports every job within
	// its report wait (30 s).
	parked      map[uint64]bool
	jobsPending bool
	// heldCount counts the targets reported held, and heldOver is set
	// once they are more than maxHeld: then none is kept.
	heldCount int
	heldOver  bool
	// fresh returns an allocator like alloc, empty: hot standby asks it
	// where targets would go without a member.
	fresh func() (allocation.Allocator, error)

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
		placedByWeight: true, // unless its user knows better (Term does)
		alloc:          alloc,
		jobs:           map[string]*jobState{},
		delta:          map[shareKey]*shareDelta{},
		unreported:     map[string]bool{},
		facts:          map[string]memberFacts{},
		joined:         map[string]time.Time{},
		handoffs:       map[uint64]*handoff{},
		releases:       map[uint64]*handoff{},
		extra:          map[shareKey]map[uint64]shares.Target{},
		extraChanged:   map[shareKey]bool{},
		series:         map[string]int64{},
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
	s.intervals = make(map[string]time.Duration, len(configs))
	for name, sc := range configs {
		s.jobNames[name] = true
		if sc != nil {
			s.intervals[name] = time.Duration(sc.ScrapeInterval)
		}
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

// setMembers sets the group's members and reports whether a target's
// member changed or a move began (see place).
func (s *state) setMembers(members []allocation.Member) (bool, error) {
	s.all = slices.SortedFunc(slices.Values(members), func(a, b allocation.Member) int { return strings.Compare(a.Identity, b.Identity) })
	seen := make(map[string]time.Time, len(s.all))
	for _, m := range s.all {
		if at, ok := s.joined[m.Identity]; ok {
			seen[m.Identity] = at
		} else {
			seen[m.Identity] = s.now
		}
	}
	s.joined = seen
	return s.place()
}

// place hands the members that are not leaving to the allocator if they
// changed, moves the targets of members that are gone at once, begins the
// move of each target whose member in the allocator changed (handoff.go),
// and reports whether anything changed.
func (s *state) place() (bool, error) {
	for m, f := range s.facts {
		if f.leaving && !slices.ContainsFunc(s.all, func(a allocation.Member) bool { return a.Identity == m }) {
			delete(s.facts, m) // it has left: whoever comes under its name reports anew
		}
	}
	placed := slices.DeleteFunc(slices.Clone(s.all), func(m allocation.Member) bool { return s.facts[m.Identity].leaving })
	same := s.names != nil && len(s.names) == len(s.all)
	for i := 0; same && i < len(s.all); i++ {
		same = s.names[i] == s.all[i].Identity
	}
	if same && slices.Equal(placed, s.members) {
		return false, nil
	}
	setAllocator := s.names == nil || !slices.Equal(placed, s.members)
	if setAllocator {
		if err := s.alloc.SetMembers(placed); err != nil {
			return false, err
		}
		s.members = placed
	}
	old := s.names
	s.names = make([]string, len(s.all))
	s.index = make(map[string]int32, len(s.all))
	for i, m := range s.all {
		s.names[i] = m.Identity
		s.index[m.Identity] = int32(i)
	}
	for h, ho := range s.handoffs {
		if _, ok := s.index[ho.to]; !ok {
			s.cancel(h, ho) // its new member is gone
		}
	}
	for h, rel := range s.releases {
		_, from := s.index[rel.from]
		_, to := s.index[rel.to]
		if !from || !to && !rel.cutover.IsZero() {
			s.release(h, rel) // its old member, or its new one, is gone
		}
	}
	// Where the allocator tells which targets its change of members may have
	// moved, only those are asked for their member (with the targets of
	// members that are gone); the others keep theirs, renumbered in one pass
	// over the members' indices.
	var moved []uint64
	followed := false
	if setAllocator {
		moved, followed = s.alloc.MovedByMembers()
	}
	renumber := make([]int32, len(old))
	for i, name := range old {
		renumber[i] = s.memberIndex(name) // unassigned if it is gone
	}
	for name, js := range s.jobs {
		for i, m := range js.members {
			if m == unassigned {
				if !followed {
					member, _ := s.alloc.MemberOf(js.targets[i].Hash)
					s.assign(name, js, i, member)
				}
				continue // among moved if that changed
			}
			was := old[m]
			if js.members[i] = renumber[m]; js.members[i] == unassigned {
				t := js.targets[i]
				s.leave(name, was, t.Hash) // its member is gone
				member, _ := s.alloc.MemberOf(t.Hash)
				if member == "" {
					if ho := s.handoffs[t.Hash]; ho != nil {
						s.cancel(t.Hash, ho) // to nobody: no member warms it
					}
					s.enter(name, "", t)
					s.moved++
					continue
				}
				s.assign(name, js, i, member)
				continue
			}
			if !followed {
				member, _ := s.alloc.MemberOf(js.targets[i].Hash)
				s.assign(name, js, i, member)
			}
		}
	}
	if followed {
		s.follow(moved)
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
// targets whose member changed (make before break, see assign), and
// reports whether any did or a member's series load changed (the status
// shows it).
func (s *state) measure(ms []allocation.Measurement) bool {
	was := maps.Clone(s.series)
	s.alloc.Measure(ms)
	moved := false
	if s.placedByWeight {
		moved = s.refollow()
	}
	s.series = s.seriesLoads()
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

// seriesLoads sums each member's weights of the targets it holds in the
// state: a target whose move is under way counts for its old member until
// the move is made (enter and leave then move its weight).
func (s *state) seriesLoads() map[string]int64 {
	out := make(map[string]int64, len(s.names))
	for _, js := range s.jobs {
		for i, m := range js.members {
			if m != unassigned {
				out[s.names[m]] += s.alloc.Weight(js.targets[i].Hash)
			}
		}
	}
	return out
}

// refollow asks the allocator for every target's member, and begins the
// move of those whose member changed (see assign); it reports whether any
// move began or was made or a move under way was called off.
func (s *state) refollow() bool {
	changed := false
	for name, js := range s.jobs {
		for i, t := range js.targets {
			was := memberName(s.names, js.members[i])
			member, _ := s.alloc.MemberOf(t.Hash)
			ho := s.handoffs[t.Hash]
			if ho == nil && member == was || ho != nil && ho.to == member {
				continue
			}
			s.assign(name, js, i, member)
			changed = true
		}
	}
	return changed
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
	// A job that had no targets and has no change pending gets its shares
	// built whole, in order, rather than by a change per target (the first
	// allocation of every job).
	pending := map[string]bool{}
	for k := range s.delta {
		pending[k.job] = true
	}
	fresh := map[string]bool{}
	leaving := func(job string, js *jobState, i int) {
		s.forget(js.targets[i].Hash)
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
		if len(old) == 0 && !pending[name] {
			fresh[name] = true
			added, entering = slices.Grow(added, len(ts)), slices.Grow(entering, len(ts))
		}
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
					s.relabel(ts[j])
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
	var seeded []entry
	members := allocation.MembersOf(s.alloc, len(entering), func(k int) uint64 { return entering[k].js.targets[entering[k].i].Hash })
	for k, e := range entering {
		t, member := e.js.targets[e.i], members[k]
		e.js.members[e.i] = s.memberIndex(member)
		if !fresh[e.name] {
			s.enter(e.name, member, t)
			continue
		}
		if h := s.holder(e.name, e.js, e.i); h != unassigned && h != e.js.members[e.i] {
			e.js.members[e.i] = h // at its holder until it moves, below
			seeded = append(seeded, e)
		}
		if m := e.js.members[e.i]; m != unassigned {
			s.series[s.names[m]] += s.alloc.Weight(t.Hash) // its shares are built whole below
		}
	}
	for name := range fresh {
		s.buildShares(s.jobs[name])
	}
	for name := range snap.Jobs {
		if !s.unreported[name] {
			delete(s.held, name) // seeded, or nothing to seed
		}
	}
	parking := s.parking()
	for _, e := range seeded {
		h := e.js.targets[e.i].Hash
		if parking {
			if s.parked == nil {
				s.parked = map[uint64]bool{}
			}
			s.parked[h] = true
			continue
		}
		member, _ := s.alloc.MemberOf(h)
		s.assign(e.name, e.js, e.i, member)
	}
	s.follow(append(displaced, s.alloc.Displaced()...))
	s.unpark()
}

// parking reports whether targets are parked at their holders: while the
// resources' jobs are still to come or a job's discovery has not reported.
func (s *state) parking() bool {
	if s.jobsPending {
		return true
	}
	for _, unreported := range s.unreported {
		if unreported {
			return true
		}
	}
	return false
}

// unpark moves the parked targets to their members in the allocator once
// nothing parks them any more.
func (s *state) unpark() {
	if len(s.parked) == 0 || s.parking() {
		return
	}
	hashes := slices.Collect(maps.Keys(s.parked))
	s.parked = nil
	s.follow(hashes)
}

// holder returns the member that reported it holds the target at i of a
// job (report.Report.Held), if it is a member (a leaving one included: it
// exports the target until it is handed over), unassigned otherwise.
func (s *state) holder(job string, js *jobState, i int) int32 {
	byKey := s.held[job]
	if len(byKey) == 0 {
		return unassigned
	}
	m, ok := byKey[report.TargetKey(js.targets[i].Element.Labels())]
	if !ok {
		return unassigned
	}
	return s.memberIndex(m)
}

// buildShares builds the shares of a job that had none from its targets and
// their members: one pass to count each member's, one to fill them, in
// order of hash.
func (s *state) buildShares(js *jobState) {
	counts := make([]int, len(s.names)+1) // by member index + 1: unassigned first
	for _, m := range js.members {
		counts[m+1]++
	}
	byIndex := make([][]shares.Target, len(counts))
	for k, c := range counts {
		byIndex[k] = make([]shares.Target, 0, c)
	}
	for i, t := range js.targets {
		m := js.members[i]
		byIndex[m+1] = append(byIndex[m+1], sharesTarget(t))
	}
	changed := make(map[string]*shares.Share, len(byIndex))
	for k, ts := range byIndex {
		if len(ts) > 0 {
			changed[memberName(s.names, int32(k-1))] = shares.NewShare(ts)
		}
	}
	js.job = js.job.With(changed)
}

// follow moves the known targets of the given hashes to their member in the
// allocator, where that changed (see assign). The hashes are sorted once and each job's
// targets searched onwards from the last one found: a pass over few
// hashes costs a few steps near each, not a search of every job from its
// start.
func (s *state) follow(hashes []uint64) {
	if len(hashes) == 0 {
		return
	}
	hashes = slices.Compact(slices.Sorted(slices.Values(hashes)))
	for name, js := range s.jobs {
		// A hash is in one job at most: those found are not searched in
		// the jobs that follow.
		from, left := 0, hashes[:0]
		for k, h := range hashes {
			if from == len(js.targets) {
				left = append(left, hashes[k:]...)
				break
			}
			i, found := searchFrom(js.targets, from, h)
			if found {
				member, _ := s.alloc.MemberOf(h)
				s.assign(name, js, i, member)
			} else {
				left = append(left, h)
			}
			from = i
		}
		if hashes = left; len(hashes) == 0 {
			return
		}
	}
}

// searchFrom returns the position of the first of ts, sorted by hash, from
// position from on, whose hash is h or more, and whether it is h; every
// target before from has a smaller hash. It doubles its steps from from
// before a binary search, so a hash near from costs a few comparisons.
func searchFrom(ts []discovery.Target, from int, h uint64) (int, bool) {
	lo, hi, step := from, from, 1
	for hi < len(ts) && ts[hi].Hash < h {
		lo = hi + 1
		hi += step
		step <<= 1
	}
	j, found := slices.BinarySearchFunc(ts[lo:min(hi+1, len(ts))], h, func(t discovery.Target, h uint64) int { return cmp.Compare(t.Hash, h) })
	return lo + j, found
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
	rescrape := maps.Clone(s.extraChanged)
	clear(s.extraChanged)
	changed := map[string]map[string]*shares.Share{}
	for k, d := range s.delta {
		if len(s.extra[k]) > 0 || len(s.standby[k]) > 0 {
			rescrape[k] = true
		}
		js, ok := s.jobs[k.job]
		if !ok {
			continue
		}
		if changed[k.job] == nil {
			changed[k.job] = map[string]*shares.Share{}
		}
		changed[k.job][k.member] = shares.NewShare(merge(js.job.Share(k.member).Targets(), d))
	}
	clear(s.delta)
	for name, byMember := range changed {
		s.jobs[name].job = s.jobs[name].job.With(byMember)
	}
	s.standbys(rescrape)
	s.scrapeShares(rescrape)
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
// The unchanged runs between two changed hashes are copied whole, each found
// by a binary search: a share that loses or gains a few of its targets costs
// a copy, not a lookup per target.
func merge(old []shares.Target, d *shareDelta) []shares.Target {
	in := slices.SortedFunc(maps.Values(d.in), func(a, b discovery.Target) int { return cmp.Compare(a.Hash, b.Hash) })
	gone := slices.Sorted(maps.Keys(d.out))
	out := make([]shares.Target, 0, max(len(old)-len(gone), 0)+len(in))
	i, g, n := 0, 0, 0 // in old, gone, in
	for g < len(gone) || n < len(in) {
		h := uint64(0) // the next changed hash
		if n == len(in) || g < len(gone) && gone[g] < in[n].Hash {
			h = gone[g]
		} else {
			h = in[n].Hash
		}
		j, found := slices.BinarySearchFunc(old[i:], h, func(t shares.Target, h uint64) int { return cmp.Compare(t.Hash, h) })
		out = append(out, old[i:i+j]...)
		i += j
		if found {
			i++ // it left, or the entering target replaces it
		}
		if g < len(gone) && gone[g] == h {
			g++
		}
		if n < len(in) && in[n].Hash == h {
			out = append(out, sharesTarget(in[n]))
			n++
		}
	}
	return append(out, old[i:]...)
}

func sharesTarget(t discovery.Target) shares.Target {
	return shares.Target{Hash: t.Hash, Element: t.Element}
}

// sameSlice reports whether a and b are the same slice: discovery shares the
// slices of jobs that did not change between snapshots.
func sameSlice(a, b []discovery.Target) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
