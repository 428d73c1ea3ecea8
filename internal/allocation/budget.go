package allocation

import (
	"cmp"
	"math"
	"slices"
)

// budget is what a strategy is told of the targets placed outside it, per
// member in the order of the members' names: fixed counts those that count
// toward the strategy's balance (the pinned ones), and room is how many
// targets the strategy may give each member before it reaches the limit.
// A nil fixed means none; a nil room, no limit.
//
// For series-weighted, fixedSeries is the series load of the fixed targets
// (nil: none) and seriesLimit the most series load a member may hold (0:
// no limit).
type budget struct {
	fixed       []int
	room        []int
	fixedSeries []int64
	seriesLimit int64
}

func (b *budget) fixedSeriesOf(m int) int64 {
	if b.fixedSeries == nil {
		return 0
	}
	return b.fixedSeries[m]
}

// capOf is the most targets member m may hold, fixed ones included.
func (b *budget) capOf(m int) int {
	if b.room == nil {
		return math.MaxInt
	}
	return b.room[m] + b.fixedOf(m)
}

func (b *budget) fixedOf(m int) int {
	if b.fixed == nil {
		return 0
	}
	return b.fixed[m]
}

func (b *budget) roomOf(m int) int {
	if b.room == nil {
		return math.MaxInt
	}
	return b.room[m]
}

// totalRoom is how many targets the members may take in all.
func (b *budget) totalRoom() int {
	if b.room == nil {
		return math.MaxInt
	}
	total := 0
	for _, r := range b.room {
		total += r
	}
	return total
}

// bounds returns the least and the most of n targets that each of the
// members may take: the load bounds (loadBounds) of each member's total,
// fixed targets included, around the level the totals reach when the n
// targets even them out as far as the fixed targets and the room let them
// (level), and never beyond the member's room. Without fixed targets or a
// limit, the level is the average. The sum of the least is at most n, that
// of the most at least n when n is within the room.
func (b *budget) bounds(n, members int) (low, high []int) {
	p, q := n, members
	if b.fixed != nil || b.room != nil {
		p, q = b.level(n, members)
	}
	lo, hi := loadBounds(p, q)
	low, high = make([]int, members), make([]int, members)
	for m := range members {
		f, r := b.fixedOf(m), b.roomOf(m)
		low[m] = min(max(lo-f, 0), r)
		high[m] = min(max(hi-f, 0), r)
	}
	return low, high
}

// level returns, as p/q, the level W that the members' totals reach when n
// targets are poured over them like water: member m stands at fixed[m] and
// holds at most room[m] of them, so that the sum over the members of
// clamp(W − fixed[m], 0, room[m]) is n. n must be within the room.
func (b *budget) level(n, members int) (p, q int) {
	if n == 0 || members == 0 {
		return 0, 1
	}
	// The sum grows by one per member standing below W and above its room.
	type edge struct{ at, slope int }
	edges := make([]edge, 0, 2*members)
	for m := range members {
		f := b.fixedOf(m)
		edges = append(edges, edge{f, 1})
		if b.room != nil {
			edges = append(edges, edge{f + b.room[m], -1})
		}
	}
	slices.SortFunc(edges, func(x, y edge) int { return cmp.Compare(x.at, y.at) })
	at, slope, poured := edges[0].at, 0, 0
	for _, e := range edges {
		if slope > 0 && poured+slope*(e.at-at) >= n {
			break
		}
		poured += slope * (e.at - at)
		at, slope = e.at, slope+e.slope
	}
	if slope == 0 {
		return at, 1 // n is all the room there is: the level is where it fills
	}
	return at*slope + n - poured, slope
}
