package leader

import (
	"fmt"
	"runtime"
	"testing"

	promconfig "github.com/prometheus/prometheus/config"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
)

// benchState is a leader's state at n targets in 10 jobs over m members,
// with every share encoded once, as after the members' first polls.
func benchState(b *testing.B, n, m int) (*state, *fleet) {
	b.Helper()
	f := newFleet(1, 10, n/10)
	alloc, err := allocation.New(allocation.ConsistentHashing)
	if err != nil {
		b.Fatal(err)
	}
	s, err := newState(alloc, map[string]*promconfig.ScrapeConfig{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.setMembers(members(m)); err != nil {
		b.Fatal(err)
	}
	s.setTargets(f.snapshot())
	a := s.allocation(1, "collector-0")
	for _, job := range a.Jobs() {
		for _, c := range a.Members {
			a.Share(job, c).Answer()
		}
	}
	return s, f
}

// BenchmarkChange is the leader's work for a change of 1 % of the targets
// (a third replaced, a third relabeled, a third on other nodes) in each of
// ten jobs: diff, allocator update, the changed shares rebuilt, a new
// allocation. The answers are encoded again outside the timer: see
// BenchmarkEncode in internal/allocatorapi.
func BenchmarkChange(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("targets=%d/members=100", n), func(b *testing.B) {
			s, f := benchState(b, n, 100)
			snaps := make([]discovery.Snapshot, 0, 64)
			for range 64 {
				snaps = append(snaps, f.changeAll(0.01))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i == len(snaps) {
					b.StopTimer()
					for range 64 {
						snaps = append(snaps, f.changeAll(0.01))
					}
					b.StartTimer()
				}
				s.setTargets(snaps[i])
				a := s.allocation(1, "collector-0")
				b.StopTimer()
				for _, job := range a.Jobs() {
					for _, c := range a.Members {
						a.Share(job, c).Answer()
					}
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkJoin is the leader's work for one member joining 100 at 1M
// targets: the allocator, the targets that moved, the changed shares.
func BenchmarkJoin(b *testing.B) {
	s, _ := benchState(b, 1_000_000, 100)
	before, after := members(100), members(101)
	runtime.GC() // the setup's garbage, collected outside the timer
	b.ReportAllocs()
	b.ResetTimer()
	moved := 0
	for i := 0; i < b.N; i++ {
		ms := after
		if i%2 == 1 {
			ms = before
		}
		if _, err := s.setMembers(ms); err != nil {
			b.Fatal(err)
		}
		s.allocation(1, "collector-0")
		moved += s.takeMoved()
	}
	b.ReportMetric(float64(moved)/float64(b.N), "moved/op")
}
