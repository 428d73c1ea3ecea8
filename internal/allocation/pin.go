package allocation

import (
	"maps"
	"slices"
)

// pinning is the Allocator New returns: it places the pinned targets itself
// and hands the others to the strategy, with a budget (budget.go) of what
// the pins and the limit leave.
//
// A target pinned to a member goes to that member; one pinned to an
// identity that is no member goes to the strategy, as if it had no pin,
// until that identity joins. A member pinned more targets than the limit
// keeps those that score it highest, as rendezvous hashing scores them; the
// others stay unassigned. A member's pinned targets count in its load for
// the strategy's balance (not per-node's, which balances nothing), and the
// strategy gives a member at most the limit less its pinned targets.
//
// The pinned targets are few, as a rule: what it does per change is in
// proportion to them, and without them it adds nothing to the strategy's
// own work but a scan of the added targets for a pin.
type pinning struct {
	strategy strategyAllocator
	limit    int // 0: none
	// seriesLimit bounds each member's series load (0: none); seriesCut are
	// the targets beyond it, which no member holds.
	seriesLimit int64
	seriesCut   map[uint64]bool
	measured    *measurements
	members     memberSet
	pins        map[uint64]*pin // every pinned target, by hash
	budget      budget
	cut         []uint64 // pinned targets over their member's limit
	placed      int      // pinned targets on their member
	absent      int      // pinned targets whose Pin names no member

	// moved are the targets the last SetMembers may have moved, movedOK
	// whether the strategy follows them (MovedByMembers).
	moved   []uint64
	movedOK bool
}

type pin struct {
	target Target
	member int32 // the member Pin names, in members; -1 for none
	kept   bool  // on its member, within the limit
}

func newPinning(s strategyAllocator, limit int, seriesLimit int64, ms *measurements) *pinning {
	w := &pinning{strategy: s, limit: limit, seriesLimit: seriesLimit, measured: ms, pins: map[uint64]*pin{}}
	w.budget.seriesLimit = seriesLimit
	s.setBudget(&w.budget)
	return w
}

func (w *pinning) Measure(measurements []Measurement) {
	w.measured.set(measurements)
	w.place()
	w.strategy.remeasure()
	w.limitSeries()
}

// limitSeries finds the targets beyond each member's series limit: a member
// keeps those that score it highest while they fit.
// seriesLimitMargin sets the room a target cut for max_series_per_collector
// needs to come back: 1/20 of the limit (5 %).
const seriesLimitMargin = 20

func (w *pinning) limitSeries() {
	wasCut := w.seriesCut
	w.seriesCut = nil
	if w.seriesLimit == 0 {
		return
	}
	// A target cut before comes back only when it fits with room to spare,
	// so that measurements that wobble around the limit do not cut and
	// restore it at every report.
	restoreBelow := w.seriesLimit - w.seriesLimit/seriesLimitMargin
	for name, hashes := range w.assignment() {
		var sum int64
		anyCut := false
		for _, h := range hashes {
			sum += w.measured.weight(h)
			anyCut = anyCut || wasCut[h]
		}
		if sum <= w.seriesLimit && (!anyCut || sum <= restoreBelow) {
			continue
		}
		seed := w.members.seeds[w.members.index[name]]
		score := func(h uint64) candidate { return candidate{mix(mix(h) ^ seed), h, 0} }
		slices.SortFunc(hashes, func(a, b uint64) int {
			if weaker(score(b), score(a)) {
				return -1
			}
			return 1
		})
		sum = 0
		for _, h := range hashes {
			limit := w.seriesLimit
			if wasCut[h] {
				limit = restoreBelow
			}
			if x := w.measured.weight(h); sum+x <= limit {
				sum += x
				continue
			}
			if w.seriesCut == nil {
				w.seriesCut = map[uint64]bool{}
			}
			w.seriesCut[h] = true
		}
	}
}

func (w *pinning) Weight(hash uint64) int64 { return w.measured.weight(hash) }

func (w *pinning) SeriesLoads() map[string]int64 {
	out := make(map[string]int64, w.members.len())
	for name, hashes := range w.Assignment() {
		var sum int64
		for _, h := range hashes {
			sum += w.measured.weight(h)
		}
		out[name] = sum
	}
	return out
}

func (w *pinning) Strategy() string { return w.strategy.Strategy() }

func (w *pinning) SetMembers(members []Member) error {
	w.moved, w.movedOK = w.moved[:0], false
	next, err := newMemberSet(members)
	if err != nil {
		return err
	}
	var toStrategy []Target
	var fromStrategy []uint64
	for h, p := range w.pins {
		m, ok := next.index[p.target.Pin]
		if !ok {
			m = -1
		}
		switch {
		case p.member < 0 && m >= 0:
			fromStrategy = append(fromStrategy, h)
		case p.member >= 0 && m < 0:
			toStrategy = append(toStrategy, p.target)
		}
		p.member = m
	}
	w.members = next
	w.place()
	if err := w.strategy.SetMembers(members); err != nil {
		return err // cannot happen: newMemberSet accepted them
	}
	if mm, ok := w.strategy.(membersMover); ok {
		w.moved, w.movedOK = append(w.moved, mm.movedByMembers()...), true
		for h := range w.pins { // place may have kept or cut any of them
			w.moved = append(w.moved, h)
		}
	}
	if len(toStrategy) > 0 || len(fromStrategy) > 0 {
		// What an Update moves: its targets, and Displaced before and after.
		w.moved = append(w.moved, w.strategy.Displaced()...)
		w.strategy.Update(toStrategy, fromStrategy)
		w.moved = append(w.moved, w.strategy.Displaced()...)
	}
	wasCut := w.seriesCut
	w.limitSeries()
	if w.movedOK {
		// The series limit cuts or restores targets of members whose load
		// changed: those are moved too.
		for h := range wasCut {
			if !w.seriesCut[h] {
				w.moved = append(w.moved, h)
			}
		}
		for h := range w.seriesCut {
			if !wasCut[h] {
				w.moved = append(w.moved, h)
			}
		}
	}
	return nil
}

func (w *pinning) MovedByMembers() ([]uint64, bool) {
	if !w.movedOK {
		return nil, false
	}
	return w.moved, true
}

func (w *pinning) SetTargets(targets []Target) {
	w.moved, w.movedOK = w.moved[:0], false
	pinned, others := split(targets)
	defer w.limitSeries()
	if len(pinned) == 0 && len(w.pins) == 0 {
		w.strategy.SetTargets(targets)
		return
	}
	w.pins = make(map[uint64]*pin, len(pinned))
	for h, t := range pinned {
		p := w.newPin(t)
		w.pins[h] = p
		if p.member < 0 {
			others = append(others, t)
		}
	}
	w.place()
	w.strategy.SetTargets(others)
}

func (w *pinning) Update(added []Target, removed []uint64) {
	w.moved, w.movedOK = w.moved[:0], false
	pinned, others := split(added)
	defer w.limitSeries()
	if len(pinned) == 0 && len(w.pins) == 0 {
		w.strategy.Update(added, removed)
		return
	}
	var fromStrategy []uint64
	for _, h := range removed {
		if p, ok := w.pins[h]; ok {
			delete(w.pins, h)
			if p.member >= 0 {
				continue
			}
		}
		fromStrategy = append(fromStrategy, h)
	}
	toStrategy := make([]Target, 0, len(others))
	for _, t := range others {
		if _, known := w.pins[t.Hash]; !known {
			toStrategy = append(toStrategy, t)
		}
	}
	var gone map[uint64]bool // removed from the strategy: unknown once removed
	if len(pinned) > 0 {
		gone = make(map[uint64]bool, len(fromStrategy))
		for _, h := range fromStrategy {
			gone[h] = true
		}
	}
	for h, t := range pinned {
		if _, known := w.pins[h]; known || w.strategy.has(h) && !gone[h] {
			continue
		}
		p := w.newPin(t)
		w.pins[h] = p
		if p.member < 0 {
			toStrategy = append(toStrategy, t)
		}
	}
	w.place()
	w.strategy.Update(toStrategy, fromStrategy)
}

// split parts targets into the pinned ones, by hash, and the others; of
// several targets with one hash it keeps the first, pinned or not.
func split(targets []Target) (pinned map[uint64]Target, others []Target) {
	if !slices.ContainsFunc(targets, func(t Target) bool { return t.Pin != "" }) {
		return nil, targets
	}
	first := map[uint64]int{} // a pinned hash: the position of its first target
	for i, t := range targets {
		if _, seen := first[t.Hash]; t.Pin != "" && !seen {
			first[t.Hash] = i
		}
	}
	others = make([]Target, 0, len(targets)-len(first))
	for i, t := range targets {
		if t.Pin != "" {
			continue
		}
		if j, ok := first[t.Hash]; ok {
			if j < i {
				continue // pinned first
			}
			delete(first, t.Hash)
		}
		others = append(others, t)
	}
	pinned = make(map[uint64]Target, len(first))
	for h, i := range first {
		pinned[h] = targets[i]
	}
	return pinned, others
}

func (w *pinning) newPin(t Target) *pin {
	m, ok := w.members.index[t.Pin]
	if !ok {
		m = -1
	}
	return &pin{target: t, member: m}
}

// place decides which pinned targets their members keep, and sets the
// strategy's budget.
func (w *pinning) place() {
	n := w.members.len()
	w.cut, w.placed, w.absent = w.cut[:0], 0, 0
	var fixed []int
	if len(w.pins) > 0 {
		on := make([][]*pin, n)
		for _, p := range w.pins {
			if p.member < 0 {
				w.absent++
			} else {
				on[p.member] = append(on[p.member], p)
			}
		}
		fixed = make([]int, n)
		for m, ps := range on {
			for _, p := range ps {
				p.kept = true
			}
			if w.limit > 0 && len(ps) > w.limit {
				seed := w.members.seeds[m]
				score := func(p *pin) candidate { return candidate{mix(mix(p.target.Hash) ^ seed), p.target.Hash, 0} }
				slices.SortFunc(ps, func(a, b *pin) int {
					if weaker(score(b), score(a)) {
						return -1
					}
					return 1
				})
				for _, p := range ps[w.limit:] {
					p.kept = false
					w.cut = append(w.cut, p.target.Hash)
				}
				ps = ps[:w.limit]
			}
			fixed[m] = len(ps)
			w.placed += len(ps)
		}
	}
	w.budget.fixed, w.budget.fixedSeries = nil, nil
	if w.placed > 0 {
		w.budget.fixed = fixed
		w.budget.fixedSeries = make([]int64, n)
		for _, p := range w.pins {
			if p.member >= 0 && p.kept {
				w.budget.fixedSeries[p.member] += w.measured.weight(p.target.Hash)
			}
		}
	}
	w.budget.room = nil
	if w.limit > 0 {
		w.budget.room = make([]int, n)
		for m := range n {
			w.budget.room[m] = w.limit - w.budget.fixedOf(m)
		}
	}
}

func (w *pinning) MemberOf(hash uint64) (string, bool) {
	if w.seriesCut[hash] {
		return "", false
	}
	if p, ok := w.pins[hash]; ok && p.member >= 0 {
		if !p.kept {
			return "", false
		}
		return w.members.names[p.member], true
	}
	return w.strategy.MemberOf(hash)
}

func (w *pinning) Assignment() map[string][]uint64 {
	out := w.assignment()
	if len(w.seriesCut) > 0 {
		for name, hashes := range out {
			out[name] = slices.DeleteFunc(hashes, func(h uint64) bool { return w.seriesCut[h] })
		}
	}
	return out
}

// assignment is Assignment before the series limit.
func (w *pinning) assignment() map[string][]uint64 {
	out := w.strategy.Assignment()
	for h, p := range w.pins {
		if p.member >= 0 && p.kept {
			name := w.members.names[p.member]
			out[name] = append(out[name], h)
		}
	}
	return out
}

func (w *pinning) Unassigned() []uint64 {
	return append(append(w.strategy.Unassigned(), w.cut...), w.seriesCutList()...)
}

func (w *pinning) Displaced() []uint64 {
	return append(append(w.strategy.Displaced(), w.cut...), w.seriesCutList()...)
}

func (w *pinning) seriesCutList() []uint64 {
	if len(w.seriesCut) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(w.seriesCut))
}

func (w *pinning) Counts() Counts {
	c := Counts{OverLimit: len(w.cut) + len(w.seriesCut) + w.strategy.overLimit(), Pinned: w.placed}
	if w.members.len() > 0 {
		c.PinnedToNonMember = w.absent
	}
	return c
}
