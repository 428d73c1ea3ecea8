package leader

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/embedded-ta/embedded-ta/internal/discovery"
)

// searchFrom finds what a binary search of the whole list finds, from any
// starting position at or before it.
func TestSearchFrom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 17, 1000} {
		ts := make([]discovery.Target, n)
		for i := range ts {
			ts[i].Hash = uint64(2*i + 1) // odd: even hashes are absent
		}
		for range 500 {
			h := uint64(r.IntN(2*n + 3))
			want, wantFound := slices.BinarySearchFunc(ts, h, func(t discovery.Target, h uint64) int { return cmp.Compare(t.Hash, h) })
			from := r.IntN(want + 1)
			if got, found := searchFrom(ts, from, h); got != want || found != wantFound {
				t.Fatalf("n=%d searchFrom(%d, %d) = %d, %t; want %d, %t", n, from, h, got, found, want, wantFound)
			}
		}
	}
}
