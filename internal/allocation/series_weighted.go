package allocation

import (
	"cmp"
	"slices"
)

// series-weighted balances the members' series load: the sum, over a
// member's targets, of each target's weight, the series per scrape its
// member measured (Measure), or, for a target not measured yet, the average
// of the measured ones (1 while none is): a member that reports nothing
// leaves its targets weighing as much as a typical one, not nothing.
//
// It keeps each member's load within 0.9 to 1.1 times the average where the
// targets allow it, and moves as little as it can:
//
//  1. Placing. A target without a member goes to the member that reports
//     scraping it (a new leader learns the previous assignment this way,
//     and keeps it); else, if it is measured (its member left), to the
//     member with the least load; else to its consistent-hashing home, its
//     first rendezvous choice.
//  2. Targets of their own. A target heavier than the average of the others
//     over the other members gets a member of its own: it stays on its
//     member, unless that member is another's already (then it goes to the
//     least loaded member), and the member's other targets leave it. The
//     members holding none of them are the regular ones, whose average the
//     band is taken around.
//  3. Hysteresis. Nothing moves while every regular member's load is within
//     0.9 to 1.1 times the average. A member that leaves that band is
//     brought back into it by a margin, h = hysteresisPercent: to within
//     0.9 + h to 1.1 − h. A member's measurements must then change by that
//     margin before it leaves the band again: series counts that wobble
//     move nothing.
//  4. Fewest moves. A member above the band gives, while it is above 1.1 − h
//     times the average, its heaviest target that the least loaded member
//     can take without going above 1.1 − h, nor itself below 0.9 + h, times
//     the average; a member below the band takes, while it is below 0.9 + h,
//     the heaviest target that the most loaded member can give in the same
//     way. Heaviest first restores the band in the fewest moves the greedy
//     knows; on a join, the newcomer takes between 0.9 + h and 1.1 − h times
//     its ideal share, and nobody else leaves the band unless someone was at
//     its edge. Where no target fits within the margin, one that fits
//     within the band will do; where none fits at all (a member holds two
//     targets near the average), the giver hands the lightest target above
//     half the gap to the least loaded member, which gives lighter ones on
//     in turn: a few such swaps, at most one a member, per change.
//
// Every choice is made in a fixed order (load, then member name; weight,
// then hash), with integer arithmetic: two processes given the same members,
// targets, measurements and previous assignment compute the same answer.
// Unlike consistent-hashing, the answer depends on the previous assignment,
// which is what keeps it stable.
//
// Within a budget (budget.go), pinned targets count in their member's load
// (budget.fixedSeries), a member takes no target beyond its room, and none
// that would take its load beyond the series limit: a target no member can
// take stays unassigned and is counted.
//
// Cost: a change that leaves every member within the trigger costs a pass
// over the targets; one that does not adds a sort of the targets by weight
// and, per move, a scan of the members and a binary search.
type seriesWeighted struct {
	members  memberSet
	budget   *budget
	measured *measurements
	t        table[swSlot]
	moved    []uint64 // targets whose member the last change set
	dropped  int      // targets left unassigned: no member can take them
}

type swSlot struct {
	hash   uint64
	member int32 // -1: none
	// adopted is set once the target's reported member has been considered:
	// a report places a target only the first time.
	adopted bool
}

func (s swSlot) key() uint64 { return s.hash }

// hysteresisPercent is how far inside the band, in percent of the
// average, a member that left it is brought back.
const hysteresisPercent = 3

// SeriesWeighted is the strategy name of series-weighted.
const SeriesWeighted = "series-weighted"

func newSeriesWeighted(m *measurements) *seriesWeighted {
	return &seriesWeighted{budget: &budget{}, measured: m}
}

func (w *seriesWeighted) Strategy() string { return SeriesWeighted }

func (w *seriesWeighted) setBudget(b *budget) { w.budget = b }

func (w *seriesWeighted) has(hash uint64) bool { _, ok := w.t.lookup(hash); return ok }

func (w *seriesWeighted) overLimit() int {
	if w.members.len() == 0 {
		return 0
	}
	return w.dropped
}

func (w *seriesWeighted) SetMembers(members []Member) error {
	next, err := newMemberSet(members)
	if err != nil {
		return err
	}
	w.moved = w.moved[:0]
	if !slices.Equal(w.members.names, next.names) {
		old2new, _ := w.members.remap(next)
		for i := range w.t.slots {
			s := &w.t.slots[i]
			if s.member >= 0 {
				s.member = old2new[s.member]
				if s.member < 0 {
					w.moved = append(w.moved, s.hash)
				}
			}
		}
	}
	w.members = next
	w.rebalance()
	return nil
}

func (w *seriesWeighted) SetTargets(targets []Target) { w.Update(w.t.diff(targets)) }

func (w *seriesWeighted) Update(added []Target, removed []uint64) {
	w.moved = w.moved[:0]
	for _, h := range removed {
		w.t.remove(h)
	}
	w.t.addAll(added, false, func(h uint64, _ int32) swSlot { return swSlot{hash: h, member: -1} })
	w.rebalance()
}

// remeasure takes new measurements into account: a target not placed by a
// report yet goes to the member that reports it.
func (w *seriesWeighted) remeasure() {
	w.moved = w.moved[:0]
	for i := range w.t.slots {
		s := &w.t.slots[i]
		if s.adopted {
			continue
		}
		if m, ok := w.measured.byHash[s.hash]; ok {
			s.adopted = true
			if j, ok := w.members.index[m.member]; ok && j != s.member {
				w.set(int32(i), j)
			}
		}
	}
	w.rebalance()
}

// set gives slot i to member m and notes the move.
func (w *seriesWeighted) set(i, m int32) {
	s := &w.t.slots[i]
	if s.member != m {
		s.member = m
		w.moved = append(w.moved, s.hash)
	}
}

func (w *seriesWeighted) MemberOf(hash uint64) (string, bool) {
	i, ok := w.t.lookup(hash)
	if !ok || w.t.slots[i].member < 0 {
		return "", false
	}
	return w.members.names[w.t.slots[i].member], true
}

func (w *seriesWeighted) Assignment() map[string][]uint64 {
	return w.members.assignment(len(w.t.slots), func(i int) (uint64, int32) {
		return w.t.slots[i].hash, w.t.slots[i].member
	})
}

func (w *seriesWeighted) Unassigned() []uint64 {
	var out []uint64
	for _, s := range w.t.slots {
		if s.member < 0 {
			out = append(out, s.hash)
		}
	}
	return out
}

// Displaced returns the targets whose member the last change set: the
// greedy may move any target, and those are all it moved.
func (w *seriesWeighted) Displaced() []uint64 {
	out := slices.Clone(w.moved)
	slices.Sort(out)
	return slices.Compact(out)
}

// home returns the first rendezvous choice of the target with mixed hash k.
func (w *seriesWeighted) home(k uint64) int32 {
	seeds := w.members.seeds
	best, bi := mix(k^seeds[0]), 0
	for j := 1; j < len(seeds); j++ {
		if v := mix(k ^ seeds[j]); v > best {
			best, bi = v, j
		}
	}
	return int32(bi)
}

// swRun is one rebalance's working state.
type swRun struct {
	w       *seriesWeighted
	weight  []int64 // per slot
	load    []int64 // per member, pinned targets included
	count   []int   // per member, pinned targets included
	regular []bool  // per member: holds no target of its own
	// total and k are the load and number of the regular members, the
	// average being total/k.
	total int64
	k     int64
}

func (w *seriesWeighted) rebalance() {
	w.dropped = 0
	n := w.members.len()
	if n == 0 {
		for i := range w.t.slots {
			w.set(int32(i), -1)
		}
		return
	}
	r := &swRun{
		w:       w,
		weight:  make([]int64, len(w.t.slots)),
		load:    make([]int64, n),
		count:   make([]int, n),
		regular: make([]bool, n),
	}
	var all int64
	for m := range n {
		r.load[m] = w.budget.fixedSeriesOf(m)
		r.count[m] = w.budget.fixedOf(m)
		r.regular[m] = true
		all += r.load[m]
	}
	// 1. Placing.
	var pool []int32
	for i := range w.t.slots {
		s := &w.t.slots[i]
		r.weight[i] = w.measured.weight(s.hash)
		all += r.weight[i]
		if s.member < 0 {
			m, measured := w.measured.byHash[s.hash]
			switch j, held := w.members.index[m.member]; {
			case measured && held && !s.adopted:
				w.set(int32(i), j)
			case measured:
				pool = append(pool, int32(i))
				continue
			default:
				w.set(int32(i), w.home(mix(s.hash)))
			}
			if measured {
				s.adopted = true
			}
		}
		r.load[s.member] += r.weight[i]
		r.count[s.member]++
	}
	// 2. Targets of their own.
	pool = append(pool, r.ownMembers(all)...)
	for m := range n {
		if r.regular[m] {
			r.total += r.load[m]
			r.k++
		}
	}
	for _, i := range pool {
		r.total += r.weight[i]
	}
	// Room: a member over its room gives up its lightest targets, one over
	// the series limit the targets that best bring it under.
	if w.budget.room != nil {
		pool = append(pool, r.overRoom()...)
	}
	if w.budget.seriesLimit > 0 {
		pool = append(pool, r.overSeriesLimit()...)
	}
	r.place(pool)
	// 3 and 4.
	r.restore()
}

// ownMembers gives each target heavier than the average of the others a
// member of its own, and returns the other targets those members held.
func (r *swRun) ownMembers(all int64) (evicted []int32) {
	w, n := r.w, int64(r.w.members.len())
	rest, k := all, n
	var own []int32 // targets of their own, heaviest first
	taken := map[int32]bool{}
	for k > 1 {
		// The heaviest target above the average of the rest.
		best := int32(-1)
		for i, s := range w.t.slots {
			if s.member < 0 || taken[int32(i)] || r.weight[i]*k <= rest {
				continue
			}
			if best < 0 || heavier(r, int32(i), best) {
				best = int32(i)
			}
		}
		if best < 0 {
			break
		}
		taken[best] = true
		own = append(own, best)
		rest -= r.weight[best]
		k--
	}
	for _, i := range own {
		m := w.t.slots[i].member
		if !r.regular[m] {
			m = r.leastLoaded(-1, func(int32) bool { return true })
		}
		r.move(i, m)
		r.regular[m] = false
	}
	if len(own) == 0 {
		return nil
	}
	for i, s := range w.t.slots {
		if s.member >= 0 && !r.regular[s.member] && !taken[int32(i)] {
			r.unplace(int32(i))
			evicted = append(evicted, int32(i))
		}
	}
	return evicted
}

// heavier orders slots by weight, heaviest first, then by hash.
func heavier(r *swRun, a, b int32) bool {
	wa, wb := r.weight[a], r.weight[b]
	return wa > wb || wa == wb && r.w.t.slots[a].hash < r.w.t.slots[b].hash
}

// overRoom takes off each member beyond its room its lightest targets.
func (r *swRun) overRoom() (out []int32) {
	w := r.w
	byMember := r.byMember()
	for m, list := range byMember {
		for j := 0; r.count[m] > w.budget.capOf(m) && j < len(list); j++ {
			r.unplace(list[j])
			out = append(out, list[j])
		}
	}
	return out
}

// overSeriesLimit takes off each member above the series limit, while it
// is, the lightest target that brings it under, or its heaviest.
func (r *swRun) overSeriesLimit() (out []int32) {
	limit := r.w.budget.seriesLimit
	for m, list := range r.byMember() {
		for r.load[m] > limit && len(list) > 0 {
			excess := r.load[m] - limit
			j, _ := slices.BinarySearchFunc(list, excess, func(i int32, x int64) int { return cmp.Compare(r.weight[i], x) })
			j = min(j, len(list)-1)
			i := list[j]
			list = slices.Delete(list, j, j+1)
			r.unplace(i)
			out = append(out, i)
		}
	}
	return out
}

// fits reports whether member m may take a target of weight x.
func (r *swRun) fits(m int32, x int64) bool {
	b := r.w.budget
	if r.count[m] >= b.capOf(int(m)) {
		return false
	}
	return b.seriesLimit == 0 || r.load[m]+x <= b.seriesLimit
}

// leastLoaded returns the regular member other than not with the least load
// that ok accepts, ties to the smaller name; -1 for none.
func (r *swRun) leastLoaded(not int32, ok func(m int32) bool) int32 {
	return r.leastLoadedOf(not, true, ok)
}

// leastLoadedOf is leastLoaded among the regular members, or all of them.
func (r *swRun) leastLoadedOf(not int32, regular bool, ok func(m int32) bool) int32 {
	best := int32(-1)
	for m := range int32(len(r.load)) {
		if m == not || regular && !r.regular[m] || !ok(m) {
			continue
		}
		if best < 0 || r.load[m] < r.load[best] {
			best = m
		}
	}
	return best
}

func (r *swRun) move(i, m int32) {
	s := &r.w.t.slots[i]
	if s.member >= 0 {
		r.load[s.member] -= r.weight[i]
		r.count[s.member]--
	}
	r.w.set(i, m)
	if m >= 0 {
		r.load[m] += r.weight[i]
		r.count[m]++
	}
}

func (r *swRun) unplace(i int32) { r.move(i, -1) }

// place gives the pool's targets, heaviest first, each to the least loaded
// regular member that can take it, or, if none can, to the least loaded
// member that can: a target of its own does not keep a target unassigned.
func (r *swRun) place(pool []int32) {
	slices.SortFunc(pool, func(a, b int32) int {
		if heavier(r, a, b) {
			return -1
		}
		if a == b {
			return 0
		}
		return 1
	})
	for _, i := range pool {
		fits := func(m int32) bool { return r.fits(m, r.weight[i]) }
		m := r.leastLoaded(-1, fits)
		if m < 0 {
			m = r.leastLoadedOf(-1, false, fits)
		}
		if m < 0 {
			r.w.t.slots[i].member = -1
			r.w.dropped++
			continue
		}
		r.move(i, m)
	}
}

// byMember returns each member's targets, lightest first (ties by hash).
func (r *swRun) byMember() [][]int32 {
	out := make([][]int32, len(r.load))
	for i, s := range r.w.t.slots {
		if s.member >= 0 {
			out[s.member] = append(out[s.member], int32(i))
		}
	}
	for _, list := range out {
		slices.SortFunc(list, r.lighter)
	}
	return out
}

func (r *swRun) lighter(a, b int32) int {
	if c := cmp.Compare(r.weight[a], r.weight[b]); c != 0 {
		return c
	}
	return cmp.Compare(r.w.t.slots[a].hash, r.w.t.slots[b].hash)
}

// bound returns the load at pct percent of the regular members' average:
// rounded down, or up with ceil.
func (r *swRun) bound(pct int64, ceil bool) int64 {
	p, q := r.total*pct, 100*r.k
	if ceil {
		return (p + q - 1) / q
	}
	return p / q
}

// restore brings the regular members that left the band (loT to hiT) back
// into it, and by the hysteresis beyond its edge (lo to hi).
func (r *swRun) restore() {
	if r.k == 0 || r.total == 0 {
		return
	}
	lo, hi := r.bound(minLoadPercent+hysteresisPercent, true), r.bound(maxLoadPercent-hysteresisPercent, false)
	loT, hiT := r.bound(minLoadPercent, true), r.bound(maxLoadPercent, false)
	outside := func() (over, under []int32) {
		for m := range int32(len(r.load)) {
			switch {
			case !r.regular[m]:
			case r.load[m] > hiT:
				over = append(over, m)
			case r.load[m] < loT:
				under = append(under, m)
			}
		}
		return over, under
	}
	over, under := outside()
	if len(over) == 0 && len(under) == 0 {
		return
	}
	lists := r.byMember()
	// take moves the heaviest target of d's that weighs at most limit to m.
	take := func(d, m int32, limit int64) bool {
		if !r.fits(m, 0) {
			return false
		}
		list := lists[d]
		j, _ := slices.BinarySearchFunc(list, limit, func(i int32, x int64) int {
			if r.weight[i] <= x {
				return -1
			}
			return 1
		})
		for ; j > 0; j-- {
			i := list[j-1]
			if r.weight[i] == 0 {
				return false // moving it restores nothing
			}
			if !r.fits(m, r.weight[i]) {
				continue
			}
			lists[d] = slices.Delete(list, j-1, j)
			at, _ := slices.BinarySearchFunc(lists[m], i, r.lighter)
			lists[m] = slices.Insert(lists[m], at, i)
			r.move(i, m)
			return true
		}
		return false
	}
	byLoad := func(ms []int32, desc bool) {
		slices.SortFunc(ms, func(a, b int32) int {
			c := cmp.Compare(r.load[a], r.load[b])
			if desc {
				c = -c
			}
			if c == 0 {
				c = cmp.Compare(a, b)
			}
			return c
		})
	}
	// Each move keeps the giver and the taker within the band and its
	// margin if some target can, else within the band.
	bands := [2][2]int64{{lo, hi}, {loT, hiT}}
	others := func(not int32, desc bool) []int32 {
		var out []int32
		for m := range int32(len(r.load)) {
			if m != not && r.regular[m] {
				out = append(out, m)
			}
		}
		byLoad(out, desc)
		return out
	}
	shift := func(d int32, ms []int32, giving bool) bool {
		for _, b := range bands {
			for _, m := range ms {
				from, to := d, m
				if !giving {
					from, to = m, d
				}
				if take(from, to, min(b[1]-r.load[to], r.load[from]-b[0])) {
					return true
				}
			}
		}
		return false
	}
	// Every move but the swaps lowers the sum of the squares of the loads
	// (the giver is above the taker by more than the target weighs), and
	// the swaps are few, so this ends.
	swaps := len(r.load)
	for {
		byLoad(over, true)
		for _, d := range over {
			for r.load[d] > hi && shift(d, others(d, false), true) {
			}
		}
		byLoad(under, false)
		for _, m := range under {
			for r.load[m] < lo && shift(m, others(m, true), false) {
			}
		}
		if over, under = outside(); len(over) == 0 && len(under) == 0 {
			return
		}
		// No target fits without taking its taker out of the band: move
		// the one that evens out the most loaded and the least loaded
		// member best, if that helps, and let the taker give in turn.
		byLoad(over, true)
		byLoad(under, false)
		var d, m int32
		switch {
		case len(over) > 0:
			d = over[0]
			m = others(d, false)[0]
		default:
			m = under[0]
			d = others(m, true)[0]
		}
		gap := r.load[d] - r.load[m]
		// The heaviest target below half the gap brings the two closest.
		if !take(d, m, min((gap-1)/2, r.load[d]-loT)) {
			// None: give the lightest target above it, and let the taker
			// give lighter ones in turn, a few times at most.
			if swaps == 0 || !r.fits(m, 0) {
				return
			}
			swaps--
			list := lists[d]
			j, _ := slices.BinarySearchFunc(list, (gap-1)/2, func(i int32, x int64) int {
				if r.weight[i] <= x {
					return -1
				}
				return 1
			})
			if j == len(list) || !r.fits(m, r.weight[list[j]]) {
				return
			}
			i := list[j]
			lists[d] = slices.Delete(list, j, j+1)
			at, _ := slices.BinarySearchFunc(lists[m], i, r.lighter)
			lists[m] = slices.Insert(lists[m], at, i)
			r.move(i, m)
		}
		over, under = outside()
	}
}

// measurements are what the members measured of their targets, shared by
// the Allocator and its strategy.
type measurements struct {
	byHash map[uint64]measurement
	avg    int64 // the weight of a target not measured: ≥ 1
}

type measurement struct {
	member string
	series int64
}

// weight returns the target's series per scrape, or the average of the
// measured targets' if it is not measured.
func (ms *measurements) weight(hash uint64) int64 {
	if m, ok := ms.byHash[hash]; ok {
		return m.series
	}
	return ms.avg
}

func (ms *measurements) set(list []Measurement) {
	ms.byHash = make(map[uint64]measurement, len(list))
	var sum int64
	for _, m := range list {
		series := max(m.Series, 0)
		if _, dup := ms.byHash[m.Hash]; dup {
			continue
		}
		ms.byHash[m.Hash] = measurement{member: m.Member, series: series}
		sum += series
	}
	ms.avg = 1
	if len(ms.byHash) > 0 {
		ms.avg = max(sum/int64(len(ms.byHash)), 1)
	}
}
