package allocation

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// Measurements wobble from scrape to scrape: a member near
// max_series_per_collector must not cut and restore a target at every
// report. A target it cut comes back only when it fits with room to spare.
func TestSeriesLimitDoesNotFlapOnNoise(t *testing.T) {
	const targets, series = 200, 1000
	a, err := New(ConsistentHashing, WithSeriesLimit(series*targets/2)) // each member's load about the limit
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetMembers(testMembers(2)); err != nil {
		t.Fatal(err)
	}
	ts := jobTargets(1, targets)
	a.SetTargets(ts)
	rng := rand.New(rand.NewPCG(1, 2))
	var last []uint64
	changes := 0
	for round := range 30 {
		var ms []Measurement
		for _, tg := range ts {
			member, _ := a.MemberOf(tg.Hash)
			ms = append(ms, Measurement{Hash: tg.Hash, Member: member, Series: series - 10 + rng.Int64N(21)}) // ±1 %
		}
		a.Measure(ms)
		cut := slices.Sorted(slices.Values(a.Unassigned()))
		if round > 0 && !slices.Equal(cut, last) {
			changes++
		}
		last = cut
	}
	if changes > 2 {
		t.Fatalf("the targets over the series limit changed in %d of 29 rounds of ±1 %% noise", changes)
	}
	t.Logf("the cut changed in %d of 29 rounds; %d targets cut at the end", changes, len(last))
}
