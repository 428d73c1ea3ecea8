package allocation

import "slices"

// least-weighted gives each new target to the member with the fewest
// targets; among those, to the one with the fewest targets of the target's
// job, then to the smaller name; and never moves a target while it and its
// member stay. A leaving member's targets are given out the same way; a
// joining member starts empty and receives new targets (and leavers' ones)
// until it catches up. That is the Target Allocator's meaning of the name,
// ties included, and like there the assignment depends on the order of
// events: a new leader computing it afresh gets another one. Targets given
// out together go in the order of their mixed hash, so the order of a batch
// does not matter.
//
// It balances the members' whole loads, whatever the jobs, as targets come:
// targets given out while the members stay leave them within one target of
// each other. It does not move targets to rebalance: after a join, or after
// the targets of some members went away, the loads differ until enough new
// targets have come.
//
// Within a budget (budget.go), a member's pinned targets count in its load,
// and a member without room takes nothing: a target for which no member
// has room waits, unassigned, and is given out, in the order of the mixed
// hashes, once one has. A member whose room shrinks below its load (a
// target pinned to it came) gives up the targets of its own with the
// highest mixed hashes, which go to the others as new ones do.
type leastWeighted struct {
	members  memberSet
	budget   *budget
	t        table[lwSlot]
	load     []int // per member: its targets
	jobs     jobLoads
	unplaced int      // targets without a member
	shed     []uint64 // targets the last change took off a member without room
}

type lwSlot struct {
	hash   uint64
	member int32 // -1 while there is no member
	job    int32 // in jobs
}

func (s lwSlot) key() uint64 { return s.hash }

func newLeastWeighted() *leastWeighted { return &leastWeighted{budget: &budget{}} }

func (l *leastWeighted) Strategy() string { return LeastWeighted }

func (l *leastWeighted) setBudget(b *budget) { l.budget = b }

func (l *leastWeighted) has(hash uint64) bool { _, ok := l.t.lookup(hash); return ok }

// overLimit counts the targets waiting for room: those without a member
// while there are members.
func (l *leastWeighted) overLimit() int {
	if l.members.len() == 0 {
		return 0
	}
	return l.unplaced
}

func (l *leastWeighted) SetMembers(members []Member) error {
	next, err := newMemberSet(members)
	if err != nil {
		return err
	}
	if slices.Equal(l.members.names, next.names) {
		l.members = next // only nodes changed, which this strategy ignores
		return nil
	}
	old2new, _ := l.members.remap(next)
	l.members = next
	l.load = make([]int, next.len())
	l.jobs.remap(old2new, next.len())
	l.shed = l.shed[:0]
	l.unplaced = 0
	for i := range l.t.slots {
		s := &l.t.slots[i]
		if s.member >= 0 {
			s.member = old2new[s.member]
		}
		if s.member >= 0 {
			l.load[s.member]++
		} else {
			l.unplaced++
		}
	}
	l.settle(nil)
	return nil
}

func (l *leastWeighted) SetTargets(targets []Target) {
	l.Update(l.t.diff(targets))
}

func (l *leastWeighted) Update(added []Target, removed []uint64) {
	l.shed = l.shed[:0]
	for _, h := range removed {
		if s, ok := l.t.remove(h); ok {
			if s.member >= 0 {
				l.load[s.member]--
				l.jobs.lose(s.job, s.member)
			} else {
				l.unplaced--
			}
			l.jobs.drop(s.job)
		}
	}
	// The targets' jobs are numbered in the order they come, which reads
	// added in one sweep: in the order of their hashes, every read of a
	// large batch would miss the cache.
	jobs, numbered := l.jobs.number(added, l.members.len())
	first := l.t.addAll(added, true, func(h uint64, i int32) lwSlot {
		l.jobs.jobs[jobs[i]].targets++
		return lwSlot{hash: h, member: -1, job: jobs[i]}
	})
	l.jobs.forget(numbered)
	slots := make([]keyed, len(l.t.slots)-first)
	for i := range slots {
		slots[i].i = int32(first + i)
	}
	l.unplaced += len(slots)
	l.settle(slots)
}

// settle takes targets off the members whose room is below their load, then
// gives out the targets without a member, fresh ones (new, in the order of
// their mixed hashes) and those that waited for room together, in the order
// of their mixed hashes, while a member has room for them.
func (l *leastWeighted) settle(fresh []keyed) {
	if l.members.len() == 0 {
		return
	}
	if l.budget.room != nil {
		l.giveUp()
	}
	if l.unplaced == len(fresh) {
		l.give(fresh) // none waited
		return
	}
	if !l.anyRoom() {
		return
	}
	var slots []keyed
	for i, s := range l.t.slots {
		if s.member < 0 {
			slots = append(slots, keyed{mix(s.hash), int32(i)})
		}
	}
	l.give(byKey(slots, 64))
}

// anyRoom reports whether a member has room for a target.
func (l *leastWeighted) anyRoom() bool {
	for m, n := range l.load {
		if n < l.budget.roomOf(m) {
			return true
		}
	}
	return false
}

// giveUp takes off each member whose room is below its load the targets
// of the highest mixed hashes.
func (l *leastWeighted) giveUp() {
	over := make(map[int32][]keyed)
	for m, n := range l.load {
		if n > l.budget.room[m] {
			over[int32(m)] = nil
		}
	}
	if len(over) == 0 {
		return
	}
	for i, s := range l.t.slots {
		if ks, ok := over[s.member]; ok {
			over[s.member] = append(ks, keyed{mix(s.hash), int32(i)})
		}
	}
	for m, ks := range over {
		ks = byKey(ks, 64)
		for _, it := range ks[l.budget.room[m]:] {
			s := &l.t.slots[it.i]
			s.member = -1
			l.load[m]--
			l.jobs.lose(s.job, m)
			l.unplaced++
			l.shed = append(l.shed, s.hash)
		}
	}
}

// give assigns the slots, which have no member, in order, each to the member
// with the fewest targets (its pinned ones included) among those with room,
// then the fewest of its job, then the smaller name; a slot for which no
// member has room keeps none.
func (l *leastWeighted) give(slots []keyed) {
	if l.members.len() == 0 || len(slots) == 0 {
		return
	}
	b := l.budget
	// The members with room and the fewest targets, by name. Each leaves on
	// taking a target, so the others still have the fewest until none is
	// left.
	var fewest []int32
	for _, it := range slots {
		if len(fewest) == 0 {
			least := -1
			for m, n := range l.load {
				if n >= b.roomOf(m) {
					continue
				}
				switch total := n + b.fixedOf(m); {
				case least < 0 || total < least:
					least, fewest = total, append(fewest[:0], int32(m))
				case total == least:
					fewest = append(fewest, int32(m))
				}
			}
			if least < 0 {
				return // no member has room
			}
		}
		s := &l.t.slots[it.i]
		j := &l.jobs.jobs[s.job]
		best := 0 // a member with j.least of the job wins: none has fewer
		for k := 1; k < len(fewest) && j.load[fewest[best]] > j.least; k++ {
			if j.load[fewest[k]] < j.load[fewest[best]] {
				best = k
			}
		}
		m := fewest[best]
		fewest = slices.Delete(fewest, best, best+1)
		s.member = m
		l.load[m]++
		l.jobs.gain(s.job, m)
		l.unplaced--
	}
}

func (l *leastWeighted) MemberOf(hash uint64) (string, bool) {
	i, ok := l.t.lookup(hash)
	if !ok || l.t.slots[i].member < 0 {
		return "", false
	}
	return l.members.names[l.t.slots[i].member], true
}

func (l *leastWeighted) Assignment() map[string][]uint64 {
	return l.members.assignment(len(l.t.slots), func(i int) (uint64, int32) {
		return l.t.slots[i].hash, l.t.slots[i].member
	})
}

// Displaced are the targets waiting for room, and those the last change
// took off a member whose room shrank: without a limit, none, as an Update
// places its new targets and moves no other.
func (l *leastWeighted) Displaced() []uint64 {
	if l.overLimit() == 0 {
		return slices.Clone(l.shed)
	}
	return append(l.Unassigned(), l.shed...)
}

func (l *leastWeighted) Unassigned() []uint64 {
	var out []uint64
	for _, s := range l.t.slots {
		if s.member < 0 {
			out = append(out, s.hash)
		}
	}
	return out
}

// jobLoads counts each member's targets of each job. A job has a number
// while it has targets; a number freed is used again.
type jobLoads struct {
	index map[string]int32
	jobs  []jobLoad
	free  []int32
}

type jobLoad struct {
	name    string
	targets int     // with a member or not
	load    []int32 // per member: its targets of the job
	least   int32   // the least of load
	atLeast int32   // the members with least
}

// number returns the number of each target's job, and those it gave to
// jobs new to it, which have no targets yet; the group has n members.
func (js *jobLoads) number(targets []Target, n int) (nums, numbered []int32) {
	if js.index == nil {
		js.index = map[string]int32{}
	}
	nums = make([]int32, len(targets))
	last := int32(-1)
	for i, tg := range targets {
		if last < 0 || tg.Job != js.jobs[last].name {
			j, ok := js.index[tg.Job]
			if !ok {
				if k := len(js.free); k > 0 {
					j, js.free = js.free[k-1], js.free[:k-1]
				} else {
					j = int32(len(js.jobs))
					js.jobs = append(js.jobs, jobLoad{})
				}
				js.index[tg.Job] = j
				js.jobs[j] = jobLoad{name: tg.Job, load: make([]int32, n), atLeast: int32(n)}
				numbered = append(numbered, j)
			}
			last = j
		}
		nums[i] = last
	}
	return nums, numbered
}

// forget frees the numbers of those jobs that have no targets.
func (js *jobLoads) forget(jobs []int32) {
	for _, j := range jobs {
		js.release(j)
	}
}

// release frees the number of job j if it has no targets.
func (js *jobLoads) release(j int32) {
	if js.jobs[j].targets == 0 {
		delete(js.index, js.jobs[j].name)
		js.jobs[j] = jobLoad{}
		js.free = append(js.free, j)
	}
}

// drop uncounts a target of job j, which has no member (any more).
func (js *jobLoads) drop(j int32) {
	js.jobs[j].targets--
	js.release(j)
}

// gain counts a target of job j for member m.
func (js *jobLoads) gain(j, m int32) {
	jl := &js.jobs[j]
	jl.load[m]++
	if jl.load[m]-1 == jl.least {
		if jl.atLeast--; jl.atLeast == 0 {
			jl.recount()
		}
	}
}

// lose uncounts a target of job j for member m.
func (js *jobLoads) lose(j, m int32) {
	jl := &js.jobs[j]
	jl.load[m]--
	switch {
	case jl.load[m] < jl.least:
		jl.least, jl.atLeast = jl.load[m], 1
	case jl.load[m] == jl.least:
		jl.atLeast++
	}
}

// remap moves the counts to a new member set of n members: old2new as
// memberSet.remap returns it.
func (js *jobLoads) remap(old2new []int32, n int) {
	for j := range js.jobs {
		jl := &js.jobs[j]
		if jl.targets == 0 {
			continue
		}
		load := make([]int32, n)
		for i, c := range jl.load {
			if k := old2new[i]; k >= 0 {
				load[k] = c
			}
		}
		jl.load = load
		jl.recount()
	}
}

func (jl *jobLoad) recount() {
	jl.least, jl.atLeast = 0, 0
	if len(jl.load) == 0 {
		return
	}
	jl.least = slices.Min(jl.load)
	for _, c := range jl.load {
		if c == jl.least {
			jl.atLeast++
		}
	}
}

// remeasure does nothing: the strategy balances targets, not series.
func (x *leastWeighted) remeasure() {}
