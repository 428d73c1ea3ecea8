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
type perNode struct {
	members  memberSet
	onNode   map[string][]int32 // node → its members, by name
	t        table[pnSlot]
	fallback Allocator // nil: targets without a node stay unassigned
}

type pnSlot struct {
	hash   uint64
	node   string
	member int32 // -1: no member on the node, or no node
}

func (s pnSlot) key() uint64 { return s.hash }

func newPerNode(fallback Allocator) *perNode { return &perNode{fallback: fallback} }

func (p *perNode) Strategy() string { return PerNode }

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
	if p.fallback != nil {
		if err := p.fallback.SetMembers(members); err != nil {
			return err // cannot happen: newMemberSet accepted them
		}
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
	for i := range p.t.slots {
		s := &p.t.slots[i]
		s.member = p.place(s.hash, s.node)
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
		if s, ok := p.t.remove(h); ok && p.delegated(s) {
			fromFallback = append(fromFallback, h)
		}
	}
	p.t.addAll(added, false, func(h uint64, i int32) pnSlot {
		s := pnSlot{hash: h, node: added[i].Node, member: p.place(h, added[i].Node)}
		if p.delegated(s) {
			toFallback = append(toFallback, added[i])
		}
		return s
	})
	if len(toFallback) > 0 || len(fromFallback) > 0 {
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

// Displaced are the fallback's: a target on a member's node never moves
// unless it or the members change.
func (p *perNode) Displaced() []uint64 {
	if p.fallback != nil {
		return p.fallback.Displaced()
	}
	return nil
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
