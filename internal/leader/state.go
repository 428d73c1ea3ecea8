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
	// fresh returns an allocator like alloc, empty: hot standby asks it
	// where targets would go without a member.
	fresh func() (allocation.Allocator, error)
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
		alloc:        alloc,
		jobs:         map[string]*jobState{},
		delta:        map[shareKey]*shareDelta{},
		unreported:   map[string]bool{},
		facts:        map[string]memberFacts{},
		joined:       map[string]time.Time{},
		handoffs:     map[uint64]*handoff{},
		releases:     map[uint64]*handoff{},
		extra:        map[shareKey]map[uint64]shares.Target{},
		extraChanged: map[shareKey]bool{},
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
	if s.names == nil || !slices.Equal(placed, s.members) {
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
		if _, ok := s.index[rel.from]; !ok {
			s.release(h, rel) // its old member is gone
		}
	}
	for name, js := range s.jobs {
		for i, t := range js.targets {
			was := memberName(old, js.members[i])
			member, _ := s.alloc.MemberOf(t.Hash)
			if js.members[i] = s.memberIndex(was); js.members[i] == unassigned && was != "" {
				s.leave(name, was, t.Hash) // its member is gone
				if member == "" {
					s.enter(name, "", t)
					s.moved++
					continue
				}
			}
			s.assign(name, js, i, member)
		}
	}
	return true, nil
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
		member, _ := s.alloc.MemberOf(h)
		s.assign(name, js, i, member)
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
	d := s.shareDelta(job, member)
	d.out[h] = struct{}{}
	delete(d.in, h)
}

func (s *state) enter(job, member string, t discovery.Target) {
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
		changed[k.job][k.member] = shares.NewShare(merge(js.job.Share(k.member).Targets(), d, k.member))
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
