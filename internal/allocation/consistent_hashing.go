package allocation

import (
	"cmp"
	"slices"
)

// consistent-hashing is rendezvous hashing with bounded loads.
//
// Every target ranks the members by score(t, m) = mix(mix(t.Hash) ^ seed(m)),
// highest first, ties to the smaller name (rendezvous, or highest random
// weight, hashing). Its first choice is its home. Homes alone are as stable as
// an assignment can be: a target's home depends on nothing but its own hash and
// the member names, so other targets coming and going never move it; a member
// leaving moves only its own targets, each to its second choice; a member
// joining takes, from every other member alike, exactly the targets that rank
// it first, 1/(N+1) of them on average. Every member is each target's home
// with probability exactly 1/N, which a ring with virtual nodes only
// approaches.
//
// Homes are not balanced enough on their own: at 1000 targets a member the
// count per member is binomial with a deviation of 3 %, so among 100 members
// one is off by 10 % in about one group in six; with few targets a member,
// one member may get twice another's. Loads are therefore bounded to
// [lo, hi] = [ceil(0.9 avg), floor(1.1 avg)], widened to [floor(avg),
// ceil(avg)] where that is narrower, so that with few targets a member the
// members' loads are within one target of each other:
//
//  1. A member above hi keeps the hi targets that score it highest; the rest
//     move on to their next choice, which accepts them while it is below hi
//     and otherwise keeps the hi highest of what it holds and what is offered.
//     This is deferred acceptance with both sides ranking by the same score;
//     its result, the one stable matching, does not depend on the order in
//     which targets are offered.
//  2. Then each member below lo, in name order, takes the targets that score
//     it highest from members above lo until it reaches lo.
//
// The bounds hold on a member's whole load, whatever jobs its targets belong
// to: a job is spread as its targets' homes spread it, and only the load
// bounds move its targets. Balancing each job too would cost moves on every
// join and leave in proportion to the number of small jobs.
//
// The bounds are recomputed from the homes after every change, so the
// assignment stays a function of the member names and the target hashes: any
// process, and an incremental update, gives the same answer as a full
// computation. At 1000 targets a member and more the bounds bind rarely (at
// 10 000, never in practice), and only then do targets other than those a
// change concerns move: the few the bounds hold away from their home, and
// the few around the bound itself. With few targets a member they bind on
// most changes, and a join or a leave moves up to about two targets a member
// more than its ideal share (see TestConsistentHashingChurn).
//
// Placement limits (budget.go) enter the same computation: the members'
// pinned targets count in their loads, the bounds are taken around the level
// the loads would reach if they were even (budget.level), and no member gets
// more than its room. When the room of all members cannot hold all targets,
// those with the smallest mix(hash) stay unassigned (the same ones in every
// process) before the rest are placed.
//
// Cost: a full computation takes one score per target and member (about
// 1.7 ns each); a member joining, two scores per target; a member leaving,
// one score per member for each of its targets; an added target, one score
// per member. Rebalancing costs nothing while no bound binds.
type consistentHashing struct {
	members   memberSet
	budget    *budget
	t         table[chSlot]
	homeLoad  []int    // per member: targets whose home it is
	load      []int    // per member: targets it owns
	displaced []uint64 // hashes of the targets owned by a member not their home, or by none
	dropped   int      // targets left unassigned: the members' room cannot hold them
	moved     []uint64 // targets whose member the last SetMembers may have changed
}

type chSlot struct {
	hash   uint64
	home   int32 // first choice among the members; -1 without members
	member int32 // home, unless the bounds moved the target; -1: none
}

func (s chSlot) key() uint64 { return s.hash }

// Bounds on a member's load, in percent of the average.
const (
	maxLoadPercent = 110
	minLoadPercent = 90
)

func newConsistentHashing() *consistentHashing { return &consistentHashing{budget: &budget{}} }

func (c *consistentHashing) Strategy() string { return ConsistentHashing }

func (c *consistentHashing) setBudget(b *budget) { c.budget = b }

func (c *consistentHashing) has(hash uint64) bool { _, ok := c.t.lookup(hash); return ok }

func (c *consistentHashing) overLimit() int { return c.dropped }

// home returns the first choice, among the members, of the target whose mixed
// hash is k.
func (c *consistentHashing) home(k uint64) int32 {
	seeds := c.members.seeds
	if len(seeds) == 0 {
		return -1
	}
	best, bi := mix(k^seeds[0]), 0
	for j := 1; j < len(seeds); j++ {
		if v := mix(k ^ seeds[j]); v > best {
			best, bi = v, j
		}
	}
	return int32(bi)
}

func (c *consistentHashing) SetMembers(members []Member) error {
	next, err := newMemberSet(members)
	if err != nil {
		return err
	}
	c.moved = c.moved[:0]
	if slices.Equal(c.members.names, next.names) {
		c.members = next // only nodes changed, which this strategy ignores
		return nil
	}
	old2new, added := c.members.remap(next)
	c.members = next
	// A kept home stays first among the kept members, so only the newcomers
	// can beat it; that is cheaper than ranking everyone while they are few.
	incremental := len(added)+1 < next.len()
	c.homeLoad = make([]int, next.len())
	// What moved: the targets away from their home before (c.displaced) or
	// after (below), and those whose home changed, found where it is
	// computed; a target at its kept home costs nothing more.
	c.moved = append(c.moved, c.displaced...)
	for i := range c.t.slots {
		s := &c.t.slots[i]
		h := int32(-1)
		if s.home >= 0 {
			h = old2new[s.home]
		}
		switch kept := h; { // its home before, renumbered; -1 if it left or there was none
		case h < 0 || !incremental:
			if h = c.home(mix(s.hash)); h != kept || kept < 0 {
				c.moved = append(c.moved, s.hash)
			}
		case len(added) > 0:
			k := mix(s.hash)
			best := mix(k ^ next.seeds[h])
			for _, a := range added {
				if v := mix(k ^ next.seeds[a]); v > best || v == best && a < h {
					best, h = v, a
				}
			}
			if h != kept {
				c.moved = append(c.moved, s.hash)
			}
		}
		s.home, s.member = h, h
		if h >= 0 {
			c.homeLoad[h]++
		}
	}
	c.displaced = c.displaced[:0] // every member is its home again
	c.rebalance()
	// Of the targets at home before as after, only those the bounds keep
	// away from it moved.
	c.moved = append(c.moved, c.displaced...)
	return nil
}

func (c *consistentHashing) movedByMembers() []uint64 { return c.moved }

func (c *consistentHashing) SetTargets(targets []Target) {
	c.Update(c.t.diff(targets))
}

func (c *consistentHashing) Update(added []Target, removed []uint64) {
	for _, h := range removed {
		if s, ok := c.t.remove(h); ok && s.home >= 0 {
			c.homeLoad[s.home]--
		}
	}
	first := c.t.addAll(added, false, func(h uint64, _ int32) chSlot { return chSlot{hash: h} })
	fresh := c.t.slots[first:]
	eachPart(len(fresh), len(fresh)*len(c.members.seeds), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			h := c.home(mix(fresh[i].hash))
			fresh[i].home, fresh[i].member = h, h
		}
	})
	for _, s := range fresh {
		if s.home >= 0 {
			c.homeLoad[s.home]++
		}
	}
	c.rebalance()
}

func (c *consistentHashing) MemberOf(hash uint64) (string, bool) {
	i, ok := c.t.lookup(hash)
	if !ok || c.t.slots[i].member < 0 {
		return "", false
	}
	return c.members.names[c.t.slots[i].member], true
}

func (c *consistentHashing) Assignment() map[string][]uint64 {
	return c.members.assignment(len(c.t.slots), func(i int) (uint64, int32) {
		return c.t.slots[i].hash, c.t.slots[i].member
	})
}

func (c *consistentHashing) Displaced() []uint64 { return slices.Clone(c.displaced) }

func (c *consistentHashing) Unassigned() []uint64 {
	if c.members.len() > 0 && c.dropped == 0 {
		return nil
	}
	var out []uint64
	for _, s := range c.t.slots {
		if s.member < 0 {
			out = append(out, s.hash)
		}
	}
	return out
}

// loadBounds returns the least and the most targets a member may hold when
// the average is p/q: ±10 % of the average, but at least floor(avg) to
// ceil(avg), so that with few targets a member the loads are within one
// target of each other; so never none while the average is one or more.
func loadBounds(p, q int) (lo, hi int) {
	hi = max(p*maxLoadPercent/(100*q), (p+q-1)/q)
	lo = min((p*minLoadPercent+100*q-1)/(100*q), p/q)
	return lo, hi
}

// rebalance computes the members from the homes.
func (c *consistentHashing) rebalance() {
	for _, h := range c.displaced {
		if i, ok := c.t.lookup(h); ok {
			c.t.slots[i].member = c.t.slots[i].home
		}
	}
	c.displaced = c.displaced[:0]
	c.dropped = 0
	c.load = append(c.load[:0], c.homeLoad...)
	if len(c.load) == 0 || len(c.t.slots) == 0 {
		return
	}
	n := len(c.t.slots)
	var moved []int32
	if room := c.budget.totalRoom(); n > room {
		moved = c.drop(n-room, moved)
		n = room
	}
	low, high := c.budget.bounds(n, len(c.load))
	if exceeds(c.load, high) {
		moved = c.capLoads(high, moved)
	}
	if exceeds(low, c.load) {
		moved = c.raiseLoads(low, moved)
	}
	for _, i := range moved {
		if s := c.t.slots[i]; s.member != s.home {
			c.displaced = append(c.displaced, s.hash)
		}
	}
	slices.Sort(c.displaced)
	c.displaced = slices.Compact(c.displaced)
}

// exceeds reports whether a member's value in a is above its value in b.
func exceeds(a, b []int) bool {
	for m := range a {
		if a[m] > b[m] {
			return true
		}
	}
	return false
}

// drop leaves the k targets of the smallest mix(hash) without a member, and
// returns moved with their slots appended. It counts the keys by their top
// 16 bits and sorts only those of the bucket where the k-th falls.
func (c *consistentHashing) drop(k int, moved []int32) []int32 {
	count := make([]int, 1<<16)
	for _, s := range c.t.slots {
		count[mix(s.hash)>>48]++
	}
	edge, below := 0, 0
	for ; below+count[edge] < k; edge++ {
		below += count[edge]
	}
	var tied []keyed
	for i, s := range c.t.slots {
		key := mix(s.hash)
		if top := int(key >> 48); top < edge {
			moved = c.dropSlot(int32(i), moved)
		} else if top == edge {
			tied = append(tied, keyed{key, int32(i)})
		}
	}
	slices.SortFunc(tied, func(a, b keyed) int { return cmp.Compare(a.key, b.key) })
	for _, it := range tied[:k-below] {
		moved = c.dropSlot(it.i, moved)
	}
	c.dropped = k
	return moved
}

func (c *consistentHashing) dropSlot(i int32, moved []int32) []int32 {
	s := &c.t.slots[i]
	c.load[s.member]--
	s.member = -1
	return append(moved, i)
}

// capLoads brings every member m down to hi[m] by deferred acceptance, and
// returns moved with the slots whose member it set appended.
func (c *consistentHashing) capLoads(hi []int, moved []int32) []int32 {
	// A member's targets are ranked once it is full: those it owned at the
	// start, bucketed here by a counting sort, and those it accepted since.
	// Dropped targets have no member and take no part.
	start := make([]int32, len(c.load)+1)
	for _, s := range c.t.slots {
		if s.member >= 0 {
			start[s.member+1]++
		}
	}
	for m := range c.load {
		start[m+1] += start[m]
	}
	owned := make([]int32, len(c.t.slots))
	next := slices.Clone(start)
	for i, s := range c.t.slots {
		if s.member >= 0 {
			owned[next[s.member]] = int32(i)
			next[s.member]++
		}
	}
	accepted := make(map[int32][]int32)
	held := make(map[int32]*weakestFirst)
	holdings := func(m int32) *weakestFirst {
		if h, ok := held[m]; ok {
			return h
		}
		mine := owned[start[m]:start[m+1]]
		h := make(weakestFirst, 0, len(mine)+len(accepted[m])+1)
		seed := c.members.seeds[m]
		for _, i := range slices.Concat(mine, accepted[m]) {
			s := c.t.slots[i]
			h.push(candidate{mix(mix(s.hash) ^ seed), s.hash, i})
		}
		held[m] = &h
		delete(accepted, m)
		return &h
	}
	// An offer is a target looking for a member ranked below the one that
	// last turned it away.
	type offer struct {
		slot   int32
		after  int32
		scored uint64
	}
	var offers []offer
	for m := range int32(len(c.load)) {
		if c.load[m] <= hi[m] {
			continue
		}
		h := holdings(m)
		for c.load[m] > hi[m] {
			w := h.pop()
			c.t.slots[w.slot].member = -1
			c.load[m]--
			offers = append(offers, offer{w.slot, m, w.score})
		}
	}
	for len(offers) > 0 {
		o := offers[len(offers)-1]
		offers = offers[:len(offers)-1]
		s := &c.t.slots[o.slot]
		m, score := c.nextChoice(mix(s.hash), o.after, o.scored)
		me := candidate{score, s.hash, o.slot}
		if hi[m] == 0 {
			offers = append(offers, offer{o.slot, m, score}) // it holds nothing to compare
			continue
		}
		if c.load[m] < hi[m] {
			s.member = m
			c.load[m]++
			moved = append(moved, o.slot)
			if h, ok := held[m]; ok {
				h.push(me)
			} else {
				accepted[m] = append(accepted[m], o.slot)
			}
			continue
		}
		h := holdings(m)
		if w := h.top(); weaker(w, me) {
			h.replaceTop(me)
			s.member = m
			moved = append(moved, o.slot)
			c.t.slots[w.slot].member = -1
			offers = append(offers, offer{w.slot, m, w.score})
		} else {
			offers = append(offers, offer{o.slot, m, score})
		}
	}
	return moved
}

// nextChoice returns the member the target with mixed hash k ranks next after
// member after, which scored it scored, and its score.
func (c *consistentHashing) nextChoice(k uint64, after int32, scored uint64) (int32, uint64) {
	best, bi := uint64(0), int32(-1)
	for j, seed := range c.members.seeds {
		m := int32(j)
		v := mix(k ^ seed)
		if v > scored || v == scored && m <= after {
			continue // ranked before after, or after itself
		}
		if bi < 0 || v > best {
			best, bi = v, m
		}
	}
	if bi < 0 {
		panic("allocation: a target was turned away by every member, though their capacity covers all targets")
	}
	return bi, best
}

// raiseLoads brings every member m up to lo[m]: in name order, a member
// below its lo takes the targets that score it highest from members above
// theirs. It returns moved with the slots whose member it set appended.
func (c *consistentHashing) raiseLoads(lo []int, moved []int32) []int32 {
	for d := range int32(len(c.load)) {
		seed := c.members.seeds[d]
		for c.load[d] < lo[d] {
			// Gather the need best candidates; if members reaching their lo
			// rule some out, gather again: later ones score lower, so the
			// order of taking is the same as one target at a time.
			need := lo[d] - c.load[d]
			best := weakestFirst{}
			for i, s := range c.t.slots {
				if s.member < 0 || s.member == d || c.load[s.member] <= lo[s.member] {
					continue
				}
				cd := candidate{mix(mix(s.hash) ^ seed), s.hash, int32(i)}
				if len(best) < need {
					best.push(cd)
				} else if weaker(best.top(), cd) {
					best.replaceTop(cd)
				}
			}
			if len(best) == 0 {
				break // cannot happen: the sum of lo is at most the targets
			}
			slices.SortFunc(best, func(a, b candidate) int {
				switch {
				case a.slot == b.slot:
					return 0
				case weaker(b, a):
					return -1
				}
				return 1
			})
			for _, cd := range best {
				s := &c.t.slots[cd.slot]
				if c.load[d] >= lo[d] {
					break
				}
				if c.load[s.member] > lo[s.member] {
					c.load[s.member]--
					s.member = d
					c.load[d]++
					moved = append(moved, cd.slot)
				}
			}
		}
	}
	return moved
}

// candidate is a target as one member ranks it.
type candidate struct {
	score uint64
	hash  uint64
	slot  int32
}

// weaker reports whether a member ranks a below b: by score, then by hash.
func weaker(a, b candidate) bool {
	return a.score < b.score || a.score == b.score && a.hash > b.hash
}

// weakestFirst is a binary heap of candidates with the weakest on top.
type weakestFirst []candidate

func (h weakestFirst) top() candidate { return h[0] }

func (h *weakestFirst) push(c candidate) {
	*h = append(*h, c)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !weaker(s[i], s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *weakestFirst) pop() candidate {
	s := *h
	c := s[0]
	s[0] = s[len(s)-1]
	*h = s[:len(s)-1]
	h.down()
	return c
}

func (h *weakestFirst) replaceTop(c candidate) {
	(*h)[0] = c
	h.down()
}

func (h *weakestFirst) down() {
	s := *h
	for i := 0; ; {
		l := 2*i + 1
		if l >= len(s) {
			return
		}
		if r := l + 1; r < len(s) && weaker(s[r], s[l]) {
			l = r
		}
		if !weaker(s[l], s[i]) {
			return
		}
		s[i], s[l] = s[l], s[i]
		i = l
	}
}

// remeasure does nothing: the strategy balances targets, not series.
func (x *consistentHashing) remeasure() {}
