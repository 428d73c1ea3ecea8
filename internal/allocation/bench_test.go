package allocation

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Each op allocates from scratch: targets with their hashes computed
// beforehand, a fresh allocator, set the members, set the targets.
// per-node also runs with 1000 members (a DaemonSet on 1000 nodes), which
// must allocate 1M targets within its time for 100.
func BenchmarkAllocate(b *testing.B) {
	for _, strategy := range Strategies() {
		b.Run("strategy="+strategy, func(b *testing.B) {
			for _, n := range []int{10_000, 100_000, 1_000_000} {
				b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
					sizes := []int{10, 100}
					if strategy == PerNode {
						sizes = append(sizes, 1000)
					}
					for _, m := range sizes {
						b.Run(fmt.Sprintf("members=%d", m), func(b *testing.B) {
							members, targets := benchMembers(m), benchTargets(n, m)
							var a Allocator
							b.ReportAllocs()
							for b.Loop() {
								a = benchNew(b, strategy)
								if err := a.SetMembers(members); err != nil {
									b.Fatal(err)
								}
								a.SetTargets(targets)
							}
							reportBalance(b, a, n)
						})
					}
				})
			}
		})
	}
}

// BenchmarkPerNodeAlone is per-node's allocation of BenchmarkAllocate
// as configured by default, without allocation_fallback_strategy: the
// twelfth of the targets without a node stay unassigned, as do those on a
// node without a member, so that the time is per-node's own placing, which
// does not grow with the members (a DaemonSet of 100 or of 1000 nodes);
// with the consistent-hashing fallback, ranking the node-less targets
// among every member does.
func BenchmarkPerNodeAlone(b *testing.B) {
	const n = 1_000_000
	for _, m := range []int{100, 1000} {
		b.Run(fmt.Sprintf("targets=%d/members=%d", n, m), func(b *testing.B) {
			members, targets := benchMembers(m), benchTargets(n, m)
			var a Allocator
			b.ReportAllocs()
			for b.Loop() {
				a = benchNew(b, PerNode, WithFallback("")) // the default: none
				if err := a.SetMembers(members); err != nil {
					b.Fatal(err)
				}
				a.SetTargets(targets)
			}
			onNode := map[string]bool{}
			for _, mb := range members {
				onNode[mb.Node] = true
			}
			want := 0
			for _, t := range targets {
				if !onNode[t.Node] {
					want++
				}
			}
			if u := len(a.Unassigned()); u != want || want < n/12 {
				b.Fatalf("%d targets unassigned, want the %d without a node or a member on it", u, want)
			}
		})
	}
}

// Join and leave are measured for the strategies whose assignment is a
// function of members and targets, so that each op can start from the same
// state; least-weighted remembers its history.
var membershipStrategies = []string{ConsistentHashing, PerNode}

// BenchmarkJoin times one member joining; moved% is the share of targets that
// changed member, ideal% is 1/(N+1).
func BenchmarkJoin(b *testing.B) {
	for _, strategy := range membershipStrategies {
		b.Run("strategy="+strategy, func(b *testing.B) {
			benchMembership(b, strategy, func(ms []Member) ([]Member, []Member) {
				return ms, append(ms[:len(ms):len(ms)], Member{Identity: "newcomer", Node: "node-newcomer"})
			})
		})
	}
}

// BenchmarkLeave times one member leaving; moved% should equal its share.
func BenchmarkLeave(b *testing.B) {
	for _, strategy := range membershipStrategies {
		b.Run("strategy="+strategy, func(b *testing.B) {
			benchMembership(b, strategy, func(ms []Member) ([]Member, []Member) {
				return ms, ms[1:]
			})
		})
	}
}

func benchMembership(b *testing.B, strategy string, change func([]Member) (before, after []Member)) {
	const n, m = 1_000_000, 100
	b.Run(fmt.Sprintf("targets=%d/members=%d", n, m), func(b *testing.B) {
		before, after := change(benchMembers(m))
		targets := benchTargets(n, m)
		a := benchNew(b, strategy)
		a.SetTargets(targets)
		var moved int
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			if err := a.SetMembers(before); err != nil {
				b.Fatal(err)
			}
			var was []string
			if i == 0 { // the moves are the same every time
				was = benchOwners(a, targets)
			}
			b.StartTimer()
			if err := a.SetMembers(after); err != nil {
				b.Fatal(err)
			}
			if i == 0 {
				b.StopTimer()
				for j, o := range benchOwners(a, targets) {
					if o != was[j] {
						moved++
					}
				}
				b.StartTimer()
			}
		}
		b.ReportMetric(100*float64(moved)/float64(n), "moved%")
		b.ReportMetric(100/float64(max(len(before), len(after))), "ideal%")
	})
}

// BenchmarkIncremental times an update that removes 1 % of the targets and
// adds as many new ones.
func BenchmarkIncremental(b *testing.B) {
	for _, strategy := range Strategies() {
		b.Run("strategy="+strategy, func(b *testing.B) {
			for _, n := range []int{100_000, 1_000_000} {
				const m = 100
				b.Run(fmt.Sprintf("targets=%d/members=%d", n, m), func(b *testing.B) {
					targets := benchTargets(n, m)
					k := n / 100
					fresh := make([]Target, k)
					for i := range fresh {
						fresh[i] = Target{Hash: mix(uint64(i) + 1<<62), Node: targets[i].Node, Job: targets[i].Job}
					}
					old, new := hashes(targets[:k]), hashes(fresh)
					a := benchNew(b, strategy)
					if err := a.SetMembers(benchMembers(m)); err != nil {
						b.Fatal(err)
					}
					a.SetTargets(targets)
					b.ReportAllocs()
					swap := false
					for b.Loop() {
						// Alternate, so that every op changes 1 % and the set stays the same size.
						if swap {
							a.Update(targets[:k], new)
						} else {
							a.Update(fresh, old)
						}
						swap = !swap
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(2*k), "ns/changed")
				})
			}
		})
	}
}

// BenchmarkLimit times a full allocation, and an update of 1 % of the
// targets, while the limit binds: 100 members may hold 9000 of the 1M
// targets each, so that 100k of them (per-node: those its fallback cannot
// place in the room the nodes leave) stay unassigned.
func BenchmarkLimit(b *testing.B) {
	const n, m, limit = 1_000_000, 100, 9000
	for _, strategy := range Strategies() {
		b.Run("strategy="+strategy, func(b *testing.B) {
			members, targets := benchMembers(m), benchTargets(n, m)
			b.Run("full", func(b *testing.B) {
				var a Allocator
				b.ReportAllocs()
				for b.Loop() {
					a = benchNew(b, strategy, WithLimit(limit))
					if err := a.SetMembers(members); err != nil {
						b.Fatal(err)
					}
					a.SetTargets(targets)
				}
				b.ReportMetric(float64(a.Counts().OverLimit), "over-limit")
			})
			b.Run("incremental", func(b *testing.B) {
				k := n / 100
				fresh := make([]Target, k)
				for i := range fresh {
					fresh[i] = Target{Hash: mix(uint64(i) + 1<<62), Node: targets[i].Node, Job: targets[i].Job}
				}
				old, new := hashes(targets[:k]), hashes(fresh)
				a := benchNew(b, strategy, WithLimit(limit))
				if err := a.SetMembers(members); err != nil {
					b.Fatal(err)
				}
				a.SetTargets(targets)
				b.ReportAllocs()
				swap := false
				for b.Loop() {
					if swap {
						a.Update(targets[:k], new)
					} else {
						a.Update(fresh, old)
					}
					swap = !swap
				}
			})
		})
	}
}

func benchNew(b *testing.B, strategy string, opts ...Option) Allocator {
	a, err := New(strategy, append([]Option{WithFallback(ConsistentHashing)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// benchMembers returns m members, each on a node of its own.
func benchMembers(m int) []Member {
	ms := make([]Member, m)
	for i := range ms {
		ms[i] = Member{Identity: fmt.Sprintf("collector-%d", i), Node: fmt.Sprintf("node-%d", i)}
	}
	return ms
}

var benchHashes = map[int][]uint64{}

// benchJobs is how many jobs the targets of benchTargets belong to.
const benchJobs = 100

// benchTargets returns n targets of benchJobs jobs, each job's together as
// the leader passes them, on m + m/5 nodes, so that for per-node one target
// in twelve has no member on its node, and another twelfth (on the last
// m/10 "nodes") has no node and goes to the fallback.
func benchTargets(n, m int) []Target {
	hs, ok := benchHashes[n]
	if !ok {
		hs = make([]uint64, n)
		for i := range hs {
			hs[i] = targetHash("bench", i)
		}
		benchHashes[n] = hs
	}
	nodes := make([]string, m+m/5)
	for i := range m + m/10 {
		nodes[i] = fmt.Sprintf("node-%d", i)
	}
	jobs := make([]string, benchJobs)
	for i := range jobs {
		jobs[i] = fmt.Sprintf("job-%d", i)
	}
	ts := make([]Target, n)
	for i, h := range hs {
		ts[i] = Target{Hash: h, Node: nodes[i%len(nodes)], Job: jobs[i*benchJobs/n]}
	}
	return ts
}

func benchOwners(a Allocator, targets []Target) []string {
	out := make([]string, len(targets))
	for i, tg := range targets {
		out[i], _ = a.MemberOf(tg.Hash)
	}
	return out
}

// reportBalance reports the largest and the smallest share against the average.
func reportBalance(b *testing.B, a Allocator, n int) {
	b.StopTimer()
	lo, hi, avg := balance(a.Assignment())
	b.ReportMetric(float64(hi)/avg, "max/avg")
	b.ReportMetric(float64(lo)/avg, "min/avg")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/target")
}

// BenchmarkSeriesWeighted times series-weighted at 100 000 targets of skewed
// sizes (skewedWeights: five of 100 000 series, a thousand of 5 000 to
// 20 000, the rest 10 to 510) over 100 members. measure: a rebalance on new
// measurements that wobble by up to 2 % (nothing moves); rebalance: one on
// measurements where one member's targets grew by half; join: a member
// joining a balanced group. moved/ideal is the load that moved over the
// newcomer's ideal share; max/avg and min/avg are the members' loads after.
func BenchmarkSeriesWeighted(b *testing.B) {
	const n, m = 100_000, 100
	setup := func(b *testing.B) (Allocator, []Target, map[uint64]int64) {
		a, targets := newSW(b, n, m)
		weights := skewedWeights(targets, 5, 9)
		a.Measure(reported(a, weights))
		return a, targets, weights
	}
	report := func(b *testing.B, a Allocator, weights map[uint64]int64) {
		load, own := loads(a, weights)
		var total, k, lo, hi int64
		for mb, l := range load {
			if own[mb] {
				continue
			}
			total, k = total+l, k+1
			if lo == 0 || l < lo {
				lo = l
			}
			hi = max(hi, l)
		}
		b.ReportMetric(float64(hi*k)/float64(total), "max/avg")
		b.ReportMetric(float64(lo*k)/float64(total), "min/avg")
	}
	b.Run(fmt.Sprintf("targets=%d/members=%d/measure", n, m), func(b *testing.B) {
		a, _, weights := setup(b)
		r := rand.New(rand.NewPCG(1, 1))
		var wobbled [2][]Measurement
		for j := range wobbled {
			for _, x := range reported(a, weights) {
				x.Series += x.Series * (r.Int64N(41) - 20) / 1000
				wobbled[j] = append(wobbled[j], x)
			}
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			a.Measure(wobbled[i%2])
			i++
		}
		report(b, a, weights)
	})
	b.Run(fmt.Sprintf("targets=%d/members=%d/rebalance", n, m), func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			a, targets, weights := setup(b)
			grown := reported(a, weights)
			victim, _ := a.MemberOf(targets[0].Hash)
			for j := range grown {
				if grown[j].Member == victim {
					grown[j].Series += grown[j].Series / 2
				}
			}
			b.StartTimer()
			a.Measure(grown)
		}
	})
	b.Run(fmt.Sprintf("targets=%d/members=%d/join", n, m), func(b *testing.B) {
		var moved, ideal int64
		var a Allocator
		var weights map[uint64]int64
		for b.Loop() {
			b.StopTimer()
			var targets []Target
			a, targets, weights = setup(b)
			before := memberMap(a, targets)
			b.StartTimer()
			if err := a.SetMembers(append(benchMembers(m), Member{Identity: "newcomer"})); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			moved, _ = movedLoad(before, memberMap(a, targets), weights)
			var total int64
			for _, w := range weights {
				total += w
			}
			ideal = total / (m + 1)
			b.StartTimer()
		}
		b.ReportMetric(float64(moved)/float64(ideal), "moved/ideal")
		report(b, a, weights)
	})
}
