package allocation

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// A target's successor is the member that takes it when its member leaves,
// while the load bounds do not bind (many targets a member).
func TestSuccessorTakesTheTargetWhenItsMemberLeaves(t *testing.T) {
	members := make([]Member, 5)
	for i := range members {
		members[i] = Member{Identity: "m-" + strconv.Itoa(i)}
	}
	r := rand.New(rand.NewPCG(1, 2))
	targets := make([]Target, 20000)
	for i := range targets {
		targets[i] = Target{Hash: r.Uint64()}
	}
	a, err := New(ConsistentHashing)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetMembers(members); err != nil {
		t.Fatal(err)
	}
	a.SetTargets(targets)
	successor := map[uint64]string{}
	for _, tg := range targets {
		owner, _ := a.MemberOf(tg.Hash)
		s, ok := Successor(a, tg.Hash)
		if !ok || s == owner {
			t.Fatalf("target %x of %s: successor %q %v", tg.Hash, owner, s, ok)
		}
		if owner == "m-0" {
			successor[tg.Hash] = s
		}
	}
	if err := a.SetMembers(members[1:]); err != nil {
		t.Fatal(err)
	}
	same := 0
	for h, s := range successor {
		if m, _ := a.MemberOf(h); m == s {
			same++
		}
	}
	if same < len(successor)*95/100 {
		t.Fatalf("%d of %d targets of the member that left went to their successor", same, len(successor))
	}

	one, _ := New(ConsistentHashing)
	_ = one.SetMembers(members[:1])
	one.SetTargets(targets[:1])
	if _, ok := Successor(one, targets[0].Hash); ok {
		t.Fatal("a successor in a group of one")
	}
	lw, _ := New(LeastWeighted)
	_ = lw.SetMembers(members)
	lw.SetTargets(targets[:1])
	if _, ok := Successor(lw, targets[0].Hash); ok {
		t.Fatal("least-weighted names a successor")
	}
}
