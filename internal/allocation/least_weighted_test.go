package allocation

import (
	"fmt"
	"maps"
	"math/rand/v2"
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
	targets := jobTargets(4, 250)
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

// Among the members with the fewest targets, a target goes to the one with
// the fewest of its job, then to the smaller name, as in the Target
// Allocator.
func TestLeastWeightedTiesByJob(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []string
		adds    []string // one target of each job, one Update each
		want    []string // the member of each
	}{
		{"the fewest of the job, not the smaller name",
			[]string{"a", "b"},
			[]string{"x", "y", "x", "y"},
			[]string{"a", "b", "b", "a"}},
		{"the fewest targets first, whatever the job",
			[]string{"a", "b", "c"},
			[]string{"x", "x", "y", "x", "x"},
			[]string{"a", "b", "c", "c", "a"}},
		{"then the smaller name",
			[]string{"c", "b", "a"},
			[]string{"x", "y", "z", "z", "y", "x"},
			[]string{"a", "b", "c", "a", "c", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, LeastWeighted)
			var ms []Member
			for _, name := range tc.members {
				ms = append(ms, Member{Identity: name})
			}
			if err := a.SetMembers(ms); err != nil {
				t.Fatal(err)
			}
			var got []string
			for i, job := range tc.adds {
				tg := Target{Hash: targetHash(job, i), Job: job}
				a.Update([]Target{tg}, nil)
				m, _ := a.MemberOf(tg.Hash)
				got = append(got, m)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("members %q, want %q", got, tc.want)
			}
		})
	}
}

// Given out together, each job's targets end up spread over the members:
// no member has more than three of a job above another.
func TestLeastWeightedSpreadsEachJob(t *testing.T) {
	for _, tc := range []struct{ members, jobs, perJob int }{
		{7, 5, 100}, {10, 3, 1000}, {100, 50, 300},
	} {
		t.Run(fmt.Sprintf("members=%d/jobs=%d/targets=%d", tc.members, tc.jobs, tc.perJob), func(t *testing.T) {
			a := mustNew(t, LeastWeighted)
			if err := a.SetMembers(testMembers(tc.members)); err != nil {
				t.Fatal(err)
			}
			targets := jobTargets(tc.jobs, tc.perJob)
			a.SetTargets(targets)
			perJob := map[string]map[string]int{}
			for i, m := range membersOf(a, targets) {
				if perJob[targets[i].Job] == nil {
					perJob[targets[i].Job] = map[string]int{}
				}
				perJob[targets[i].Job][m]++
			}
			for job, counts := range perJob {
				lo, hi := tc.perJob, 0
				for _, m := range testMembers(tc.members) {
					lo, hi = min(lo, counts[m.Identity]), max(hi, counts[m.Identity])
				}
				if hi-lo > 3 {
					t.Fatalf("job %s: members hold %d to %d of its targets, want at most 3 apart", job, lo, hi)
				}
			}
		})
	}
}

// The per-job counts follow every change: targets and members coming and
// going, jobs emptied and new ones taking their numbers.
func TestLeastWeightedJobCounts(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	const jobs = 12
	pool := jobTargets(jobs, 5)
	names := testMembers(8)
	present := map[uint64]bool{}
	a := mustNew(t, LeastWeighted)
	lw := a.(*pinning).strategy.(*leastWeighted)
	emptied := 0
	for step := range 400 {
		switch r.IntN(5) {
		case 0:
			var ms []Member
			for _, m := range names {
				if r.IntN(2) == 0 {
					ms = append(ms, m)
				}
			}
			if err := a.SetMembers(ms); err != nil {
				t.Fatal(err)
			}
		default:
			var added []Target
			var removed []uint64
			picked := map[uint64]bool{}
			for range 1 + r.IntN(12) {
				tg := pool[r.IntN(len(pool))]
				if picked[tg.Hash] {
					continue
				}
				picked[tg.Hash] = true
				if present[tg.Hash] {
					removed, present[tg.Hash] = append(removed, tg.Hash), false
				} else {
					added, present[tg.Hash] = append(added, tg), true
				}
			}
			a.Update(added, removed)
		}
		want := map[string][]int32{}
		targets := map[string]int{}
		for _, tg := range pool {
			if !present[tg.Hash] {
				continue
			}
			if want[tg.Job] == nil {
				want[tg.Job] = make([]int32, lw.members.len())
			}
			targets[tg.Job]++
			if m, ok := a.MemberOf(tg.Hash); ok {
				want[tg.Job][lw.members.index[m]]++
			}
		}
		if len(lw.jobs.index) != len(want) || len(lw.jobs.jobs) > jobs {
			t.Fatalf("step %d: %d jobs numbered out of %d numbers, want %d out of at most %d", step, len(lw.jobs.index), len(lw.jobs.jobs), len(want), jobs)
		}
		emptied += jobs - len(want)
		for job, load := range want {
			jl := lw.jobs.jobs[lw.jobs.index[job]]
			least, atLeast := int32(0), int32(0)
			if len(load) > 0 {
				least = slices.Min(load)
			}
			for _, c := range load {
				if c == least {
					atLeast++
				}
			}
			if jl.name != job || jl.targets != targets[job] || !slices.Equal(jl.load, load) || jl.least != least || jl.atLeast != atLeast {
				t.Fatalf("step %d: job %s counted %+v, want %d targets, load %v, least %d on %d members", step, job, jl, targets[job], load, least, atLeast)
			}
		}
	}
	if emptied == 0 {
		t.Fatal("no job was ever emptied: the test does not exercise freed numbers")
	}
}

// jobTargets returns perJob targets of each of jobs jobs.
func jobTargets(jobs, perJob int) []Target {
	var out []Target
	for j := range jobs {
		job := fmt.Sprint("job-", j)
		for _, tg := range testTargets(perJob, job) {
			tg.Job = job
			out = append(out, tg)
		}
	}
	return out
}
