package allocation

import "slices"

// per-node gives a target to the member running on the target's node; when
// several members share that node, rendezvous hashing among them picks one.
// A target on a node that runs no member stays unassigned until a member
// runs there. A target without a node goes to the fallback strategy, which
// spreads those targets over all members, or stays unassigned without one.
// That is the Target Allocator's meaning of per-node and of
// allocation_fallback_strategy; where members share a node, the Target
// Allocator gives all of its targets to one of them, picked by the order
// of a map.
//
// The members' loads are those of their nodes: per-node does not balance
// them, and its fallback balances only the targets it places.
//
// Within a budget (budget.go), a member whose node has more targets than
// its room keeps those that score it highest, as rendezvous hashing scores
// them; the others stay unassigned. The fallback gets the room the members'
// nodes leave.
type perNode struct {
	members  memberSet
	onNode   map[string][]int32 // node → its members, by name
	t        table[pnSlot]
	fallback strategyAllocator // nil: targets without a node stay unassigned
	budget   *budget
	homeLoad []int    // per member: targets whose home it is
	cut      []uint64 // targets whose home has no room for them
	fbBudget budget   // the fallback's
}

type pnSlot struct {
	hash   uint64
	node   string
	home   int32 // the member on the node; -1: no member on the node, or no node
	member int32 // home, unless it has no room for the target: -1
}

func (s pnSlot) key() uint64 { return s.hash }

func newPerNode(fallback strategyAllocator) *perNode {
	p := &perNode{fallback: fallback, budget: &budget{}}
	if fallback != nil {
		fallback.setBudget(&p.fbBudget)
	}
	return p
}

func (p *perNode) Strategy() string { return PerNode }

func (p *perNode) setBudget(b *budget) { p.budget = b }

func (p *perNode) has(hash uint64) bool { _, ok := p.t.lookup(hash); return ok }

func (p *perNode) overLimit() int {
	n := len(p.cut)
	if p.fallback != nil {
		n += p.fallback.overLimit()
	}
	return n
}

// limit keeps each member's targets within its room, and hands the fallback
// the room that is left.
func (p *perNode) limit() {
	for _, h := range p.cut {
		if i, ok := p.t.lookup(h); ok {
			p.t.slots[i].member = p.t.slots[i].home
		}
	}
	p.cut = p.cut[:0]
	room := p.budget.room
	if room == nil {
		p.fbBudget.room = nil
		return
	}
	over := map[int32][]candidate{}
	for m, n := range p.homeLoad {
		if n > room[m] {
			over[int32(m)] = nil
		}
	}
	if len(over) > 0 {
		for i, s := range p.t.slots {
			if cs, ok := over[s.home]; ok {
				over[s.home] = append(cs, candidate{mix(mix(s.hash) ^ p.members.seeds[s.home]), s.hash, int32(i)})
			}
		}
		for m, cs := range over {
			slices.SortFunc(cs, func(a, b candidate) int {
				if weaker(b, a) {
					return -1
				}
				return 1
			})
			for _, c := range cs[room[m]:] {
				p.t.slots[c.slot].member = -1
				p.cut = append(p.cut, c.hash)
			}
		}
	}
	p.fbBudget.room = make([]int, len(room))
	for m, r := range room {
		p.fbBudget.room[m] = r - min(p.homeLoad[m], r)
	}
}

// Node labels, as the Target Allocator reads them.
var nodeLabels = []string{
	"__meta_kubernetes_pod_node_name",
	"__meta_kubernetes_node_name",
	"__meta_kubernetes_endpoint_node_name",
}

const (
	endpointSliceTargetKind = "__meta_kubernetes_endpointslice_address_target_kind"
	endpointSliceTargetName = "__meta_kubernetes_endpointslice_address_target_name"
)

// NodeOf returns the node of a target from its discovered labels, as the
// Target Allocator reads it for per-node; label returns a label's value, ""
// when absent. It is the first non-empty of __meta_kubernetes_pod_node_name,
// __meta_kubernetes_node_name and __meta_kubernetes_endpoint_node_name; else,
// for an EndpointSlice address whose target is a Node (the kubelet and
// cAdvisor endpoints of the kubelet Service),
// __meta_kubernetes_endpointslice_address_target_name; else "".
//
// It does not read __meta_kubernetes_endpointslice_endpoint_node_name, nor
// the Endpoints role's address target: the Target Allocator does not, so a
// target that has only those goes to the fallback there, and here too.
func NodeOf(label func(name string) string) string {
	for _, name := range nodeLabels {
		if v := label(name); v != "" {
			return v
		}
	}
	if label(endpointSliceTargetKind) == "Node" {
		return label(endpointSliceTargetName)
	}
	return ""
}

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

// delegated reports whether the fallback places the target.
func (p *perNode) delegated(s pnSlot) bool { return s.node == "" && p.fallback != nil }

func (p *perNode) SetMembers(members []Member) error {
	next, err := newMemberSet(members)
	if err != nil {
		return err
	}
	if !slices.Equal(p.members.names, next.names) || !slices.Equal(p.members.nodes, next.nodes) {
		p.members = next
		p.onNode = make(map[string][]int32)
		for i, node := range next.nodes {
			if node != "" {
				p.onNode[node] = append(p.onNode[node], int32(i))
			}
		}
		p.homeLoad = make([]int, next.len())
		for i := range p.t.slots {
			s := &p.t.slots[i]
			s.home = p.place(s.hash, s.node)
			s.member = s.home
			if s.home >= 0 {
				p.homeLoad[s.home]++
			}
		}
	}
	p.limit()
	if p.fallback != nil {
		if err := p.fallback.SetMembers(members); err != nil {
			return err // cannot happen: newMemberSet accepted them
		}
		if p.fbBudget.room != nil {
			p.fallback.Update(nil, nil) // the room left may have changed, the names not
		}
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
		s, ok := p.t.remove(h)
		switch {
		case !ok:
		case p.delegated(s):
			fromFallback = append(fromFallback, h)
		case s.home >= 0:
			p.homeLoad[s.home]--
		}
	}
	// Placing is a lookup of the node's members (about as costly as 16
	// scores), independent for each target.
	homes := make([]int32, len(added))
	eachPart(len(added), 16*len(added), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			homes[i] = p.place(added[i].Hash, added[i].Node)
		}
	})
	p.t.addAll(added, false, func(h uint64, i int32) pnSlot {
		home := homes[i]
		s := pnSlot{hash: h, node: added[i].Node, home: home, member: home}
		switch {
		case p.delegated(s):
			toFallback = append(toFallback, added[i])
		case home >= 0:
			p.homeLoad[home]++
		}
		return s
	})
	p.limit()
	if p.fallback != nil && (len(toFallback) > 0 || len(fromFallback) > 0 || p.fbBudget.room != nil) {
		p.fallback.Update(toFallback, fromFallback)
	}
}

func (p *perNode) MemberOf(hash uint64) (string, bool) {
	i, ok := p.t.lookup(hash)
	switch {
	case !ok:
		return "", false
	case p.delegated(p.t.slots[i]):
		return p.fallback.MemberOf(hash)
	case p.t.slots[i].member >= 0:
		return p.members.names[p.t.slots[i].member], true
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

// Displaced are the targets a member's room holds off it, and the
// fallback's: a target on a member's node never moves otherwise unless it or
// the members change.
func (p *perNode) Displaced() []uint64 {
	out := slices.Clone(p.cut)
	if p.fallback != nil {
		out = append(out, p.fallback.Displaced()...)
	}
	return out
}

func (p *perNode) Unassigned() []uint64 {
	var out []uint64
	for _, s := range p.t.slots {
		if s.member < 0 && !p.delegated(s) {
			out = append(out, s.hash)
		}
	}
	if p.fallback != nil {
		out = append(out, p.fallback.Unassigned()...)
	}
	return out
}

// remeasure does nothing: the strategy balances targets, not series.
func (x *perNode) remeasure() {}
