package allocation

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// skewedWeights returns the series per scrape of n targets: heavy of them
// weigh 100 000, one in a hundred 5 000 to 20 000, the others 10 to 510.
func skewedWeights(targets []Target, heavy int, seed uint64) map[uint64]int64 {
	r := rand.New(rand.NewPCG(seed, 17))
	out := make(map[uint64]int64, len(targets))
	for i, tg := range targets {
		switch {
		case i < heavy:
			out[tg.Hash] = 100_000
		case i%100 == 0:
			out[tg.Hash] = 5_000 + r.Int64N(15_000)
		default:
			out[tg.Hash] = 10 + r.Int64N(500)
		}
	}
	return out
}

// reported is what the members would report: each target's weight, by the
// member that holds it now.
func reported(a Allocator, weights map[uint64]int64) []Measurement {
	out := make([]Measurement, 0, len(weights))
	for h, w := range weights {
		if m, ok := a.MemberOf(h); ok {
			out = append(out, Measurement{Hash: h, Member: m, Series: w})
		}
	}
	return out
}

// loads returns each member's load, by the test's own sum, and the
// members holding a target of their own: a single target heavier than the
// average of the others.
func loads(a Allocator, weights map[uint64]int64) (load map[string]int64, own map[string]bool) {
	load, own = map[string]int64{}, map[string]bool{}
	for m, hs := range a.Assignment() {
		for _, h := range hs {
			load[m] += weights[h]
		}
	}
	// Take out the heaviest single-target loads while they are above the
	// average of the rest.
	for {
		var total int64
		var k int64
		var heaviest string
		for m, l := range load {
			if own[m] {
				continue
			}
			total += l
			k++
			if len(a.Assignment()[m]) == 1 && (heaviest == "" || l > load[heaviest]) {
				heaviest = m
			}
		}
		if heaviest == "" || k < 2 || load[heaviest]*(k-1) <= total-load[heaviest] {
			return load, own
		}
		own[heaviest] = true
	}
}

// checkBand fails unless every member but those with a target of their own
// holds between lo% and hi% of their average load.
func checkBand(t *testing.T, a Allocator, weights map[uint64]int64, lo, hi int64) {
	t.Helper()
	load, own := loads(a, weights)
	var total, k int64
	for m, l := range load {
		if !own[m] {
			total += l
			k++
		}
	}
	for m, l := range load {
		if own[m] {
			continue
		}
		if l*100*k < total*lo || l*100*k > total*hi {
			t.Errorf("member %s holds %d series, %.3f of the average %d; want %d%% to %d%%",
				m, l, float64(l*k)/float64(total), total/k, lo, hi)
		}
	}
}

// movedLoad returns the series of the targets whose member differs between
// two snapshots of MemberOf.
func movedLoad(before, after map[uint64]string, weights map[uint64]int64) (series int64, targets int) {
	for h, m := range before {
		if after[h] != m {
			series += weights[h]
			targets++
		}
	}
	return series, targets
}

func memberMap(a Allocator, targets []Target) map[uint64]string {
	out := make(map[uint64]string, len(targets))
	for _, tg := range targets {
		out[tg.Hash], _ = a.MemberOf(tg.Hash)
	}
	return out
}

func newSW(t testing.TB, n, m int, opts ...Option) (Allocator, []Target) {
	t.Helper()
	a, err := New(SeriesWeighted, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetMembers(benchMembers(m)); err != nil {
		t.Fatal(err)
	}
	targets := testTargets(n, "sw")
	a.SetTargets(targets)
	return a, targets
}

func TestSeriesWeightedBalances(t *testing.T) {
	for _, tc := range []struct{ targets, members, heavy int }{
		{2000, 10, 0}, {2000, 10, 3}, {5000, 30, 5}, {300, 7, 0},
	} {
		t.Run(fmt.Sprintf("targets=%d/members=%d/heavy=%d", tc.targets, tc.members, tc.heavy), func(t *testing.T) {
			a, targets := newSW(t, tc.targets, tc.members)
			weights := skewedWeights(targets, tc.heavy, 1)
			a.Measure(reported(a, weights))
			checkBand(t, a, weights, minLoadPercent, maxLoadPercent)
			if got := len(a.Unassigned()); got != 0 {
				t.Errorf("%d targets unassigned, want none", got)
			}
			// SeriesLoads agrees with the test's own sums.
			load, _ := loads(a, weights)
			if got := a.SeriesLoads(); !maps.Equal(got, load) {
				t.Errorf("SeriesLoads = %v, want %v", got, load)
			}
		})
	}
}

// Before any measurement, targets weigh 1 each: the counts are balanced as
// consistent-hashing balances them, within 10 %, one target where few.
func TestSeriesWeightedUnmeasuredBalancesCounts(t *testing.T) {
	a, targets := newSW(t, 6, 3)
	for m, hs := range a.Assignment() {
		if len(hs) != 2 {
			t.Errorf("member %s holds %d of 6 targets over 3 members, want 2", m, len(hs))
		}
	}
	ones := map[uint64]int64{}
	for _, tg := range targets {
		ones[tg.Hash] = 1
	}
	b, targets := newSW(t, 3000, 10)
	for _, tg := range targets {
		ones[tg.Hash] = 1
	}
	checkBand(t, b, ones, minLoadPercent, maxLoadPercent)
}

// A target heavier than the average of the others gets a member of its own.
func TestSeriesWeightedTargetOfItsOwn(t *testing.T) {
	a, targets := newSW(t, 1000, 10)
	weights := skewedWeights(targets, 0, 2)
	giant := targets[500].Hash
	weights[giant] = 2_000_000
	a.Measure(reported(a, weights))
	m, _ := a.MemberOf(giant)
	if hs := a.Assignment()[m]; len(hs) != 1 {
		t.Errorf("the member of the giant target holds %d targets, want 1", len(hs))
	}
	checkBand(t, a, weights, minLoadPercent, maxLoadPercent)
}

// Measurements that wobble by up to 2 % move nothing; a member's load moves
// only when it leaves the band by the hysteresis.
func TestSeriesWeightedHysteresis(t *testing.T) {
	a, targets := newSW(t, 5000, 20)
	weights := skewedWeights(targets, 3, 3)
	a.Measure(reported(a, weights))
	before := memberMap(a, targets)
	r := rand.New(rand.NewPCG(4, 4))
	for round := range 20 {
		wobbled := make(map[uint64]int64, len(weights))
		for h, w := range weights {
			wobbled[h] = w + w*(r.Int64N(41)-20)/1000
		}
		a.Measure(reported(a, wobbled))
		if series, n := movedLoad(before, memberMap(a, targets), wobbled); n > 0 {
			t.Fatalf("round %d: wobbling measurements moved %d targets (%d series)", round, n, series)
		}
	}
	// One member's targets grow by half: it leaves the band, and only then
	// do targets move, until it is back.
	victim := before[targets[0].Hash]
	for h, m := range before {
		if m == victim {
			weights[h] += weights[h] / 2
		}
	}
	a.Measure(reported(a, weights))
	if _, n := movedLoad(before, memberMap(a, targets), weights); n == 0 {
		t.Error("a member 50 % above the band moved nothing")
	}
	checkBand(t, a, weights, minLoadPercent, maxLoadPercent)
}

// A join moves at most 1.3 times the newcomer's ideal share of load, a
// leave little more than the leaver's load, and both end in the band.
func TestSeriesWeightedChurn(t *testing.T) {
	const n, m = 5000, 20
	a, targets := newSW(t, n, m)
	weights := skewedWeights(targets, 3, 5)
	a.Measure(reported(a, weights))
	var total int64
	for _, w := range weights {
		total += w
	}
	before := memberMap(a, targets)
	joined := append(benchMembers(m), Member{Identity: "newcomer"})
	if err := a.SetMembers(joined); err != nil {
		t.Fatal(err)
	}
	a.Measure(reported(a, weights))
	moved, _ := movedLoad(before, memberMap(a, targets), weights)
	ideal := total / (m + 1)
	t.Logf("join: moved %d series, %.3f of the ideal share %d", moved, float64(moved)/float64(ideal), ideal)
	if moved*10 > ideal*13 {
		t.Errorf("join moved %d series, more than 1.3 × the ideal share %d", moved, ideal)
	}
	checkBand(t, a, weights, minLoadPercent, maxLoadPercent)

	before = memberMap(a, targets)
	leaver := "collector-3"
	load, _ := loads(a, weights)
	if err := a.SetMembers(slices.DeleteFunc(joined, func(x Member) bool { return x.Identity == leaver })); err != nil {
		t.Fatal(err)
	}
	moved, _ = movedLoad(before, memberMap(a, targets), weights)
	t.Logf("leave: moved %d series, %.3f of the leaver's %d", moved, float64(moved)/float64(load[leaver]), load[leaver])
	if moved*10 > load[leaver]*13 {
		t.Errorf("leave moved %d series, more than 1.3 × the leaver's load %d", moved, load[leaver])
	}
	checkBand(t, a, weights, minLoadPercent, maxLoadPercent)
}

// A new leader that has the targets and the members, then the members'
// reports, keeps the previous assignment, whatever came first; and given
// the same inputs in the same order, two allocators agree.
func TestSeriesWeightedNewLeaderKeepsAssignment(t *testing.T) {
	old, targets := newSW(t, 3000, 12)
	weights := skewedWeights(targets, 2, 6)
	old.Measure(reported(old, weights))
	// A join and some new weights, so that the assignment is far from the
	// consistent-hashing homes.
	if err := old.SetMembers(append(benchMembers(12), Member{Identity: "newcomer"})); err != nil {
		t.Fatal(err)
	}
	for i, tg := range targets {
		if i%7 == 0 {
			weights[tg.Hash] *= 3
		}
	}
	old.Measure(reported(old, weights))
	want := memberMap(old, targets)
	reports := reported(old, weights)

	for _, order := range []string{"targets first", "reports first"} {
		t.Run(order, func(t *testing.T) {
			fresh, err := New(SeriesWeighted)
			if err != nil {
				t.Fatal(err)
			}
			if err := fresh.SetMembers(append(benchMembers(12), Member{Identity: "newcomer"})); err != nil {
				t.Fatal(err)
			}
			if order == "targets first" {
				fresh.SetTargets(targets)
				fresh.Measure(reports)
			} else {
				fresh.Measure(reports)
				fresh.SetTargets(targets)
			}
			if series, n := movedLoad(want, memberMap(fresh, targets), weights); n > 0 {
				t.Errorf("the new leader moved %d targets (%d series)", n, series)
			}
		})
	}
}

// A member that reports nothing keeps its targets, which weigh the
// average of the measured ones, not nothing.
func TestSeriesWeightedSilentMember(t *testing.T) {
	a, targets := newSW(t, 2000, 10)
	weights := skewedWeights(targets, 0, 7)
	a.Measure(reported(a, weights))
	before := memberMap(a, targets)
	silent := before[targets[0].Hash]
	var reports []Measurement
	for _, r := range reported(a, weights) {
		if r.Member != silent {
			reports = append(reports, r)
		}
	}
	a.Measure(reports)
	load := a.SeriesLoads()[silent]
	held := len(a.Assignment()[silent])
	var sum int64
	for _, r := range reports {
		sum += r.Series
	}
	avg := sum / int64(len(reports))
	if load != int64(held)*avg {
		t.Errorf("the silent member's load is %d, want its %d targets × the average %d", load, held, avg)
	}
	if got := before; len(a.Assignment()[silent]) < len(a.Assignment()[silent])/2 {
		t.Errorf("the silent member lost targets: %v", got)
	}
	moved, n := movedLoad(before, memberMap(a, targets), weights)
	t.Logf("a member going silent moved %d targets (%d series)", n, moved)
}

// max_series_per_collector: no member holds more series; the targets
// beyond are unassigned and counted, never dropped; series-weighted places
// them where they fit first.
func TestSeriesLimit(t *testing.T) {
	for _, strategy := range Strategies() {
		t.Run(strategy, func(t *testing.T) {
			const limit = 9_000
			a, err := New(strategy, WithSeriesLimit(limit), WithFallback(ConsistentHashing))
			if err != nil {
				t.Fatal(err)
			}
			if err := a.SetMembers(benchMembers(10)); err != nil {
				t.Fatal(err)
			}
			targets := testTargets(1000, "sw")
			a.SetTargets(targets)
			weights := map[uint64]int64{}
			for _, tg := range targets {
				weights[tg.Hash] = 100 // 100 000 series, 90 000 of room
			}
			a.Measure(reported(a, weights))
			for m, l := range a.SeriesLoads() {
				if l > limit {
					t.Errorf("member %s holds %d series, above the limit %d", m, l, limit)
				}
			}
			assigned := 0
			for _, hs := range a.Assignment() {
				assigned += len(hs)
			}
			unassigned := len(a.Unassigned())
			if assigned+unassigned != len(targets) {
				t.Errorf("%d assigned + %d unassigned, want %d targets", assigned, unassigned, len(targets))
			}
			if over := a.Counts().OverLimit; over != unassigned || over < 100 {
				t.Errorf("OverLimit = %d, unassigned %d; want them equal, at least 100", over, unassigned)
			}
			for _, h := range a.Unassigned() {
				if m, ok := a.MemberOf(h); ok {
					t.Fatalf("unassigned target %x has member %s", h, m)
				}
			}
		})
	}
	// Room enough: series-weighted unassigns nothing.
	a, targets := newSW(t, 1000, 10, WithSeriesLimit(10_500))
	weights := map[uint64]int64{}
	for _, tg := range targets {
		weights[tg.Hash] = 100
	}
	a.Measure(reported(a, weights))
	if over := a.Counts().OverLimit; over != 0 {
		t.Errorf("series-weighted with room for all: %d over the limit, want 0", over)
	}
}

// max_targets_per_collector holds for series-weighted too.
func TestSeriesWeightedTargetLimit(t *testing.T) {
	a, targets := newSW(t, 1000, 10, WithLimit(90))
	a.Measure(reported(a, skewedWeights(targets, 2, 8)))
	for m, hs := range a.Assignment() {
		if len(hs) > 90 {
			t.Errorf("member %s holds %d targets, above the limit 90", m, len(hs))
		}
	}
	if got, want := len(a.Unassigned()), 100; got != want || a.Counts().OverLimit != want {
		t.Errorf("%d unassigned, %d over the limit; want %d", got, a.Counts().OverLimit, want)
	}
}

// At the scale of the benchmark: 100 000 targets of skewed sizes (five of
// 100 000 series, a thousand of 5 000 to 20 000, the rest 10 to 510) over
// 100 members: the band is reached, and a join moves at most 1.3 times the
// newcomer's ideal share of load.
func TestSeriesWeightedAtScale(t *testing.T) {
	const n, m = 100_000, 100
	a, targets := newSW(t, n, m)
	weights := skewedWeights(targets, 5, 9)
	a.Measure(reported(a, weights))
	checkBand(t, a, weights, minLoadPercent, maxLoadPercent)
	var total int64
	for _, w := range weights {
		total += w
	}
	before := memberMap(a, targets)
	if err := a.SetMembers(append(benchMembers(m), Member{Identity: "newcomer"})); err != nil {
		t.Fatal(err)
	}
	moved, k := movedLoad(before, memberMap(a, targets), weights)
	ideal := total / (m + 1)
	t.Logf("join: moved %d targets, %d series: %.3f of the ideal share %d", k, moved, float64(moved)/float64(ideal), ideal)
	if moved*10 > ideal*13 {
		t.Errorf("join moved %d series, more than 1.3 × the ideal share %d", moved, ideal)
	}
	checkBand(t, a, weights, minLoadPercent, maxLoadPercent)
}
