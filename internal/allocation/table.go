package allocation

// slot is the per-target record a strategy keeps in a table.
type slot interface{ key() uint64 }

// table holds a strategy's targets densely, indexed by hash. Removal moves the
// last slot into the hole, so slot indices change: strategies never let an
// answer depend on them.
type table[S slot] struct {
	index index
	slots []S
}

func (t *table[S]) lookup(hash uint64) (int32, bool) { return t.index.get(hash) }

// reserve makes room for n more slots.
func (t *table[S]) reserve(n int) {
	t.index.reserve(n)
	if cap(t.slots)-len(t.slots) < n {
		grown := make([]S, len(t.slots), max(len(t.slots)+n, 2*len(t.slots)))
		copy(grown, t.slots)
		t.slots = grown
	}
}

// sorted returns the positions of targets sorted stably by the top bits of
// mix(hash).
func sorted(targets []Target, bits int) []keyed {
	items := make([]keyed, len(targets))
	for i, tg := range targets {
		items[i] = keyed{mix(tg.Hash), int32(i)}
	}
	return byKey(items, bits)
}

// addAll adds the targets whose hash is not present yet, the first of equal
// ones, making each slot with newSlot from its hash and its position in
// targets. They go in the order of their index position, which makes the
// cost of indexing a sweep, or with canonical in ascending order of
// mix(hash). It returns the index of the first new slot: the new ones are
// t.slots[first:].
func (t *table[S]) addAll(targets []Target, canonical bool, newSlot func(hash uint64, i int32) S) (first int) {
	first = len(t.slots)
	if len(targets) == 0 {
		return first
	}
	t.reserve(len(targets))
	bits := t.index.positionBits(0)
	if canonical {
		bits = 64
	}
	for _, it := range sorted(targets, bits) {
		hash := unmix(it.key)
		if _, ok := t.index.add(hash, it.key, int32(len(t.slots))); ok {
			t.slots = append(t.slots, newSlot(hash, it.i))
		}
	}
	return first
}

// remove deletes the slot of hash and returns it.
func (t *table[S]) remove(hash uint64) (S, bool) {
	var zero S
	i, ok := t.index.get(hash)
	if !ok {
		return zero, false
	}
	removed := t.slots[i]
	t.index.remove(hash)
	last := int32(len(t.slots) - 1)
	if i != last {
		t.slots[i] = t.slots[last]
		t.index.set(t.slots[i].key(), i)
	}
	t.slots[last] = zero
	t.slots = t.slots[:last]
	return removed, true
}

// diff returns the targets to add and the hashes to remove to turn the table
// into targets. For an empty table it returns targets itself, uncopied.
func (t *table[S]) diff(targets []Target) (added []Target, removed []uint64) {
	if len(t.slots) == 0 {
		return targets, nil
	}
	seen := make([]bool, len(t.slots))
	for _, it := range sorted(targets, t.index.positionBits(0)) {
		if i, ok := t.index.getKeyed(targets[it.i].Hash, it.key); ok {
			seen[i] = true
		} else {
			added = append(added, targets[it.i])
		}
	}
	for i, s := range t.slots {
		if !seen[i] {
			removed = append(removed, s.key())
		}
	}
	return added, removed
}
