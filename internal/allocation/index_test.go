package allocation

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// The index answers as a map does through any mix of additions and removals,
// including crowded neighbourhoods where removals shift entries back.
func TestIndexMatchesMap(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	var x index
	want := map[uint64]int32{}
	for step := range 100_000 {
		h := r.Uint64N(3000) // few distinct hashes: many collisions of a kind
		switch r.IntN(3) {
		case 0, 1:
			got, added := x.add(h, mix(h), int32(step))
			if w, ok := want[h]; ok {
				if added || got != w {
					t.Fatalf("add(%d) = %d, %v over %d", h, got, added, w)
				}
			} else {
				want[h] = int32(step)
			}
		case 2:
			x.remove(h)
			delete(want, h)
		}
		if step%997 == 0 {
			if x.len() != len(want) {
				t.Fatalf("step %d: %d entries, want %d", step, x.len(), len(want))
			}
			for h := range uint64(3000) {
				got, ok := x.get(h)
				if w, wok := want[h]; ok != wok || ok && got != w {
					t.Fatalf("step %d: get(%d) = %d, %v; want %d, %v", step, h, got, ok, w, wok)
				}
			}
		}
	}
}

func TestByKey(t *testing.T) {
	for _, n := range []int{0, 1, 100, 4095, 4096, 50_000} {
		for _, bits := range []int{8, 21, 64} {
			r := rand.New(rand.NewPCG(uint64(n), uint64(bits)))
			items := make([]keyed, n)
			for i := range items {
				items[i] = keyed{r.Uint64N(1<<20) << 44, int32(i)} // many equal keys
			}
			got := byKey(slices.Clone(items), bits)
			shift := uint(64 - bits)
			for i := 1; i < len(got); i++ {
				a, b := got[i-1], got[i]
				if a.key>>shift > b.key>>shift || a.key == b.key && a.i > b.i {
					t.Fatalf("n=%d bits=%d: %v before %v", n, bits, a, b)
				}
			}
			slices.SortFunc(got, func(a, b keyed) int { return int(a.i - b.i) })
			if !slices.Equal(got, items) {
				t.Fatalf("n=%d bits=%d: not a permutation", n, bits)
			}
		}
	}
}

func TestUnmix(t *testing.T) {
	for _, x := range []uint64{0, 1, 42, 1 << 63, ^uint64(0), 0x0123456789abcdef} {
		if got := unmix(mix(x)); got != x {
			t.Fatalf("unmix(mix(%#x)) = %#x", x, got)
		}
	}
}
