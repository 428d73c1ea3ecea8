package allocation

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// MovedByMembers names every target whose member a SetMembers changed
// (to another member, to none or from none), over joins, leaves, a member
// replaced and a change of nodes alone, with the bounds binding (few targets
// a member) and not, with pinned targets and a limit that binds.
func TestMovedByMembersNamesEveryMovedTarget(t *testing.T) {
	for _, perMember := range []int{3, 20, 1000} {
		for _, limited := range []bool{false, true} {
			var opts []Option
			if limited {
				opts = append(opts, WithLimit(perMember*9/10+1))
			}
			t.Run(fmt.Sprintf("%d/limited=%t", perMember, limited), func(t *testing.T) {
				a := mustNew(t, ConsistentHashing, opts...)
				r := rand.New(rand.NewPCG(uint64(perMember), 3))
				pool := testMembers(14)
				for i := range pool {
					pool[i].Node = "node-" + strconv.Itoa(i%5)
				}
				members := slices.Clone(pool[:10])
				if err := a.SetMembers(members); err != nil {
					t.Fatal(err)
				}
				targets := testTargets(10*perMember, "job")
				for i := range targets {
					if i%9 == 0 {
						targets[i].Pin = "collector-" + strconv.Itoa(i%16) // some to no member
					}
				}
				a.SetTargets(targets)
				if _, ok := a.MovedByMembers(); ok {
					t.Fatal("MovedByMembers after SetTargets: ok, want not")
				}
				movedInAll, overLimit := 0, 0
				for round := range 40 {
					before := membersOf(a, targets)
					displacedBefore := len(a.Displaced())
					next := slices.Clone(members)
					switch op := r.IntN(4); {
					case op == 0 && len(next) < len(pool): // a join
						for _, m := range pool {
							if !slices.ContainsFunc(next, func(n Member) bool { return n.Identity == m.Identity }) {
								next = append(next, m)
								break
							}
						}
					case op == 1 && len(next) > 2: // a leave
						i := r.IntN(len(next))
						next = slices.Delete(next, i, i+1)
					case op == 2: // one member replaced by another
						i := r.IntN(len(next))
						for _, m := range shuffled(pool, uint64(round)) {
							if !slices.ContainsFunc(next, func(n Member) bool { return n.Identity == m.Identity }) {
								next[i] = m
								break
							}
						}
					default: // nodes alone
						for i := range next {
							next[i].Node = "node-" + strconv.Itoa(r.IntN(5))
						}
					}
					if err := a.SetMembers(next); err != nil {
						t.Fatal(err)
					}
					members = next
					moved, ok := a.MovedByMembers()
					if !ok {
						t.Fatalf("round %d: consistent-hashing does not follow what SetMembers moves", round)
					}
					may := map[uint64]bool{}
					for _, h := range moved {
						may[h] = true
					}
					after := membersOf(a, targets)
					movedNow := 0
					for i, tg := range targets {
						if before[i] != after[i] {
							movedNow++
							if !may[tg.Hash] {
								t.Fatalf("round %d: target %x moved from %q to %q, and MovedByMembers does not name it", round, tg.Hash, before[i], after[i])
							}
						}
					}
					movedInAll += movedNow
					// Beyond the moved targets it names only pinned ones, and
					// those the bounds hold off their home (Displaced), which a
					// pin's member joining or leaving may move.
					if pinned := (len(targets) + 8) / 9; displacedBefore+len(a.Displaced()) == 0 && len(may) > movedNow+pinned {
						t.Errorf("round %d: MovedByMembers names %d targets; %d moved, %d are pinned", round, len(may), movedNow, pinned)
					}
					overLimit += a.Counts().OverLimit
				}
				if movedInAll == 0 {
					t.Fatal("no target ever moved: the test exercises nothing")
				}
				if limited && overLimit == 0 {
					t.Fatal("the limit never bound: the test does not exercise it")
				}
			})
		}
	}
}

// The strategies that do not follow what a change of members moves say so.
func TestMovedByMembersOnlyWhereFollowed(t *testing.T) {
	for _, a := range allStrategies(t) {
		if err := a.SetMembers(testMembers(3)); err != nil {
			t.Fatal(err)
		}
		a.SetTargets(testTargets(30, "job"))
		if err := a.SetMembers(testMembers(4)); err != nil {
			t.Fatal(err)
		}
		if _, ok := a.MovedByMembers(); ok != (a.Strategy() == ConsistentHashing) {
			t.Errorf("%s: MovedByMembers ok = %t", a.Strategy(), ok)
		}
	}
}

// With a series limit, a change of members cuts or restores targets of the
// members whose series load changed, whatever their home: MovedByMembers
// names those too.
func TestMovedByMembersNamesEveryMovedTargetWithSeriesLimit(t *testing.T) {
	a := mustNew(t, ConsistentHashing, WithSeriesLimit(1100))
	r := rand.New(rand.NewPCG(7, 11))
	pool := testMembers(14)
	members := slices.Clone(pool[:10])
	if err := a.SetMembers(members); err != nil {
		t.Fatal(err)
	}
	targets := testTargets(400, "job")
	a.SetTargets(targets)
	ms := make([]Measurement, len(targets))
	for i, tg := range targets {
		ms[i] = Measurement{Hash: tg.Hash, Series: int64(1 + r.IntN(60))} // about 1200 a member of 10
	}
	a.Measure(ms)
	movedInAll, overLimit := 0, 0
	for round := range 40 {
		before := membersOf(a, targets)
		next := slices.Clone(members)
		if op := r.IntN(2); op == 0 && len(next) < len(pool) { // a join
			for _, m := range pool {
				if !slices.ContainsFunc(next, func(n Member) bool { return n.Identity == m.Identity }) {
					next = append(next, m)
					break
				}
			}
		} else if len(next) > 6 { // a leave
			i := r.IntN(len(next))
			next = slices.Delete(next, i, i+1)
		}
		if err := a.SetMembers(next); err != nil {
			t.Fatal(err)
		}
		members = next
		moved, ok := a.MovedByMembers()
		if !ok {
			continue // the leader asks every target: correct too
		}
		may := map[uint64]bool{}
		for _, h := range moved {
			may[h] = true
		}
		after := membersOf(a, targets)
		for i, tg := range targets {
			if before[i] != after[i] {
				movedInAll++
				if !may[tg.Hash] {
					t.Fatalf("round %d: target %x moved from %q to %q, and MovedByMembers does not name it", round, tg.Hash, before[i], after[i])
				}
			}
		}
		overLimit += a.Counts().OverLimit
	}
	if movedInAll == 0 {
		t.Fatal("no target ever moved: the test exercises nothing")
	}
	if overLimit == 0 {
		t.Fatal("the series limit never bound: the test does not exercise it")
	}
}
