package allocation

import "slices"

// least-weighted gives each new target to the member with the fewest targets,
// ties to the smaller name, and never moves a target while it and its member
// stay. A leaving member's targets are given out the same way; a joining
// member starts empty and receives new targets (and leavers' ones) until it
// catches up. That is the Target Allocator's meaning of the name, and like
// there the assignment depends on the order of events: a new leader computing
// it afresh gets another one. Targets given out together go in the order of
// their mixed hash, so the order of a batch does not matter.
type leastWeighted struct {
	members memberSet
	t       table[lwSlot]
	load    []int
}

type lwSlot struct {
	hash   uint64
	member int32 // -1 while there is no member
}

func (s lwSlot) key() uint64 { return s.hash }

func newLeastWeighted() *leastWeighted { return &leastWeighted{} }

func (l *leastWeighted) Strategy() string { return LeastWeighted }

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
	var orphans []keyed
	for i := range l.t.slots {
		s := &l.t.slots[i]
		if s.member >= 0 {
			s.member = old2new[s.member]
		}
		if s.member >= 0 {
			l.load[s.member]++
		} else {
			orphans = append(orphans, keyed{mix(s.hash), int32(i)})
		}
	}
	l.give(byKey(orphans, 64))
	return nil
}

func (l *leastWeighted) SetTargets(targets []Target) {
	l.Update(l.t.diff(targets))
}

func (l *leastWeighted) Update(added []Target, removed []uint64) {
	for _, h := range removed {
		if s, ok := l.t.remove(h); ok && s.member >= 0 {
			l.load[s.member]--
		}
	}
	first := l.t.addAll(added, true, func(h uint64, _ int32) lwSlot { return lwSlot{hash: h, member: -1} })
	slots := make([]keyed, len(l.t.slots)-first)
	for i := range slots {
		slots[i].i = int32(first + i)
	}
	l.give(slots)
}

// give assigns the slots, in order, each to the member with the fewest targets.
func (l *leastWeighted) give(slots []keyed) {
	if l.members.len() == 0 || len(slots) == 0 {
		return
	}
	h := fewestFirst{load: l.load, members: make([]int32, l.members.len())}
	for i := range h.members {
		h.members[i] = int32(i)
	}
	for i := len(h.members)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
	for _, it := range slots {
		m := h.members[0]
		l.t.slots[it.i].member = m
		l.load[m]++
		h.down(0)
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

// Displaced is empty: an Update places its new targets and moves no other.
func (l *leastWeighted) Displaced() []uint64 { return nil }

func (l *leastWeighted) Unassigned() []uint64 {
	var out []uint64
	for _, s := range l.t.slots {
		if s.member < 0 {
			out = append(out, s.hash)
		}
	}
	return out
}

// fewestFirst is a binary heap of member indices with the fewest targets on
// top, ties to the smaller index (name).
type fewestFirst struct {
	load    []int
	members []int32
}

func (h fewestFirst) less(a, b int32) bool {
	return h.load[a] < h.load[b] || h.load[a] == h.load[b] && a < b
}

func (h fewestFirst) down(i int) {
	s := h.members
	for {
		l := 2*i + 1
		if l >= len(s) {
			return
		}
		if r := l + 1; r < len(s) && h.less(s[r], s[l]) {
			l = r
		}
		if !h.less(s[l], s[i]) {
			return
		}
		s[i], s[l] = s[l], s[i]
		i = l
	}
}
