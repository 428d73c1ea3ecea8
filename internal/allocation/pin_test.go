package allocation

import (
	"fmt"
	"slices"
	"testing"
)

// limitStrategies returns a fresh allocator of every strategy with the
// limit, per-node with each fallback; the targets of limitTargets have no
// node, so per-node hands them to its fallback.
func limitStrategies(t *testing.T, limit int) map[string]Allocator {
	out := map[string]Allocator{}
	for _, s := range []struct{ strategy, fallback string }{
		{ConsistentHashing, ""}, {LeastWeighted, ""}, {PerNode, ConsistentHashing}, {PerNode, LeastWeighted},
	} {
		out[s.strategy+"+"+s.fallback] = mustNew(t, s.strategy, WithFallback(s.fallback), WithLimit(limit))
	}
	return out
}

// checkLimit fails unless every member holds at most limit targets, every
// target is assigned or unassigned, and overLimit of them are over the
// limit.
func checkLimit(t *testing.T, a Allocator, targets []Target, limit, overLimit int) {
	t.Helper()
	assigned := 0
	for member, hs := range a.Assignment() {
		if len(hs) > limit {
			t.Fatalf("%s holds %d targets, more than the limit %d", member, len(hs), limit)
		}
		assigned += len(hs)
	}
	if u := len(a.Unassigned()); assigned+u != len(targets) {
		t.Fatalf("%d targets assigned and %d unassigned, of %d", assigned, u, len(targets))
	}
	if got := a.Counts().OverLimit; got != overLimit {
		t.Fatalf("%d targets over the limit, want %d", got, overLimit)
	}
	unassigned := 0
	for _, tg := range targets {
		if _, ok := a.MemberOf(tg.Hash); !ok {
			unassigned++
		}
	}
	if unassigned != len(a.Unassigned()) {
		t.Fatalf("MemberOf finds %d targets unassigned, Unassigned %d", unassigned, len(a.Unassigned()))
	}
}

// Targets beyond the members' limits stay unassigned and are counted; they
// are placed as members join or other targets go.
func TestLimitLeavesTheRestUnassigned(t *testing.T) {
	for name, a := range limitStrategies(t, 10) {
		t.Run(name, func(t *testing.T) {
			targets := jobTargets(8, 10)
			if err := a.SetMembers(testMembers(5)); err != nil {
				t.Fatal(err)
			}
			a.SetTargets(targets)
			checkLimit(t, a, targets, 10, 30) // 5 members hold 50 of 80
			for member, hs := range a.Assignment() {
				if len(hs) != 10 {
					t.Fatalf("%s holds %d targets, want the limit, 10, as some wait", member, len(hs))
				}
			}
			if err := a.SetMembers(testMembers(6)); err != nil {
				t.Fatal(err)
			}
			checkLimit(t, a, targets, 10, 20)
			a.Update(nil, hashes(targets[:40]))
			checkLimit(t, a, targets[40:], 10, 0)
			a.Update(targets[:25], nil)
			present := append(slices.Clone(targets[:25]), targets[40:]...)
			checkLimit(t, a, present, 10, 5)
			if err := a.SetMembers(nil); err != nil {
				t.Fatal(err)
			}
			checkLimit(t, a, present, 10, 0) // unassigned, for want of members, not of room
		})
	}
}

// consistent-hashing leaves out, when the limit binds, the same targets
// whatever the order of events: those of the smallest mix(hash).
func TestConsistentHashingLimitLeavesOutByHash(t *testing.T) {
	targets := testTargets(100, "limit")
	a := mustNew(t, ConsistentHashing, WithLimit(15))
	if err := a.SetMembers(testMembers(6)); err != nil {
		t.Fatal(err)
	}
	a.SetTargets(shuffled(targets, 1))
	byKey := slices.SortedFunc(slices.Values(targets), func(x, y Target) int {
		switch kx, ky := mix(x.Hash), mix(y.Hash); {
		case kx < ky:
			return -1
		case kx > ky:
			return 1
		}
		return 0
	})
	for i, tg := range byKey {
		if _, ok := a.MemberOf(tg.Hash); ok != (i >= 10) {
			t.Fatalf("the target of rank %d by mix(hash) is assigned: %t", i, ok)
		}
	}
}

// per-node keeps, on a member whose node has more targets than the limit,
// those that score it highest; the fallback gets the room the nodes leave.
func TestPerNodeLimit(t *testing.T) {
	members := []Member{{Identity: "a", Node: "n1"}, {Identity: "b", Node: "n2"}}
	var targets []Target
	for _, g := range []struct {
		node string
		n    int
	}{{"n1", 30}, {"n2", 5}, {"n3", 4}, {"", 12}} {
		for _, tg := range testTargets(g.n, "node-"+g.node) {
			tg.Node = g.node
			targets = append(targets, tg)
		}
	}
	for _, tc := range []struct {
		fallback           string
		overLimit, onNodeB int
	}{
		{"", 20, 5},                 // n1: 20 over; n3: no member; none on no node: no fallback
		{ConsistentHashing, 27, 10}, // and of the 12 on no node, b takes 5, 7 wait
		{LeastWeighted, 27, 10},     //
	} {
		t.Run("fallback="+tc.fallback, func(t *testing.T) {
			a := mustNew(t, PerNode, WithFallback(tc.fallback), WithLimit(10))
			if err := a.SetMembers(members); err != nil {
				t.Fatal(err)
			}
			a.SetTargets(targets)
			checkLimit(t, a, targets, 10, tc.overLimit)
			if got := len(a.Assignment()["b"]); got != tc.onNodeB {
				t.Fatalf("b holds %d targets, want %d", got, tc.onNodeB)
			}
			seed := mix(fnv1a("a"))
			onN1 := slices.SortedFunc(slices.Values(targets[:30]), func(x, y Target) int {
				if weaker(candidate{mix(mix(y.Hash) ^ seed), y.Hash, 0}, candidate{mix(mix(x.Hash) ^ seed), x.Hash, 0}) {
					return -1
				}
				return 1
			})
			for i, tg := range onN1 {
				if _, ok := a.MemberOf(tg.Hash); ok != (i < 10) {
					t.Fatalf("the target of n1 that a ranks %d is assigned: %t", i, ok)
				}
			}
		})
	}
}

// A pinned target goes to the member it names, whatever the strategy (per
// node, whatever its node); one pinned to an identity that is no member is
// placed as if it had no pin, until that identity joins.
func TestPinnedTargets(t *testing.T) {
	for name, a := range limitStrategies(t, 0) {
		t.Run(name, func(t *testing.T) {
			members := []Member{{Identity: "a", Node: "n-a"}, {Identity: "b", Node: "n-b"}, {Identity: "c", Node: "n-c"}}
			targets := jobTargets(3, 10)
			toB := Target{Hash: targetHash("pinned", 1), Job: "heavy", Node: "n-a", Pin: "b"}
			toZ := Target{Hash: targetHash("pinned", 2), Job: "heavy", Pin: "z"}
			targets = append(targets, toB, toZ)
			if err := a.SetMembers(members); err != nil {
				t.Fatal(err)
			}
			a.SetTargets(targets)
			checkComplete(t, a, targets)
			if m, _ := a.MemberOf(toB.Hash); m != "b" {
				t.Fatalf("the target pinned to b is with %q", m)
			}
			if got, want := a.Counts(), (Counts{Pinned: 1, PinnedToNonMember: 1}); got != want {
				t.Fatalf("counts %+v, want %+v", got, want)
			}

			if err := a.SetMembers(append(slices.Clone(members), Member{Identity: "z", Node: "n-z"})); err != nil {
				t.Fatal(err)
			}
			checkComplete(t, a, targets)
			if m, _ := a.MemberOf(toZ.Hash); m != "z" {
				t.Fatalf("the target pinned to z is with %q once z joined", m)
			}
			if got, want := a.Counts(), (Counts{Pinned: 2}); got != want {
				t.Fatalf("counts %+v, want %+v", got, want)
			}

			if err := a.SetMembers([]Member{members[0], members[2]}); err != nil { // b and z leave
				t.Fatal(err)
			}
			checkComplete(t, a, targets)
			if got, want := a.Counts(), (Counts{PinnedToNonMember: 2}); got != want {
				t.Fatalf("counts %+v, want %+v", got, want)
			}

			was, _ := a.MemberOf(targets[5].Hash)
			a.Update([]Target{{Hash: targets[5].Hash, Pin: "a"}}, nil) // a known hash: ignored
			if m, _ := a.MemberOf(targets[5].Hash); m != was {
				t.Fatalf("a known target added again, pinned, moved from %s to %s", was, m)
			}
			a.Update(nil, hashes([]Target{toB, toZ}))
			checkComplete(t, a, targets[:30])
			if got, want := a.Counts(), (Counts{}); got != want {
				t.Fatalf("counts %+v, want %+v", got, want)
			}
			a.Update([]Target{{Hash: toB.Hash, Pin: "a"}}, nil)
			if m, _ := a.MemberOf(toB.Hash); m != "a" {
				t.Fatalf("the target pinned to a is with %q", m)
			}

			// Pinned anew in one Update, which removes it and adds it.
			repinned := targets[0]
			repinned.Pin = "c"
			a.Update([]Target{repinned}, []uint64{repinned.Hash})
			if m, _ := a.MemberOf(repinned.Hash); m != "c" {
				t.Fatalf("the target pinned anew to c is with %q", m)
			}
			a.Update([]Target{{Hash: toB.Hash}}, []uint64{toB.Hash}) // unpinned
			if got, want := a.Counts(), (Counts{Pinned: 1}); got != want {
				t.Fatalf("counts %+v, want %+v", got, want)
			}
			checkComplete(t, a, append(slices.Clone(targets[:30]), Target{Hash: toB.Hash}))
		})
	}
}

// Pinned targets count against the limit: a member pinned more than the
// limit keeps those that score it highest, and takes no other target.
func TestPinsWithinTheLimit(t *testing.T) {
	for name, a := range limitStrategies(t, 2) {
		t.Run(name, func(t *testing.T) {
			targets := jobTargets(2, 3)
			for i := range 3 {
				targets[i].Pin = "collector-0"
			}
			if err := a.SetMembers(testMembers(3)); err != nil {
				t.Fatal(err)
			}
			a.SetTargets(targets)
			checkLimit(t, a, targets, 2, 1)
			mine := a.Assignment()["collector-0"]
			if len(mine) != 2 {
				t.Fatalf("collector-0 holds %d targets, want 2", len(mine))
			}
			seed := mix(fnv1a("collector-0"))
			weakest := slices.MinFunc(targets[:3], func(x, y Target) int {
				if weaker(candidate{mix(mix(x.Hash) ^ seed), x.Hash, 0}, candidate{mix(mix(y.Hash) ^ seed), y.Hash, 0}) {
					return -1
				}
				return 1
			})
			for _, h := range mine {
				if h == weakest.Hash || !slices.Contains(hashes(targets[:3]), h) {
					t.Fatalf("collector-0 holds %x, not the two pinned targets that score it highest", h)
				}
			}
		})
	}
}

// Pinned targets count in their member's load: consistent-hashing balances
// whole loads, least-weighted gives to the fewest counting them.
func TestPinnedTargetsCountInTheBalance(t *testing.T) {
	for _, strategy := range []string{ConsistentHashing, LeastWeighted} {
		t.Run(strategy, func(t *testing.T) {
			targets := jobTargets(3, 10)
			for i := range 6 {
				targets[i].Pin = "collector-0"
			}
			a := mustNew(t, strategy)
			if err := a.SetMembers(testMembers(3)); err != nil {
				t.Fatal(err)
			}
			a.SetTargets(targets)
			lo, hi := loadBounds(30, 3)
			for member, hs := range a.Assignment() {
				if len(hs) < lo || len(hs) > hi {
					t.Fatalf("%s holds %d targets, want %d to %d", member, len(hs), lo, hi)
				}
			}
		})
	}
}

// The level is where the totals would even out: checked against its
// definition, in whole numbers (W = p/q).
func TestBudgetLevel(t *testing.T) {
	for _, tc := range []struct {
		n           int
		fixed, room []int
	}{
		{30, nil, nil},
		{24, []int{6, 0, 0}, nil},
		{10, []int{20, 0, 0}, nil},
		{10, nil, []int{2, 10, 10}},
		{12, []int{1, 0, 3}, []int{1, 9, 7}},
		{17, []int{1, 0, 3}, []int{1, 9, 7}}, // all the room
		{0, []int{4, 5}, []int{1, 1}},
	} {
		b := budget{fixed: tc.fixed, room: tc.room}
		members := max(len(tc.fixed), len(tc.room))
		if members == 0 {
			members = 3
		}
		p, q := b.level(tc.n, members)
		sum := 0 // of clamp(W − fixed, 0, room), times q
		for m := range members {
			v := max(p-b.fixedOf(m)*q, 0)
			if tc.room != nil {
				v = min(v, tc.room[m]*q)
			}
			sum += v
		}
		if tc.n > 0 && sum != tc.n*q {
			t.Errorf("level(%d, %v, %v) = %d/%d, which holds %d/%d targets", tc.n, tc.fixed, tc.room, p, q, sum, q)
		}
		t.Logf("level(%d, %v, %v) = %d/%d", tc.n, tc.fixed, tc.room, p, q)
	}
}

func ExampleWithLimit() {
	a, _ := New(ConsistentHashing, WithLimit(2))
	_ = a.SetMembers([]Member{{Identity: "a"}, {Identity: "b"}})
	a.SetTargets([]Target{{Hash: 1}, {Hash: 2}, {Hash: 3}, {Hash: 4}, {Hash: 5}, {Hash: 6, Pin: "b"}})
	fmt.Println(len(a.Unassigned()), a.Counts())
	// Output: 2 {2 1 0}
}

// Of several targets with one hash the first is kept, pinned or not.
func TestPinnedOrNotTheFirstIsKept(t *testing.T) {
	for _, tc := range []struct {
		name    string
		targets []Target
		want    string
	}{
		{"pinned first", []Target{{Hash: 7, Pin: "b"}, {Hash: 7}, {Hash: 7, Pin: "a"}}, "b"},
		{"unpinned first", []Target{{Hash: 8}, {Hash: 7}, {Hash: 7, Pin: "b"}, {Hash: 7, Pin: "a"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pinned, others := split(tc.targets)
			got := ""
			if p, ok := pinned[7]; ok {
				got = p.Pin
				if slices.ContainsFunc(others, func(o Target) bool { return o.Hash == 7 }) {
					t.Fatal("hash 7 is both pinned and not")
				}
			}
			if got != tc.want {
				t.Fatalf("hash 7 kept pinned to %q, want %q", got, tc.want)
			}
			a := mustNew(t, ConsistentHashing)
			if err := a.SetMembers([]Member{{Identity: "a"}, {Identity: "b"}}); err != nil {
				t.Fatal(err)
			}
			a.SetTargets(tc.targets)
			if n := len(a.Assignment()["a"]) + len(a.Assignment()["b"]); n != len(slices.Compact(slices.Sorted(slices.Values(hashes(tc.targets))))) {
				t.Fatalf("%d targets assigned", n)
			}
		})
	}
}
