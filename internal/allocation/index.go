package allocation

import (
	"cmp"
	"math/bits"
	"slices"
)

// index maps target hashes to slots: one flat array, open addressing with
// linear probing, at most half full. An entry's position is the top bits of
// mix(hash), so a batch sorted by mix(hash) is inserted or looked up in one
// forward sweep. At a million targets that matters more than anything else:
// a random access into the 32 MB table costs a cache and a TLB miss, a fifth
// of a microsecond on this project's machines, and a Go map takes several.
type index struct {
	entries []entry // a power of two long, or empty
	shift   uint    // 64 - log2(len(entries))
	n       int
}

type entry struct {
	hash uint64
	slot int32 // slot + 1; 0 marks an empty entry
}

func (x *index) len() int { return x.n }

// find returns the position of hash, or of the empty entry where it would go.
func (x *index) find(hash uint64) (int, bool) { return x.findKeyed(hash, mix(hash)) }

// findKeyed is find with key = mix(hash) at hand.
func (x *index) findKeyed(hash, key uint64) (int, bool) {
	mask := len(x.entries) - 1
	for p := int(key >> x.shift); ; p = (p + 1) & mask {
		switch e := &x.entries[p]; {
		case e.slot == 0:
			return p, false
		case e.hash == hash:
			return p, true
		}
	}
}

func (x *index) get(hash uint64) (int32, bool) { return x.getKeyed(hash, mix(hash)) }

func (x *index) getKeyed(hash, key uint64) (int32, bool) {
	if x.n == 0 {
		return 0, false
	}
	p, ok := x.findKeyed(hash, key)
	return x.entries[p].slot - 1, ok
}

// reserve makes room for n more hashes without growing on the way.
func (x *index) reserve(n int) {
	size := max(len(x.entries), 8)
	for size < 2*(x.n+n) {
		size *= 2
	}
	if size == len(x.entries) {
		return
	}
	old := x.entries
	x.entries = make([]entry, size)
	x.shift = uint(64 - bits.TrailingZeros(uint(size)))
	for _, e := range old {
		if e.slot != 0 {
			p, _ := x.find(e.hash)
			x.entries[p] = e
		}
	}
}

// add maps hash, whose key = mix(hash), to slot unless hash is present; it
// returns the slot hash maps to and whether it added it.
func (x *index) add(hash, key uint64, slot int32) (int32, bool) {
	if 2*(x.n+1) > len(x.entries) {
		x.reserve(1)
	}
	p, ok := x.findKeyed(hash, key)
	if ok {
		return x.entries[p].slot - 1, false
	}
	x.entries[p] = entry{hash, slot + 1}
	x.n++
	return slot, true
}

// set maps a present hash to slot.
func (x *index) set(hash uint64, slot int32) {
	p, _ := x.find(hash)
	x.entries[p].slot = slot + 1
}

// remove unmaps hash, shifting back the entries that probed past it.
func (x *index) remove(hash uint64) {
	if x.n == 0 {
		return
	}
	i, ok := x.find(hash)
	if !ok {
		return
	}
	mask := len(x.entries) - 1
	for j := (i + 1) & mask; x.entries[j].slot != 0; j = (j + 1) & mask {
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j].
		k := int(mix(x.entries[j].hash) >> x.shift)
		if i <= j && i < k && k <= j || i > j && (i < k || k <= j) {
			continue
		}
		x.entries[i] = x.entries[j]
		i = j
	}
	x.entries[i] = entry{}
	x.n--
}

// keyed is an item of a batch: its key mix(hash), from which unmix recovers
// the hash without a random access to the batch, and its position in it.
type keyed struct {
	key uint64
	i   int32
}

// byKey sorts the batch by at least the top bits bits of its keys, by the
// whole key if bits is 64, and stably, so that items with equal keys keep
// their order. Large batches get a radix sort, 11 bits a pass, which streams
// through memory.
func byKey(items []keyed, bits int) []keyed {
	if len(items) < 4096 {
		shift := uint(64 - bits)
		slices.SortStableFunc(items, func(a, b keyed) int {
			return cmp.Compare(a.key>>shift, b.key>>shift)
		})
		return items
	}
	const digit = 11
	passes := (bits + digit - 1) / digit
	buf := make([]keyed, len(items))
	var count [1 << digit]int
	for shift := uint(max(0, 64-passes*digit)); shift < 64; shift += digit {
		clear(count[:])
		for _, it := range items {
			count[it.key>>shift&(1<<digit-1)]++
		}
		sum := 0
		for d, c := range count {
			count[d], sum = sum, sum+c
		}
		for _, it := range items {
			d := it.key >> shift & (1<<digit - 1)
			buf[count[d]] = it
			count[d]++
		}
		items, buf = buf, items
	}
	return items
}

// positionBits is how many top bits of a key order the batch by position in x
// once x has room for n more hashes.
func (x *index) positionBits(n int) int {
	x.reserve(n)
	return int(64 - x.shift)
}
