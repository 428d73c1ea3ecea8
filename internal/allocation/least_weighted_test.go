package allocation

import (
	"maps"
	"slices"
	"testing"
)

// New targets go to the members with the fewest, ties to the smaller name;
// targets already placed stay; a new member waits for new targets.
func TestLeastWeighted(t *testing.T) {
	type step struct {
		members []string // nil: unchanged
		add     int      // new targets
		remove  int      // targets of member from
		from    string
		want    map[string]int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"ties go to the smaller name", []step{
			{members: []string{"c", "b", "a"}, add: 4, want: map[string]int{"a": 2, "b": 1, "c": 1}},
			{add: 2, want: map[string]int{"a": 2, "b": 2, "c": 2}},
		}},
		{"a new member gets only new targets", []step{
			{members: []string{"a", "b"}, add: 10, want: map[string]int{"a": 5, "b": 5}},
			{members: []string{"a", "b", "c"}, want: map[string]int{"a": 5, "b": 5, "c": 0}},
			{add: 3, want: map[string]int{"a": 5, "b": 5, "c": 3}},
			{add: 4, want: map[string]int{"a": 6, "b": 6, "c": 5}},
		}},
		{"removing targets does not rebalance", []step{
			{members: []string{"a", "b"}, add: 6, want: map[string]int{"a": 3, "b": 3}},
			{remove: 2, from: "a", want: map[string]int{"a": 1, "b": 3}},
			{add: 1, want: map[string]int{"a": 2, "b": 3}},
			{members: []string{"a", "b", "c"}, add: 1, want: map[string]int{"a": 2, "b": 3, "c": 1}},
		}},
		{"a leaver's targets go to the fewest", []step{
			{members: []string{"a", "b", "c"}, add: 9, want: map[string]int{"a": 3, "b": 3, "c": 3}},
			{members: []string{"a", "b", "c", "d"}, add: 1, want: map[string]int{"a": 3, "b": 3, "c": 3, "d": 1}},
			{members: []string{"b", "c", "d"}, want: map[string]int{"b": 4, "c": 3, "d": 3}},
		}},
		{"targets wait for a member", []step{
			{add: 5, want: map[string]int{}},
			{members: []string{"a", "b"}, want: map[string]int{"a": 3, "b": 2}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, LeastWeighted)
			pool := testTargets(100, "lw")
			var present []Target
			var members []string
			next := 0
			for i, s := range tc.steps {
				was := membersOf(a, present)
				if s.members != nil {
					members = s.members
					var ms []Member
					for _, name := range members {
						ms = append(ms, Member{Identity: name})
					}
					if err := a.SetMembers(ms); err != nil {
						t.Fatal(err)
					}
				}
				var removed []uint64
				var kept []Target
				var keptWas []string
				for j, tg := range present {
					if len(removed) < s.remove && was[j] == s.from {
						removed = append(removed, tg.Hash)
					} else {
						kept, keptWas = append(kept, tg), append(keptWas, was[j])
					}
				}
				added := pool[next : next+s.add]
				next += s.add
				a.Update(added, removed)
				got := map[string]int{}
				for name, hs := range a.Assignment() {
					got[name] = len(hs)
				}
				if !maps.Equal(got, s.want) {
					t.Fatalf("step %d: loads %v, want %v", i, got, s.want)
				}
				// Only the targets of members that left, or of none, move.
				for j, o := range membersOf(a, kept) {
					if keptWas[j] != "" && o != keptWas[j] && slices.Contains(members, keptWas[j]) {
						t.Fatalf("step %d: a target of %s moved to %s", i, keptWas[j], o)
					}
				}
				present = append(kept, added...)
			}
		})
	}
}

// A batch is given out in an order of its own, not in the order it came in.
func TestLeastWeightedBatchOrder(t *testing.T) {
	targets := testTargets(1000, "order")
	var got [][]string
	for seed := range uint64(3) {
		a := mustNew(t, LeastWeighted)
		if err := a.SetMembers(shuffled(testMembers(7), seed)); err != nil {
			t.Fatal(err)
		}
		a.SetTargets(shuffled(targets, seed))
		got = append(got, membersOf(a, targets))
	}
	if !slices.Equal(got[0], got[1]) || !slices.Equal(got[0], got[2]) {
		t.Fatal("the assignment depends on the order of the batch")
	}
}
