package leader

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	promconfig "github.com/prometheus/prometheus/config"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
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
// allocator for every target's owner once, O(n), and rebuilds only the shares
// that targets moved in or out of.
//
// Each target's owner is kept beside the job's targets, one int32 a target
// (not in a map by hash: at 1M targets that map held ~60 MB), so that a
// target that leaves its share is known to leave it.
type state struct {
	alloc    allocation.Allocator
	configs  *allocatorapi.ScrapeConfigs
	jobNames map[string]bool // configured jobs: served even without targets
	members  []allocation.Member
	names    []string // of members, sorted
	jobs     map[string]*jobState
	index    map[string]int32 // of names: owner index in names
	total    int              // targets of every job
	counts   map[string]int   // targets per owner, "" for unassigned
	moved    int              // targets that changed owner since takeMoved
	delta    map[shareKey]*shareDelta
}

type jobState struct {
	targets []discovery.Target // as discovery sent them: sorted by Hash, one per Hash
	// owners are the targets' owners, by index: an index in the state's
	// names, or unassigned.
	owners []int32
	api    *allocatorapi.Job
}

// unassigned is the owner index of targets that no member may take ("").
const unassigned = -1

// ownerName returns the name of the owner of index i in names.
func ownerName(names []string, i int32) string {
	if i == unassigned {
		return ""
	}
	return names[i]
}

// ownerIndex returns the index of owner in names, unassigned for "".
func (s *state) ownerIndex(owner string) int32 {
	if i, ok := s.index[owner]; ok {
		return i
	}
	return unassigned
}

type shareKey struct{ job, owner string }

// shareDelta is what changes in one share: hashes that leave it (the old
// entry is dropped) and targets that enter it (replacing any old entry).
type shareDelta struct {
	out map[uint64]struct{}
	in  map[uint64]discovery.Target
}

func newState(alloc allocation.Allocator, configs map[string]*promconfig.ScrapeConfig) (*state, error) {
	s := &state{
		alloc:  alloc,
		jobs:   map[string]*jobState{},
		counts: map[string]int{},
		delta:  map[shareKey]*shareDelta{},
	}
	return s, s.setScrapeConfigs(configs)
}

// setScrapeConfigs replaces the scrape configs: a job that is no longer
// configured is served until discovery, re-applied with the new configs,
// no longer sends it.
func (s *state) setScrapeConfigs(configs map[string]*promconfig.ScrapeConfig) error {
	encoded, err := allocatorapi.NewScrapeConfigs(configs)
	if err != nil {
		return err
	}
	s.configs = encoded
	s.jobNames = make(map[string]bool, len(configs))
	for name := range configs {
		s.jobNames[name] = true
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
		js = &jobState{api: allocatorapi.NewJob(map[string]*allocatorapi.Share{})}
		s.jobs[name] = js
	}
	return js
}

// setMembers hands the members to the allocator if they changed, moves the
// targets whose owner changed, and reports whether they did.
func (s *state) setMembers(members []allocation.Member) (bool, error) {
	sorted := slices.SortedFunc(slices.Values(members), func(a, b allocation.Member) int { return strings.Compare(a.Name, b.Name) })
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
		s.names[i] = m.Name
		s.index[m.Name] = int32(i)
	}
	for name, js := range s.jobs {
		for i, t := range js.targets {
			was := ownerName(old, js.owners[i])
			owner, _ := s.alloc.Owner(t.Hash)
			js.owners[i] = s.ownerIndex(owner)
			if owner != was {
				s.leave(name, was, t.Hash)
				s.enter(name, owner, t)
				s.moved++
			}
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
		removed = append(removed, js.targets[i].Hash)
		s.leave(job, ownerName(s.names, js.owners[i]), js.targets[i].Hash)
		s.total--
	}
	for name, ts := range snap.Jobs {
		js := s.job(name)
		if sameSlice(js.targets, ts) {
			continue
		}
		old := js.targets
		owners := make([]int32, len(ts))
		add := func(j int) {
			added = append(added, allocation.Target{Hash: ts[j].Hash, Node: ts[j].Node})
			entering = append(entering, entry{name, js, j})
			owners[j] = unassigned // until the allocator is updated
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
				case old[i].Node != ts[j].Node: // per-node places it anew
					leaving(name, js, i)
					add(j)
				case old[i].Element != ts[j].Element: // new metadata, same owner
					owner := ownerName(s.names, js.owners[i])
					s.leave(name, owner, ts[j].Hash)
					s.enter(name, owner, ts[j])
					owners[j] = js.owners[i]
				default:
					owners[j] = js.owners[i]
				}
				i++
				j++
			}
		}
		js.targets, js.owners = ts, owners
	}
	for name, js := range s.jobs {
		if _, ok := snap.Jobs[name]; ok {
			continue
		}
		for i := range js.targets {
			leaving(name, js, i)
		}
		js.targets, js.owners = nil, nil
		if !s.jobNames[name] {
			defer delete(s.jobs, name) // once its shares are emptied below
		}
	}

	displaced := s.alloc.Displaced()
	s.alloc.Update(added, removed)
	for _, e := range entering {
		t := e.js.targets[e.i]
		owner, _ := s.alloc.Owner(t.Hash)
		e.js.owners[e.i] = s.ownerIndex(owner)
		s.enter(e.name, owner, t)
		s.total++
	}
	for _, h := range append(displaced, s.alloc.Displaced()...) {
		s.follow(h)
	}
}

// follow moves a known target to its owner in the allocator, if that changed.
func (s *state) follow(h uint64) {
	for name, js := range s.jobs {
		i, found := slices.BinarySearchFunc(js.targets, h, func(t discovery.Target, h uint64) int { return cmp.Compare(t.Hash, h) })
		if !found {
			continue
		}
		t := js.targets[i]
		was := ownerName(s.names, js.owners[i])
		owner, _ := s.alloc.Owner(h)
		if owner == was {
			return
		}
		s.leave(name, was, h)
		s.enter(name, owner, t)
		js.owners[i] = s.ownerIndex(owner)
		s.moved++
		return
	}
}

func (s *state) shareDelta(job, owner string) *shareDelta {
	k := shareKey{job, owner}
	d, ok := s.delta[k]
	if !ok {
		d = &shareDelta{out: map[uint64]struct{}{}, in: map[uint64]discovery.Target{}}
		s.delta[k] = d
	}
	return d
}

func (s *state) leave(job, owner string, h uint64) {
	d := s.shareDelta(job, owner)
	d.out[h] = struct{}{}
	delete(d.in, h)
	s.counts[owner]--
}

func (s *state) enter(job, owner string, t discovery.Target) {
	s.shareDelta(job, owner).in[t.Hash] = t
	s.counts[owner]++
}

// takeMoved returns how many targets changed owner since its last call.
func (s *state) takeMoved() int {
	n := s.moved
	s.moved = 0
	return n
}

func (s *state) perCollector() map[string]int {
	out := make(map[string]int, len(s.names))
	for _, m := range s.names {
		out[m] = s.counts[m]
	}
	return out
}

// allocation rebuilds the changed shares and returns the allocation to serve.
func (s *state) allocation(epoch int, identity string) *allocatorapi.Allocation {
	changed := map[string]map[string]*allocatorapi.Share{}
	for k, d := range s.delta {
		js, ok := s.jobs[k.job]
		if !ok {
			continue
		}
		if changed[k.job] == nil {
			changed[k.job] = map[string]*allocatorapi.Share{}
		}
		changed[k.job][k.owner] = allocatorapi.NewShare(merge(js.api.Share(k.owner).Targets(), d, k.owner))
	}
	clear(s.delta)
	for name, shares := range changed {
		s.jobs[name].api = s.jobs[name].api.With(shares)
	}
	jobs := make(map[string]*allocatorapi.Job, len(s.jobs))
	for name, js := range s.jobs {
		jobs[name] = js.api
	}
	return allocatorapi.Assemble(epoch, identity, s.names, s.configs, jobs)
}

// merge applies a share's changes to its targets, keeping them sorted by hash.
func merge(old []allocatorapi.Target, d *shareDelta, owner string) []allocatorapi.Target {
	in := slices.SortedFunc(maps.Values(d.in), func(a, b discovery.Target) int { return cmp.Compare(a.Hash, b.Hash) })
	out := make([]allocatorapi.Target, 0, max(len(old)-len(d.out), 0)+len(in))
	j := 0
	for _, t := range old {
		for ; j < len(in) && in[j].Hash < t.Hash; j++ {
			out = append(out, apiTarget(in[j], owner))
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
		out = append(out, apiTarget(in[j], owner))
	}
	return out
}

func apiTarget(t discovery.Target, owner string) allocatorapi.Target {
	return allocatorapi.Target{Job: t.Job, Owner: owner, Hash: t.Hash, Element: t.Element}
}

// sameSlice reports whether a and b are the same slice: discovery shares the
// slices of jobs that did not change between snapshots.
func sameSlice(a, b []discovery.Target) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
