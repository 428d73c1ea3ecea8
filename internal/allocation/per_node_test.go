package allocation

import (
	"fmt"
	"slices"
	"testing"
)

func TestPerNode(t *testing.T) {
	members := []Member{{Identity: "a", Node: "n1"}, {Identity: "b", Node: "n2"}, {Identity: "c", Node: "n2"}, {Identity: "d"}}
	// 100 targets on each of n1, n2, n3 (no member) and on no node.
	var targets []Target
	for i, node := range []string{"n1", "n2", "n3", ""} {
		for _, tg := range testTargets(100, fmt.Sprint("node", i)) {
			tg.Node = node
			targets = append(targets, tg)
		}
	}
	onNode := func(node string) []Target {
		var out []Target
		for _, tg := range targets {
			if tg.Node == node {
				out = append(out, tg)
			}
		}
		return out
	}
	unplaced := append(onNode("n3"), onNode("")...)

	for _, fallback := range []string{"", ConsistentHashing, LeastWeighted} {
		t.Run("fallback="+fallback, func(t *testing.T) {
			a := mustNew(t, PerNode, WithFallback(fallback))
			if err := a.SetMembers(members); err != nil {
				t.Fatal(err)
			}
			a.SetTargets(targets)

			for _, tg := range onNode("n1") {
				if o, _ := a.MemberOf(tg.Hash); o != "a" {
					t.Fatalf("a target on n1 went to %q, want a, the member on n1", o)
				}
			}
			shared := map[string]int{}
			for _, tg := range onNode("n2") {
				o, _ := a.MemberOf(tg.Hash)
				shared[o]++
			}
			if len(shared) != 2 || shared["b"] < 30 || shared["c"] < 30 {
				t.Fatalf("targets on n2 went to %v, want them shared by b and c", shared)
			}

			if fallback == "" {
				if got := a.Unassigned(); len(got) != len(unplaced) {
					t.Fatalf("%d targets unassigned, want the %d without a member on their node", len(got), len(unplaced))
				}
				for _, tg := range unplaced {
					if o, ok := a.MemberOf(tg.Hash); ok {
						t.Fatalf("a target without a member on its node went to %s", o)
					}
				}
				return
			}
			checkComplete(t, a, targets)
			spread := map[string]int{}
			for _, tg := range unplaced {
				o, _ := a.MemberOf(tg.Hash)
				spread[o]++
			}
			if len(spread) != len(members) {
				t.Fatalf("the fallback gave the unplaced targets to %v, want all %d members", spread, len(members))
			}

			// A member joins on n3: it takes the targets on n3, the fallback
			// gives up those, and targets placed by node do not move.
			was := membersOf(a, targets)
			if err := a.SetMembers(append(slices.Clone(members), Member{Identity: "e", Node: "n3"})); err != nil {
				t.Fatal(err)
			}
			for i, o := range membersOf(a, targets) {
				switch node := targets[i].Node; {
				case node == "n3" && o != "e":
					t.Fatalf("a target on n3 went to %s, want e, the member now on n3", o)
				case node == "n1" || node == "n2":
					if o != was[i] {
						t.Fatalf("a target on %s moved from %s to %s", node, was[i], o)
					}
				}
			}
			checkComplete(t, a, targets)

			// a leaves: its targets on n1 go to the fallback.
			if err := a.SetMembers(members[1:]); err != nil {
				t.Fatal(err)
			}
			checkComplete(t, a, targets)
			for _, tg := range onNode("n1") {
				if o, _ := a.MemberOf(tg.Hash); o == "a" {
					t.Fatal("a target is still with a member that left")
				}
			}
		})
	}
}

// Members sharing a node share its targets the same way in every process.
func TestPerNodeDeterministic(t *testing.T) {
	var members []Member
	for i := range 6 {
		members = append(members, Member{Identity: fmt.Sprint("m", i), Node: fmt.Sprint("n", i%2)})
	}
	targets := testTargets(600, "pn")
	for i := range targets {
		targets[i].Node = fmt.Sprint("n", i%3)
	}
	var got [][]string
	for seed := range uint64(2) {
		a := mustNew(t, PerNode, WithFallback(ConsistentHashing))
		a.SetTargets(shuffled(targets, seed))
		if err := a.SetMembers(shuffled(members, seed)); err != nil {
			t.Fatal(err)
		}
		got = append(got, membersOf(a, targets))
	}
	if !slices.Equal(got[0], got[1]) {
		t.Fatalf("assignments differ in %d targets", differences(got[0], got[1]))
	}
}
