package allocation

import "slices"

// per-node gives a target to the member running on the target's node; when
// several members share that node, rendezvous hashing among them picks one.
// Targets without a node, or on a node that runs no member, go to the
// fallback strategy, which spreads them over all members, or stay unassigned
// without one. That is the Target Allocator's meaning of per-node and of
// allocation_fallback_strategy.
type perNode struct {
	members  memberSet
	onNode   map[string][]int32 // node → its members, by name
	t        table[pnSlot]
	fallback Allocator // nil: unplaced targets stay unassigned
}

type pnSlot struct {
	hash   uint64
	node   string
	member int32 // -1: no member on the node; the fallback's, if any
}

func (s pnSlot) key() uint64 { return s.hash }

func newPerNode(fallback Allocator) *perNode { return &perNode{fallback: fallback} }

func (p *perNode) Strategy() string { return PerNode }

// place returns the member on the target's node, or -1.
func (p *perNode) place(hash uint64, node string) int32 {
	if node == "" {
		return -1
	}
	ms := p.onNode[node]
	switch len(ms) {
	case 0:
		return -1
	case 1:
		return ms[0]
	}
	k := mix(hash)
	best, bi := mix(k^p.members.seeds[ms[0]]), ms[0]
	for _, m := range ms[1:] {
		if v := mix(k ^ p.members.seeds[m]); v > best {
			best, bi = v, m
		}
	}
	return bi
}

func (p *perNode) SetMembers(members []Member) error {
	next, err := newMemberSet(members)
	if err != nil {
		return err
	}
	if slices.Equal(p.members.names, next.names) && slices.Equal(p.members.nodes, next.nodes) {
		return nil
	}
	p.members = next
	p.onNode = make(map[string][]int32)
	for i, node := range next.nodes {
		if node != "" {
			p.onNode[node] = append(p.onNode[node], int32(i))
		}
	}
	var toFallback []Target
	var fromFallback []uint64
	for i := range p.t.slots {
		s := &p.t.slots[i]
		was := s.member >= 0
		s.member = p.place(s.hash, s.node)
		switch now := s.member >= 0; {
		case was && !now:
			toFallback = append(toFallback, Target{Hash: s.hash, Node: s.node})
		case !was && now:
			fromFallback = append(fromFallback, s.hash)
		}
	}
	if p.fallback != nil {
		if err := p.fallback.SetMembers(members); err != nil {
			return err // cannot happen: newMemberSet accepted them
		}
		p.fallback.Update(toFallback, fromFallback)
	}
	return nil
}

func (p *perNode) SetTargets(targets []Target) {
	p.Update(p.t.diff(targets))
}

func (p *perNode) Update(added []Target, removed []uint64) {
	var toFallback []Target
	var fromFallback []uint64
	for _, h := range removed {
		if s, ok := p.t.remove(h); ok && s.member < 0 {
			fromFallback = append(fromFallback, h)
		}
	}
	first := p.t.addAll(added, false, func(h uint64, i int32) pnSlot { return pnSlot{hash: h, node: added[i].Node} })
	for i := first; i < len(p.t.slots); i++ {
		s := &p.t.slots[i]
		if s.member = p.place(s.hash, s.node); s.member < 0 {
			toFallback = append(toFallback, Target{Hash: s.hash, Node: s.node})
		}
	}
	if p.fallback != nil {
		p.fallback.Update(toFallback, fromFallback)
	}
}

func (p *perNode) MemberOf(hash uint64) (string, bool) {
	i, ok := p.t.lookup(hash)
	switch {
	case !ok:
		return "", false
	case p.t.slots[i].member >= 0:
		return p.members.names[p.t.slots[i].member], true
	case p.fallback != nil:
		return p.fallback.MemberOf(hash)
	}
	return "", false
}

func (p *perNode) Assignment() map[string][]uint64 {
	out := p.members.assignment(len(p.t.slots), func(i int) (uint64, int32) {
		return p.t.slots[i].hash, p.t.slots[i].member
	})
	if p.fallback != nil {
		for name, hashes := range p.fallback.Assignment() {
			out[name] = append(out[name], hashes...)
		}
	}
	return out
}

// Displaced are the fallback's: a target on a member's node never moves
// unless it or the members change.
func (p *perNode) Displaced() []uint64 {
	if p.fallback != nil {
		return p.fallback.Displaced()
	}
	return nil
}

func (p *perNode) Unassigned() []uint64 {
	if p.fallback != nil {
		return p.fallback.Unassigned()
	}
	var out []uint64
	for _, s := range p.t.slots {
		if s.member < 0 {
			out = append(out, s.hash)
		}
	}
	return out
}
