package allocation

// Successor returns the member that would take the target of hash if its
// member left, for a strategy that can tell: consistent-hashing, where it is
// the member the target ranks next after its own (the load bounds may place
// it elsewhere). False for a pinned target, a target without a member, a
// group of one member, and the other strategies.
func Successor(a Allocator, hash uint64) (string, bool) {
	s, ok := a.(successors)
	if !ok {
		return "", false
	}
	return s.successor(hash)
}

type successors interface {
	successor(hash uint64) (string, bool)
}

func (w *pinning) successor(hash uint64) (string, bool) {
	if _, pinned := w.pins[hash]; pinned {
		return "", false
	}
	s, ok := w.strategy.(successors)
	if !ok {
		return "", false
	}
	return s.successor(hash)
}

func (c *consistentHashing) successor(hash uint64) (string, bool) {
	i, ok := c.t.lookup(hash)
	if !ok || c.t.slots[i].member < 0 {
		return "", false
	}
	own, k := c.t.slots[i].member, mix(hash)
	best, next := uint64(0), int32(-1)
	for j, seed := range c.members.seeds {
		if int32(j) == own {
			continue
		}
		if v := mix(k ^ seed); next < 0 || v > best {
			best, next = v, int32(j)
		}
	}
	if next < 0 {
		return "", false
	}
	return c.members.names[next], true
}
