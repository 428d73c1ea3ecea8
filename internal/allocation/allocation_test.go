package allocation

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		strategy, fallback string
		want               string // strategy, or the start of the error
	}{
		{"", "", ConsistentHashing},
		{ConsistentHashing, "", ConsistentHashing},
		{LeastWeighted, "", LeastWeighted},
		{PerNode, "", PerNode},
		{SeriesWeighted, "", SeriesWeighted},
		{PerNode, ConsistentHashing, PerNode},
		{PerNode, LeastWeighted, PerNode},
		{ConsistentHashing, LeastWeighted, ConsistentHashing}, // ignored, as in the Target Allocator
		{"round-robin", "", `unknown allocation strategy "round-robin": valid strategies are consistent-hashing, least-weighted, per-node, series-weighted`},
		{PerNode, PerNode, `unknown allocation fallback strategy "per-node": valid fallback strategies are consistent-hashing, least-weighted, or none`},
		{ConsistentHashing, "hashing", `unknown allocation fallback strategy "hashing": valid fallback strategies are consistent-hashing, least-weighted, or none`},
	} {
		t.Run(tc.strategy+"/"+tc.fallback, func(t *testing.T) {
			a, err := New(tc.strategy, WithFallback(tc.fallback))
			if err != nil {
				if err.Error() != tc.want {
					t.Fatalf("New: %v, want %s", err, tc.want)
				}
				return
			}
			if a.Strategy() != tc.want {
				t.Fatalf("Strategy() = %s, want %s", a.Strategy(), tc.want)
			}
		})
	}
}

func TestSetMembersRejectsBadNames(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []Member
		want    string
	}{
		{"empty", []Member{{Identity: "a"}, {Identity: ""}}, "empty identity"},
		{"twice", []Member{{Identity: "a"}, {Identity: "b"}, {Identity: "a"}}, `member "a" appears twice`},
	} {
		for _, a := range allStrategies(t) {
			t.Run(tc.name+"/"+a.Strategy(), func(t *testing.T) {
				if err := a.SetMembers([]Member{{Identity: "x"}}); err != nil {
					t.Fatal(err)
				}
				a.SetTargets(testTargets(10, "job"))
				err := a.SetMembers(tc.members)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("SetMembers: %v, want an error with %q", err, tc.want)
				}
				if got := a.Assignment(); len(got) != 1 || len(got["x"]) != 10 {
					t.Fatalf("a failed SetMembers changed the assignment: %v", got)
				}
			})
		}
	}
}

// Every strategy assigns every target to exactly one member, whatever the
// order of events, and Owner agrees with Assignment.
func TestEveryTargetAssignedOnce(t *testing.T) {
	for _, tc := range []struct{ members, targets int }{
		{1, 1}, {3, 2}, {7, 100}, {10, 10_000}, {100, 1000},
	} {
		for _, a := range allStrategies(t) {
			t.Run(fmt.Sprintf("%s/members=%d/targets=%d", a.Strategy(), tc.members, tc.targets), func(t *testing.T) {
				targets := testTargets(tc.targets, "job")
				a.SetTargets(targets[:len(targets)/2]) // before any member
				if got := len(a.Unassigned()); got != len(targets)/2 {
					t.Fatalf("without members %d targets unassigned, want %d", got, len(targets)/2)
				}
				if err := a.SetMembers(testMembers(tc.members)); err != nil {
					t.Fatal(err)
				}
				a.Update(targets[len(targets)/2:], nil)
				a.SetTargets(append(targets, targets[:min(5, len(targets))]...)) // duplicates count once
				checkComplete(t, a, targets)
			})
		}
	}
}

// checkComplete fails unless every target is assigned to exactly one member.
func checkComplete(t *testing.T, a Allocator, targets []Target) {
	t.Helper()
	if u := a.Unassigned(); len(u) > 0 {
		t.Fatalf("%d targets unassigned", len(u))
	}
	seen := make(map[uint64]string, len(targets))
	for member, hs := range a.Assignment() {
		for _, h := range hs {
			if other, ok := seen[h]; ok {
				t.Fatalf("target %x assigned to %s and %s", h, other, member)
			}
			seen[h] = member
		}
	}
	if len(seen) != len(targets) {
		t.Fatalf("%d targets assigned, want %d", len(seen), len(targets))
	}
	for _, tg := range targets {
		if o, ok := a.MemberOf(tg.Hash); !ok || o != seen[tg.Hash] {
			t.Fatalf("Owner(%x) = %q, %v; Assignment says %q", tg.Hash, o, ok, seen[tg.Hash])
		}
	}
}

func TestRemovedTargetsAreGone(t *testing.T) {
	for _, a := range allStrategies(t) {
		t.Run(a.Strategy(), func(t *testing.T) {
			if err := a.SetMembers(testMembers(3)); err != nil {
				t.Fatal(err)
			}
			targets := testTargets(100, "job")
			a.SetTargets(targets)
			a.Update(nil, append(hashes(targets[:10]), 12345)) // an unknown hash is ignored
			a.SetTargets(targets[20:])
			checkComplete(t, a, targets[20:])
			if _, ok := a.MemberOf(targets[15].Hash); ok {
				t.Fatal("a removed target is still assigned")
			}
		})
	}
}

// allStrategies returns a fresh allocator of every strategy, per-node with a
// fallback so that it too assigns every target.
func allStrategies(t testing.TB) []Allocator {
	var out []Allocator
	for _, s := range Strategies() {
		a, err := New(s, WithFallback(ConsistentHashing))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func mustNew(t testing.TB, strategy string, opts ...Option) Allocator {
	t.Helper()
	a, err := New(strategy, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func testMembers(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Identity: "collector-" + strconv.Itoa(i)}
	}
	return ms
}

// testTargets returns n targets hashed the way a caller would: FNV-1a of the
// job and the address.
func testTargets(n int, job string) []Target {
	ts := make([]Target, n)
	for i := range ts {
		ts[i] = Target{Hash: targetHash(job, i)}
	}
	return ts
}

func targetHash(job string, i int) uint64 {
	return fnv1a(job + "/10." + strconv.Itoa(i>>16) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255) + ":9100")
}

func hashes(ts []Target) []uint64 {
	out := make([]uint64, len(ts))
	for i, t := range ts {
		out[i] = t.Hash
	}
	return out
}

// membersOf returns each target's member, "" for none.
func membersOf(a Allocator, targets []Target) []string {
	out := make([]string, len(targets))
	for i, tg := range targets {
		out[i], _ = a.MemberOf(tg.Hash)
	}
	return out
}

// balance returns the smallest and the largest share and the average.
func balance(assignment map[string][]uint64) (lo, hi int, avg float64) {
	lo, total := int(^uint(0)>>1), 0
	for _, hs := range assignment {
		lo, hi, total = min(lo, len(hs)), max(hi, len(hs)), total+len(hs)
	}
	return lo, hi, float64(total) / float64(len(assignment))
}

func shuffled[T any](s []T, seed uint64) []T {
	s = slices.Clone(s)
	rand.New(rand.NewPCG(seed, 1)).Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

// An Update moves no target beyond those it adds and those Displaced names
// before or after it, with the bounds binding (few targets a member) and not,
// and with pinned targets and a limit that binds.
func TestUpdateMovesOnlyAddedAndDisplaced(t *testing.T) {
	for _, perMember := range []int{3, 20, 1000} {
		for _, limited := range []bool{false, true} {
			strategies := allStrategies(t)
			if limited {
				strategies = nil
				for _, s := range Strategies() {
					strategies = append(strategies, mustNew(t, s, WithFallback(ConsistentHashing), WithLimit(perMember*9/10+1)))
				}
			}
			for _, a := range strategies {
				t.Run(fmt.Sprintf("%s/%d/limited=%t", a.Strategy(), perMember, limited), func(t *testing.T) {
					r := rand.New(rand.NewPCG(uint64(perMember), 2))
					members := testMembers(10)
					for i := range members {
						members[i].Node = "node-" + strconv.Itoa(i%7) // per-node: some fall back
					}
					if err := a.SetMembers(members); err != nil {
						t.Fatal(err)
					}
					pool := testTargets(20*perMember, "pool")
					for i := range pool {
						pool[i].Node = "node-" + strconv.Itoa(i%11)
						if limited && i%9 == 0 {
							pool[i].Pin = "collector-" + strconv.Itoa(i%12) // some to no member
						}
					}
					current := pool[:10*perMember]
					a.SetTargets(current)
					bound, overLimit := 0, 0
					for round := range 30 {
						before := membersOf(a, pool)
						displaced := a.Displaced()
						bound += len(displaced)
						overLimit += a.Counts().OverLimit
						// Replace a random tenth of the current targets with others of the pool.
						in := map[uint64]bool{}
						for _, tg := range current {
							in[tg.Hash] = true
						}
						var added []Target
						var removed []uint64
						for _, tg := range pool {
							switch {
							case in[tg.Hash] && r.IntN(10) == 0:
								removed = append(removed, tg.Hash)
							case !in[tg.Hash] && r.IntN(10) == 0:
								added = append(added, tg)
							}
						}
						a.Update(added, removed)
						may := map[uint64]bool{}
						for _, h := range append(displaced, a.Displaced()...) {
							may[h] = true
						}
						for _, tg := range added {
							may[tg.Hash] = true
						}
						after := membersOf(a, pool)
						for i, tg := range pool {
							if before[i] != "" && after[i] != "" && before[i] != after[i] && !may[tg.Hash] {
								t.Fatalf("round %d: target %x moved from %s to %s, neither added nor displaced", round, tg.Hash, before[i], after[i])
							}
						}
						for _, h := range removed {
							delete(in, h)
						}
						for _, tg := range added {
							in[tg.Hash] = true
						}
						current = current[:0:0]
						for _, tg := range pool {
							if in[tg.Hash] {
								current = append(current, tg)
							}
						}
					}
					if a.Strategy() == ConsistentHashing && perMember == 3 && bound == 0 {
						t.Fatal("the bounds never bound: the test does not exercise displaced targets")
					}
					if limited && overLimit == 0 {
						t.Fatal("the limit never bound: the test does not exercise it")
					}
				})
			}
		}
	}
}

// Ranking many targets on every core gives the answer of one core: enough
// targets and members that eachPart splits the work.
func TestEveryCoreGivesOneCoresAnswer(t *testing.T) {
	const n, m = 30_000, 100 // 3M scores, above parallelWork
	if n*m < 2*parallelWork {
		t.Fatal("too little work to be split")
	}
	members := make([]Member, m)
	for i := range members {
		members[i] = Member{Identity: fmt.Sprintf("collector-%d", i), Node: fmt.Sprintf("node-%d", i)}
	}
	targets := make([]Target, n)
	for i := range targets {
		// Nodes of members, nodes without one, and none (the fallback's).
		node := ""
		if i%7 != 0 {
			node = fmt.Sprintf("node-%d", i%(m+m/5))
		}
		targets[i] = Target{Hash: targetHash("job", i), Node: node, Job: "job"}
	}
	for _, strategy := range []string{ConsistentHashing, PerNode} {
		t.Run(strategy, func(t *testing.T) {
			assign := func(procs int) map[string][]uint64 {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				a, err := New(strategy, WithFallback(ConsistentHashing))
				if err != nil {
					t.Fatal(err)
				}
				if err := a.SetMembers(members); err != nil {
					t.Fatal(err)
				}
				a.SetTargets(targets)
				a.Update(targets[:n/10], nil) // present already: no change
				a.Update(nil, []uint64{targets[1].Hash, targets[2].Hash})
				return a.Assignment()
			}
			one, every := assign(1), assign(4)
			if len(one) < m/2 {
				t.Fatalf("%d members hold targets, want most of %d", len(one), m)
			}
			if !maps.EqualFunc(one, every, slices.Equal) {
				t.Fatal("the assignment on four cores differs from that on one")
			}
		})
	}
}

// MembersOf looks up on every core what MemberOf says target by target,
// unknown targets and those of no member ("") included (run with -race:
// the lookups only read).
func TestMembersOfIsMemberOf(t *testing.T) {
	const n = 2 * parallelWork / lookupWork // split over the cores
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	a, err := New(PerNode) // targets of a node without a member have none
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetMembers([]Member{{Identity: "a", Node: "node-0"}, {Identity: "b", Node: "node-1"}}); err != nil {
		t.Fatal(err)
	}
	hashes := make([]uint64, n)
	var targets []Target
	for i := range hashes {
		hashes[i] = targetHash("job", i)
		if i%5 != 0 { // the others are unknown
			targets = append(targets, Target{Hash: hashes[i], Node: fmt.Sprintf("node-%d", i%3), Job: "job"})
		}
	}
	a.SetTargets(targets)
	got := MembersOf(a, n, func(i int) uint64 { return hashes[i] })
	held := map[string]int{}
	for i, h := range hashes {
		want, _ := a.MemberOf(h)
		if got[i] != want {
			t.Fatalf("target %d: MembersOf says %q, MemberOf %q", i, got[i], want)
		}
		held[want]++
	}
	if held["a"] == 0 || held["b"] == 0 || held[""] == 0 {
		t.Fatalf("members held %v: want targets of each and of none", held)
	}
}
