package leader

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
)

// fleet is a test's source of snapshots: jobs of targets it changes at random.
type fleet struct {
	r    *rand.Rand
	jobs map[string][]discovery.Target
	next int
	pins bool // pin a tenth of the targets to members, joiners or none
}

func newFleet(seed uint64, jobs, perJob int) *fleet {
	f := &fleet{r: rand.New(rand.NewPCG(seed, 3)), jobs: map[string][]discovery.Target{}}
	for j := range jobs {
		name := "job-" + strconv.Itoa(j)
		ts := make([]discovery.Target, perJob)
		for i := range ts {
			ts[i] = f.target(name)
		}
		f.jobs[name] = sortTargets(ts)
	}
	return f
}

func (f *fleet) target(job string) discovery.Target {
	f.next++
	addr := fmt.Sprintf("10.%d.%d.%d:9100", f.next>>16&255, f.next>>8&255, f.next&255)
	t := newTarget(
		labels.FromStrings("__address__", addr, "__meta_pod", "pod-"+strconv.Itoa(f.next), "__meta_rev", "0"),
		f.r.Uint64(), "node-"+strconv.Itoa(f.r.IntN(5)))
	t.Pin = f.pin()
	return t
}

// pin returns, for a tenth of the targets when the fleet pins, a member's
// identity, a joiner's or one that never is a member.
func (f *fleet) pin() string {
	if !f.pins || f.r.IntN(10) > 0 {
		return ""
	}
	return [...]string{"collector-1", "collector-4", "joiner-11", "nobody"}[f.r.IntN(4)]
}

func sortTargets(ts []discovery.Target) []discovery.Target {
	slices.SortFunc(ts, func(a, b discovery.Target) int { return cmp.Compare(a.Hash, b.Hash) })
	return ts
}

// change replaces, relabels and moves to other nodes a share of one job's
// targets, and returns the snapshot: other jobs keep their slices.
func (f *fleet) change(share float64) discovery.Snapshot {
	names := slices.Sorted(maps.Keys(f.jobs))
	f.changeJob(names[f.r.IntN(len(names))], share)
	return f.snapshot()
}

// changeAll changes a share of every job's targets.
func (f *fleet) changeAll(share float64) discovery.Snapshot {
	for name := range f.jobs {
		f.changeJob(name, share)
	}
	return f.snapshot()
}

func (f *fleet) changeJob(name string, share float64) {
	var ts []discovery.Target
	for _, t := range f.jobs[name] {
		switch x := f.r.Float64(); {
		case x < share/3: // gone, and another one comes
			ts = append(ts, f.target(name))
		case x < 2*share/3: // new metadata
			t = newTarget(labels.NewBuilder(t.Labels()).Set("__meta_rev", strconv.Itoa(f.next)).Labels(), t.Hash, t.Node)
			f.next++
			ts = append(ts, t)
		case x < share: // rescheduled to another node, pinned anew
			t.Node = "node-" + strconv.Itoa(f.r.IntN(5))
			t.Pin = f.pin()
			ts = append(ts, t)
		default:
			ts = append(ts, t)
		}
	}
	f.jobs[name] = sortTargets(ts)
}

func (f *fleet) snapshot() discovery.Snapshot {
	snap := discovery.Snapshot{Jobs: map[string][]discovery.Target{}}
	for n, ts := range f.jobs {
		snap.Jobs[n] = ts
	}
	return snap
}

func members(n int) []allocation.Member {
	out := make([]allocation.Member, n)
	for i := range out {
		out[i] = allocation.Member{Identity: "collector-" + strconv.Itoa(i), Node: "node-" + strconv.Itoa(i%5)}
	}
	return out
}

// want computes the allocation from scratch: a fresh allocator over the
// whole snapshot, every target asked for its member.
func want(t *testing.T, strategy string, limit int, ms []allocation.Member, snap discovery.Snapshot, configs map[string]*promconfig.ScrapeConfig) *shares.Allocation {
	t.Helper()
	a, err := allocation.New(strategy, allocation.WithFallback(allocation.ConsistentHashing), allocation.WithLimit(limit))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetMembers(ms); err != nil {
		t.Fatal(err)
	}
	var all []allocation.Target
	for job, ts := range snap.Jobs {
		for _, tg := range ts {
			all = append(all, allocation.Target{Hash: tg.Hash, Node: tg.Node, Job: job, Pin: tg.Pin})
		}
	}
	a.SetTargets(all)
	var targets []shares.Placed
	for job, ts := range snap.Jobs {
		for _, tg := range ts {
			member, _ := a.MemberOf(tg.Hash)
			targets = append(targets, shares.Placed{Job: job, Member: member, Target: sharesTarget(tg)})
		}
	}
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Identity
	}
	out, err := sharestest.New(1, "collector-0", names, configs, targets)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// same fails unless two allocations serve the same answers.
func same(t *testing.T, step string, got, want *shares.Allocation) {
	t.Helper()
	if !slices.Equal(got.Jobs(), want.Jobs()) || !slices.Equal(got.Members, want.Members) {
		t.Fatalf("%s: jobs %v members %v, want %v %v", step, got.Jobs(), got.Members, want.Jobs(), want.Members)
	}
	for _, job := range want.Jobs() {
		for _, m := range append(slices.Clone(want.Members), "") {
			g, w := got.Share(job, m).Targets(), want.Share(job, m).Targets()
			if len(g) != len(w) {
				t.Fatalf("%s: job %s member %q: %d targets, want %d", step, job, m, len(g), len(w))
			}
			for i := range g {
				if g[i].Hash != w[i].Hash || g[i].Element != w[i].Element || !labels.Equal(g[i].Labels(), w[i].Labels()) {
					t.Fatalf("%s: job %s member %q: target %d is %v, want %v", step, job, m, i, g[i], w[i])
				}
			}
		}
		if targetCount(got, job) != targetCount(want, job) {
			t.Fatalf("%s: job %s: %d targets, want %d", step, job, targetCount(got, job), targetCount(want, job))
		}
	}
}

// Followed by its changes, the state serves what a computation from
// scratch serves, through target changes (added, gone, relabeled,
// rescheduled, pinned anew), members joining and leaving, with bounds that
// bind (few targets a member) and not, and with pins and a limit that binds.
func TestStateFollowsChanges(t *testing.T) {
	for _, strategy := range allocation.Strategies() {
		for _, tc := range []struct{ perJob, limit int }{{7, 0}, {300, 0}, {7, 4}, {300, 190}} {
			t.Run(fmt.Sprintf("%s/%d/limit=%d", strategy, tc.perJob, tc.limit), func(t *testing.T) {
				perJob := tc.perJob
				configs := map[string]*promconfig.ScrapeConfig{"configured-only": {JobName: "configured-only"}}
				f := newFleet(uint64(perJob), 4, 0)
				f.pins = tc.limit > 0
				for name := range f.jobs {
					for range perJob {
						f.jobs[name] = append(f.jobs[name], f.target(name))
					}
					f.jobs[name] = sortTargets(f.jobs[name])
				}
				alloc, err := allocation.New(strategy, allocation.WithFallback(allocation.ConsistentHashing), allocation.WithLimit(tc.limit))
				if err != nil {
					t.Fatal(err)
				}
				s, err := newState(alloc, configs)
				if err != nil {
					t.Fatal(err)
				}
				ms := members(6)
				if _, err := s.setMembers(ms); err != nil {
					t.Fatal(err)
				}
				snap := f.snapshot()
				s.setTargets(snap)
				same(t, "first", s.allocation(1, "collector-0"), want(t, strategy, tc.limit, ms, snap, configs))
				for step := range 40 {
					switch step % 8 {
					case 3:
						ms = append(ms, allocation.Member{Identity: "joiner-" + strconv.Itoa(step), Node: "node-1"})
						if changed, err := s.setMembers(ms); err != nil || !changed {
							t.Fatalf("join: %v %v", changed, err)
						}
					case 6:
						ms = slices.Delete(slices.Clone(ms), 0, 1)
						if changed, err := s.setMembers(slices.Clone(ms)); err != nil || !changed {
							t.Fatalf("leave: %v %v", changed, err)
						}
					case 5:
						// Measurements of every target, by its member.
						var ms []allocation.Measurement
						for _, ts := range snap.Jobs {
							for _, tg := range ts {
								m, _ := alloc.MemberOf(tg.Hash)
								ms = append(ms, allocation.Measurement{Hash: tg.Hash, Member: m, Series: int64(tg.Hash%1000 + 1)})
							}
						}
						s.measure(ms)
					default:
						snap = f.change(0.1)
						s.setTargets(snap)
					}
					// The series loads kept as targets move are the allocator's.
					if got, want := s.allocation(1, "collector-0").Series, alloc.SeriesLoads(); !maps.Equal(got, want) {
						t.Fatalf("step %d: series loads %v, the allocator's %v", step, got, want)
					}
					if strategy == allocation.SeriesWeighted {
						// Its assignment depends on the previous one: check
						// that the state serves its allocator's.
						followsAllocator(t, s.allocation(1, "collector-0"), alloc, snap)
						continue
					}
					if strategy == allocation.LeastWeighted {
						// Its assignment depends on the order of events: check
						// that every target is served once, by a member.
						checkServedOnce(t, s.allocation(1, "collector-0"), snap)
						continue
					}
					same(t, fmt.Sprintf("step %d", step), s.allocation(1, "collector-0"), want(t, strategy, tc.limit, ms, snap, configs))
				}
				reversed := slices.Clone(ms)
				slices.Reverse(reversed)
				if changed, _ := s.setMembers(reversed); changed {
					t.Fatal("the same members in another order are no change")
				}
			})
		}
	}
}

// followsAllocator fails unless every target is served by the member its
// allocator gives it, and by no other.
func followsAllocator(t *testing.T, a *shares.Allocation, alloc allocation.Allocator, snap discovery.Snapshot) {
	t.Helper()
	checkServedOnce(t, a, snap)
	for job, ts := range snap.Jobs {
		served := map[uint64]string{}
		for _, m := range append(slices.Clone(a.Members), "") {
			for _, tg := range a.Share(job, m).Targets() {
				served[tg.Hash] = m
			}
		}
		for _, tg := range ts {
			want, _ := alloc.MemberOf(tg.Hash)
			if got, ok := served[tg.Hash]; !ok || got != want {
				t.Fatalf("job %s: target %x served by %q (%v), its allocator's member is %q", job, tg.Hash, got, ok, want)
			}
		}
	}
}

// Measurements reach the allocator: series-weighted moves targets so
// that the members' series loads even out, the state serves the moves, and
// the summary shows each member's series load.
func TestStateMeasure(t *testing.T) {
	alloc, err := allocation.New(allocation.SeriesWeighted)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newState(alloc, map[string]*promconfig.ScrapeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.setMembers(members(4)); err != nil {
		t.Fatal(err)
	}
	f := newFleet(5, 2, 200)
	snap := f.snapshot()
	s.setTargets(snap)
	a := s.allocation(1, "collector-0")
	// Every target of collector-0 weighs ten times the others, as the
	// members report them, by their share's labels; a stale report of
	// collector-3's names collector-0's targets too, and is ignored for
	// them, as is a key the leader does not know.
	series := Series{}
	for _, m := range a.Members {
		series[m] = map[string]map[string]int64{}
		for _, job := range a.Jobs() {
			series[m][job] = map[string]int64{"00000000000000ff": 5}
		}
	}
	for _, m := range a.Members {
		for _, job := range a.Jobs() {
			for _, tg := range a.Share(job, m).Targets() {
				n := int64(100)
				if m == "collector-0" {
					n = 1000
					series["collector-3"][job][report.TargetKey(tg.Labels())] = 1
				}
				series[m][job][report.TargetKey(tg.Labels())] = n
			}
		}
	}
	ms := s.measurements(series)
	if len(ms) != 400 {
		t.Fatalf("%d measurements, want one for each of the 400 targets", len(ms))
	}
	for _, m := range ms {
		if want, _ := alloc.MemberOf(m.Hash); m.Member != want {
			t.Fatalf("target %x measured by %s, its member is %s", m.Hash, m.Member, want)
		}
	}
	if !s.measure(ms) {
		t.Fatal("measure reported no change")
	}
	b := s.allocation(1, "collector-0")
	followsAllocator(t, b, alloc, snap)
	if s.takeMoved() == 0 {
		t.Error("no target moved")
	}
	var total int64
	for _, m := range b.Summary().Members {
		total += m.Series
	}
	for _, m := range b.Summary().Members {
		if m.Series*4*10 < total*9 || m.Series*4*10 > total*11 {
			t.Errorf("member %s: series load %d of %d in all, want within 10 %% of the average", m.Identity, m.Series, total)
		}
	}
	if a.Summary().Members[0].Series == b.Summary().Members[0].Series {
		t.Error("the summary's series load did not change")
	}
	if s.measure(ms) {
		t.Error("the same measurements again changed something")
	}
	// A member whose report leaves out its targets (they just moved to
	// it) does not make them weigh the average: they keep their series.
	weight := map[uint64]int64{}
	for _, m := range ms {
		weight[m.Hash] = m.Series
	}
	now := Series{}
	for _, m := range b.Members {
		now[m] = map[string]map[string]int64{}
		for _, job := range b.Jobs() {
			now[m][job] = map[string]int64{}
			for _, tg := range b.Share(job, m).Targets() {
				now[m][job][report.TargetKey(tg.Labels())] = weight[tg.Hash]
			}
		}
	}
	if s.measure(s.measurements(now)) {
		t.Error("the members reporting the assignment they have changed something")
	}
	loads := b.Summary().Members
	delete(now, b.Members[1])
	if s.measure(s.measurements(now)) {
		t.Errorf("a member that reports nothing moved targets or changed loads")
	}
	for i, m := range s.allocation(1, "collector-0").Summary().Members {
		assert.Equal(t, loads[i].Series, m.Series, m.Identity)
	}
}

func checkServedOnce(t *testing.T, a *shares.Allocation, snap discovery.Snapshot) {
	t.Helper()
	for job, ts := range snap.Jobs {
		seen := map[uint64]int{}
		for _, m := range append(slices.Clone(a.Members), "") { // "": unassigned
			if m == "" && a.Summary().Unassigned != a.OverLimit {
				t.Fatalf("%d targets unassigned, %d of them over the limit: no other cause here", a.Summary().Unassigned, a.OverLimit)
			}
			for _, tg := range a.Share(job, m).Targets() {
				seen[tg.Hash]++
			}
		}
		if len(seen) != len(ts) {
			t.Fatalf("job %s: %d targets served, want %d", job, len(seen), len(ts))
		}
		for h, n := range seen {
			if n != 1 {
				t.Fatalf("job %s: target %x served %d times", job, h, n)
			}
		}
	}
}

// New scrape configs (Prometheus Operator CRs coming and going) change the
// jobs served: a new job is served at once, without targets; a job no longer
// configured is served until discovery stops sending it.
func TestStateTakesNewScrapeConfigs(t *testing.T) {
	alloc, err := allocation.New(allocation.ConsistentHashing)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newState(alloc, map[string]*promconfig.ScrapeConfig{"job-0": {JobName: "job-0"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.setMembers(members(3)); err != nil {
		t.Fatal(err)
	}
	f := newFleet(1, 1, 20)
	s.setTargets(f.snapshot())
	if err := s.setScrapeConfigs(map[string]*promconfig.ScrapeConfig{"job-new": {JobName: "job-new"}}); err != nil {
		t.Fatal(err)
	}
	a := s.allocation(1, "collector-0")
	if got := a.Jobs(); !slices.Equal(got, []string{"job-0", "job-new"}) {
		t.Fatalf("jobs %v, want job-0 until discovery drops it, and job-new", got)
	}
	if targetCount(a, "job-0") != 20 || targetCount(a, "job-new") != 0 {
		t.Fatalf("targets %d and %d, want 20 and 0", targetCount(a, "job-0"), targetCount(a, "job-new"))
	}
	s.setTargets(discovery.Snapshot{Jobs: map[string][]discovery.Target{"job-new": {}}})
	a = s.allocation(2, "collector-0")
	if got := a.Jobs(); !slices.Equal(got, []string{"job-new"}) {
		t.Fatalf("jobs %v, want job-new only", got)
	}
	if n := a.Summary().Targets; n != 0 {
		t.Fatalf("%d targets left behind", n)
	}
}

func targetCount(a *shares.Allocation, job string) int { return len(a.Targets(job)) }

// newTarget returns a discovered target of labels ls, encoded.
func newTarget(ls labels.Labels, hash uint64, node string) discovery.Target {
	return discovery.Target{Element: httpsd.Encode(ls), Hash: hash, Node: node}
}
