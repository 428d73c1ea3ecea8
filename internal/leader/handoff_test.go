package leader

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// handoffGroup is a state with hand-offs on, one job of targets, and a fake
// clock.
type handoffGroup struct {
	t    *testing.T
	s    *state
	fl   *fleet
	last *shares.Allocation
}

const handoffJob = "job-0"

func newHandoffGroup(t *testing.T, targets int, ms []allocation.Member) *handoffGroup {
	alloc, err := allocation.New(allocation.ConsistentHashing)
	require.NoError(t, err)
	s, err := newState(alloc, map[string]*promconfig.ScrapeConfig{handoffJob: {JobName: handoffJob, ScrapeInterval: model.Duration(2 * time.Second)}})
	require.NoError(t, err)
	s.handoff, s.now = true, time.Unix(1000, 0)
	s.fresh = func() (allocation.Allocator, error) { return allocation.New(allocation.ConsistentHashing) }
	g := &handoffGroup{t: t, s: s, fl: newFleet(7, 1, targets)}
	for _, m := range ms {
		g.report(report.Report{Member: m.Identity, Fenced: true, Cutover: true, WarmWithin: report.Duration(10 * time.Second)})
	}
	_, err = s.setMembers(ms)
	require.NoError(t, err)
	s.setTargets(g.fl.snapshot())
	g.publish()
	return g
}

func (g *handoffGroup) report(r report.Report) bool {
	changed, err := g.s.report(r)
	require.NoError(g.t, err)
	return changed
}

func (g *handoffGroup) publish() *shares.Allocation {
	g.last = g.s.allocation(1, "collector-0")
	g.exportedOnce()
	return g.last
}

// owner is the member whose share holds h: the one that exports it.
func (g *handoffGroup) owner(h uint64) string {
	for _, m := range g.last.Members {
		for _, t := range g.last.Share(handoffJob, m).Targets() {
			if t.Hash == h {
				return m
			}
		}
	}
	return ""
}

// warming returns the targets each member warms: in what it scrapes,
// marked, and not in its share.
func (g *handoffGroup) warming() map[string][]uint64 {
	out, _ := g.extra()
	return out
}

// extra returns the targets each member scrapes beyond its share: those it
// warms and those it releases.
func (g *handoffGroup) extra() (warming, releasing map[string][]uint64) {
	warming, releasing = map[string][]uint64{}, map[string][]uint64{}
	for _, m := range g.last.Members {
		own := map[uint64]bool{}
		for _, t := range g.last.Share(handoffJob, m).Targets() {
			own[t.Hash] = true
			assert.False(g.t, t.Labels().Has(shares.WarmingLabel), "%s exports a target marked warming", m)
		}
		for _, t := range g.last.ScrapeShare(handoffJob, m).Targets() {
			if own[t.Hash] {
				assert.False(g.t, t.Labels().Has(shares.WarmingLabel) || t.Labels().Has(shares.ReleasingLabel), "%s scrapes a target of its share marked warming or releasing", m)
				delete(own, t.Hash)
				continue
			}
			switch ls := t.Labels(); {
			case ls.Get(shares.WarmingLabel) == shares.Standby:
				warming[m] = append(warming[m], t.Hash)
			case ls.Has(shares.WarmingLabel):
				assert.Equal(g.t, report.FormatHash(t.Hash), ls.Get(shares.WarmingLabel))
				warming[m] = append(warming[m], t.Hash)
			case ls.Has(shares.ReleasingLabel):
				assert.Equal(g.t, report.FormatHash(t.Hash), ls.Get(shares.ReleasingLabel))
				releasing[m] = append(releasing[m], t.Hash)
			default:
				g.t.Errorf("%s scrapes a target of another share unmarked", m)
			}
		}
		assert.Empty(g.t, own, "%s does not scrape targets of its share", m)
	}
	return warming, releasing
}

// cutover returns the cut-over member's receiver sees on target h, "" if
// none.
func (g *handoffGroup) cutover(member string, h uint64) string {
	for _, t := range g.last.ScrapeShare(handoffJob, member).Targets() {
		if t.Hash == h {
			return t.Labels().Get(shares.CutoverLabel)
		}
	}
	return ""
}

// exportedOnce checks that each target is in exactly one share.
func (g *handoffGroup) exportedOnce() {
	seen := map[uint64]int{}
	for _, m := range append(slices.Clone(g.last.Members), "") {
		for _, t := range g.last.Share(handoffJob, m).Targets() {
			seen[t.Hash]++
		}
	}
	assert.Len(g.t, seen, len(g.fl.jobs[handoffJob]))
	for h, n := range seen {
		assert.Equal(g.t, 1, n, "target %x is in %d shares", h, n)
	}
}

func (g *handoffGroup) owners() map[uint64]string {
	out := map[uint64]string{}
	for _, t := range g.fl.jobs[handoffJob] {
		out[t.Hash] = g.owner(t.Hash)
	}
	return out
}

func warmReport(member string, hashes ...uint64) report.Report {
	var hex []string
	for _, h := range hashes {
		hex = append(hex, report.FormatHash(h))
	}
	return report.Report{Member: member, Fenced: true, Cutover: true, WarmWithin: report.Duration(10 * time.Second), Warm: map[string][]string{handoffJob: hex}}
}

// A join: the targets the newcomer is to take stay with their members,
// which export them, and the newcomer warms them; each moves when the
// newcomer reports its first scrape, the others at their deadline.
func TestHandoffJoin(t *testing.T) {
	ms := members(3)
	g := newHandoffGroup(t, 60, ms)
	before := g.owners()
	require.Empty(t, g.warming())

	g.report(report.Report{Member: "joiner", Fenced: true, Cutover: true, WarmWithin: report.Duration(10 * time.Second)})
	changed, err := g.s.setMembers(append(slices.Clone(ms), allocation.Member{Identity: "joiner"}))
	require.NoError(t, err)
	require.True(t, changed)
	g.publish()
	assert.Equal(t, before, g.owners(), "nothing moves before the newcomer has scraped")
	warming := g.warming()["joiner"]
	require.NotEmpty(t, warming)
	assert.Zero(t, g.s.takeMoved())

	// The first scrape of one: it moves, out of its old member's share.
	first := warming[0]
	g.s.now = g.s.now.Add(3 * time.Second)
	require.True(t, g.report(warmReport("joiner", first)))
	g.publish()
	assert.Equal(t, "joiner", g.owner(first))
	assert.NotContains(t, g.warming()["joiner"], first)
	assert.Equal(t, 1, g.s.takeMoved())
	// Both scrape it, and both see the cut-over, half an interval off the
	// scrape reported, at least cutoverDelay ahead: its old member exports
	// the scrapes before, the newcomer those after.
	_, releasing := g.extra()
	assert.Equal(t, map[string][]uint64{before[first]: {first}}, releasing)
	cutover := shares.FormatCutover(g.s.now.Add(5 * time.Second))
	assert.Equal(t, cutover, g.cutover(before[first], first))
	assert.Equal(t, cutover, g.cutover("joiner", first))
	// One interval after the cut-over (and cutoverDelay more), its old
	// member releases it, and the mark leaves the newcomer's (below).
	require.NotNil(t, g.s.releases[first])
	assert.Equal(t, g.s.now.Add(5*time.Second+2*time.Second+cutoverDelay), g.s.releases[first].deadline)
	assert.False(t, g.report(warmReport("joiner", first)), "a second report of it changes nothing")
	assert.False(t, g.report(warmReport(before[first], warming[1])), "only the new member's report counts")
	// A report that says when its scrape began, a second ago (a report
	// that took half an interval): the cut-over is half an interval off
	// that scrape, not off the report.
	second := warming[1]
	late := warmReport("joiner", second)
	late.WarmAt = map[string]int64{report.FormatHash(second): g.s.now.Add(-time.Second).UnixMilli()}
	require.True(t, g.report(late))
	g.publish()
	assert.Equal(t, shares.FormatCutover(g.s.now.Add(4*time.Second)), g.cutover("joiner", second))
	// A time further off than warm_within and the interval is not
	// believed: off the report's arrival.
	third := warming[2]
	wrong := warmReport("joiner", third)
	wrong.WarmAt = map[string]int64{report.FormatHash(third): 1 << 50}
	require.True(t, g.report(wrong))
	g.publish()
	assert.Equal(t, shares.FormatCutover(g.s.now.Add(5*time.Second)), g.cutover("joiner", third))

	// The rest at the deadline: warm_within + the job's interval.
	next, ok := g.s.nextDeadline()
	require.True(t, ok)
	assert.Equal(t, time.Unix(1000, 0).Add(12*time.Second), next)
	g.s.now = next.Add(-time.Millisecond)
	changed, _ = g.s.expire()
	assert.False(t, changed)
	g.s.now = next
	changed, _ = g.s.expire()
	assert.True(t, changed)
	g.publish()
	for _, h := range warming {
		assert.Equal(t, "joiner", g.owner(h))
	}
	assert.Empty(t, g.warming())
	for next, ok := g.s.nextDeadline(); ok; next, ok = g.s.nextDeadline() {
		g.s.now = next
		g.s.expire() // the releases
	}
	g.publish()
	_, releasing = g.extra()
	assert.Empty(t, releasing)
	assert.Empty(t, g.cutover("joiner", first))
	assert.Equal(t, "joiner", g.owner(first))
	want := want(t, allocation.ConsistentHashing, 0, append(slices.Clone(ms), allocation.Member{Identity: "joiner"}), g.fl.snapshot(), nil)
	for h, m := range g.owners() {
		assert.Equal(t, wantOwner(want, h), m)
	}
}

func wantOwner(a *shares.Allocation, h uint64) string {
	for _, m := range a.Members {
		for _, t := range a.Share(handoffJob, m).Targets() {
			if t.Hash == h {
				return m
			}
		}
	}
	return ""
}

// A newcomer that has not reported yet, or whose report says it does not
// fence (a stock receiver's, or one whose receiver has not started yet: it
// starts after the extension), warms nothing: its moves wait for its report
// that it fences, and are made by a plain move at most waitForReport after
// it joined if that does not come.
func TestHandoffWaitsForTheNewMembersReport(t *testing.T) {
	ms := members(3)
	for _, unfenced := range []bool{false, true} {
		for _, fencesLater := range []bool{true, false} {
			g := newHandoffGroup(t, 60, ms)
			before := g.owners()
			if unfenced {
				g.report(report.Report{Member: "joiner"})
			}
			_, err := g.s.setMembers(append(slices.Clone(ms), allocation.Member{Identity: "joiner"}))
			require.NoError(t, err)
			g.publish()
			assert.Equal(t, before, g.owners(), "a move to it was made at once")
			assert.Empty(t, g.warming()["joiner"], "warming for a member that may not fence")
			if fencesLater {
				g.s.now = g.s.now.Add(time.Second)
				require.True(t, g.report(report.Report{Member: "joiner", Fenced: true, Cutover: true, WarmWithin: report.Duration(10 * time.Second)}))
				g.publish()
				assert.NotEmpty(t, g.warming()["joiner"], "once it fences, it warms its targets")
				assert.Equal(t, before, g.owners())
				assert.Equal(t, g.s.now.Add(12*time.Second), g.deadlineTo("joiner"), "the deadline starts when it warms")
				continue
			}
			next := g.deadlineTo("joiner")
			assert.Equal(t, g.s.now.Add(waitForReport), next)
			g.s.now = next
			changed, _ := g.s.expire()
			require.True(t, changed)
			g.publish()
			assert.NotEqual(t, before, g.owners(), "at the deadline, its targets move to it")
			assert.Empty(t, g.warming()["joiner"])
		}
	}
}

// deadlineTo returns the earliest deadline of the moves to member.
func (g *handoffGroup) deadlineTo(member string) time.Time {
	var next time.Time
	for _, ho := range g.s.handoffs {
		if ho.to == member && (next.IsZero() || ho.deadline.Before(next)) {
			next = ho.deadline
		}
	}
	return next
}

// A graceful leave: the leaving member keeps exporting each target until
// its new member has scraped it; its share is then empty.
func TestHandoffGracefulLeave(t *testing.T) {
	ms := members(4)
	g := newHandoffGroup(t, 60, ms)
	before := g.owners()
	leaving := "collector-3"
	var its []uint64
	for h, m := range before {
		if m == leaving {
			its = append(its, h)
		}
	}
	require.NotEmpty(t, its)
	require.True(t, g.report(report.Report{Member: leaving, Fenced: true, Leaving: true}))
	g.publish()
	assert.Equal(t, before, g.owners(), "nothing moves before its new member has scraped it")
	var warmed []uint64
	for m, hs := range g.warming() {
		assert.NotEqual(t, leaving, m)
		warmed = append(warmed, hs...)
		g.report(warmReport(m, hs...))
	}
	assert.Subset(t, warmed, its, "its targets warm at their new members")
	g.publish()
	assert.Empty(t, g.last.Share(handoffJob, leaving).Targets())
	assert.Contains(t, g.last.Members, leaving, "it is a member until it leaves")
	want := want(t, allocation.ConsistentHashing, 0, ms[:3], g.fl.snapshot(), nil)
	for h, m := range g.owners() {
		assert.Equal(t, wantOwner(want, h), m)
	}
	// It then leaves: nothing moves.
	g.s.takeMoved()
	_, err := g.s.setMembers(ms[:3])
	require.NoError(t, err)
	assert.Zero(t, g.s.takeMoved())

	// A member under its name later (a restart) is no longer leaving:
	// targets move to it, once it reports.
	_, err = g.s.setMembers(ms)
	require.NoError(t, err)
	assert.False(t, g.deadlineTo(leaving).IsZero(), "no move to the member that came back")
	require.True(t, g.report(report.Report{Member: leaving, Fenced: true}))
	g.publish()
	assert.NotEmpty(t, g.warming()[leaving])
}

// Bounded by the members' fate: a move whose old member dies is made at
// once; one whose new member dies is cancelled, and the target placed anew.
func TestHandoffMembersGone(t *testing.T) {
	ms := members(3)
	joined := append(slices.Clone(ms), allocation.Member{Identity: "joiner"})

	g := newHandoffGroup(t, 60, ms)
	g.report(report.Report{Member: "joiner", Fenced: true})
	_, err := g.s.setMembers(joined)
	require.NoError(t, err)
	g.publish()
	warming := g.warming()["joiner"]
	require.NotEmpty(t, warming)
	// The new member dies: the targets stay where they are, warm nowhere.
	before := g.owners()
	_, err = g.s.setMembers(ms)
	require.NoError(t, err)
	g.publish()
	assert.Equal(t, before, g.owners())
	assert.Empty(t, g.warming())
	_, ok := g.s.nextDeadline()
	assert.False(t, ok)

	// An old member dies while its target warms at the newcomer: moved at once.
	_, err = g.s.setMembers(joined)
	require.NoError(t, err)
	g.publish()
	warming = g.warming()["joiner"]
	require.NotEmpty(t, warming)
	from := g.owner(warming[0])
	alive := slices.DeleteFunc(slices.Clone(joined), func(m allocation.Member) bool { return m.Identity == from })
	_, err = g.s.setMembers(alive)
	require.NoError(t, err)
	g.publish()
	assert.Equal(t, "joiner", g.owner(warming[0]))
	for _, hs := range g.warming() {
		for _, h := range hs {
			assert.NotEqual(t, from, before[h], "a target of the dead member still warms")
		}
	}
}

// Discovery changes during a hand-off: a target that goes ends its
// hand-off; one relabeled warms with its new labels.
func TestHandoffTargetsChange(t *testing.T) {
	ms := members(3)
	g := newHandoffGroup(t, 60, ms)
	g.report(report.Report{Member: "joiner", Fenced: true})
	_, err := g.s.setMembers(append(slices.Clone(ms), allocation.Member{Identity: "joiner"}))
	require.NoError(t, err)
	g.publish()
	require.NotEmpty(t, g.warming()["joiner"])
	for range 5 {
		g.s.setTargets(g.fl.change(0.3))
		g.publish()
		all, warming := g.s.handoffCount()
		assert.Equal(t, all, warming)
		n := 0
		for _, hs := range g.warming() {
			n += len(hs)
		}
		assert.Equal(t, warming, n)
		hashes := maps.Collect(func(yield func(uint64, bool) bool) {
			for _, t := range g.fl.jobs[handoffJob] {
				if !yield(t.Hash, true) {
					return
				}
			}
		})
		for _, hs := range g.warming() {
			for _, h := range hs {
				assert.True(t, hashes[h], "a gone target warms")
			}
		}
	}
}

// Hot standby: each member that asks for it also scrapes (warming) the
// targets it would take if their member died; when one dies, its targets
// go to the members that already scrape them.
func TestHotStandby(t *testing.T) {
	ms := members(3)
	g := newHandoffGroup(t, 60, ms)
	for _, m := range ms {
		require.True(t, g.report(report.Report{Member: m.Identity, Fenced: true, HotStandby: true}))
	}
	g.publish()
	warming := g.warming()
	n := 0
	for m, hs := range warming {
		for _, h := range hs {
			n++
			assert.NotEqual(t, m, g.owner(h), "a member stands by for its own target")
		}
	}
	assert.Equal(t, 60, n, "every target has one standby")
	all, _ := g.s.handoffCount()
	assert.Zero(t, all, "standing by is no move")
	seen := warmReport("collector-1", warming["collector-1"]...)
	seen.HotStandby = true
	assert.False(t, g.report(seen), "a standby's first scrape moves nothing")

	// collector-2 dies: each of its targets goes to the member that
	// stood by for it.
	standby := map[uint64]string{}
	for m, hs := range warming {
		for _, h := range hs {
			standby[h] = m
		}
	}
	before := g.owners()
	_, err := g.s.setMembers(ms[:2])
	require.NoError(t, err)
	g.publish()
	for h, m := range before {
		if m == "collector-2" {
			assert.Equal(t, standby[h], g.owner(h), "target %x went elsewhere than to its standby", h)
		}
	}
	for m, hs := range g.warming() {
		for _, h := range hs {
			assert.NotEqual(t, m, g.owner(h))
		}
	}

	// Standing by ends when asked.
	for _, m := range ms[:2] {
		g.report(report.Report{Member: m.Identity, Fenced: true})
	}
	g.publish()
	assert.Empty(t, g.s.standby)
	for m, hs := range g.warming() {
		for _, h := range hs {
			assert.NotNil(t, g.s.handoffs[h], "%s still stands by for %x", m, h)
		}
	}
}

// A member that has not reported within waitForReport of joining (a stock
// receiver's) gets its targets by plain moves from then on.
func TestHandoffStopsWaitingForASilentMember(t *testing.T) {
	ms := append(members(3), allocation.Member{Identity: "stock"})
	g := newHandoffGroup(t, 60, ms[:3])
	_, err := g.s.setMembers(ms)
	require.NoError(t, err)
	g.publish()
	require.False(t, g.deadlineTo("stock").IsZero())
	g.s.now = g.s.now.Add(waitForReport)
	changed, _ := g.s.expire()
	require.True(t, changed)
	g.publish()
	assert.True(t, g.deadlineTo("stock").IsZero())

	// A later change moves targets to it at once.
	owned := func() int { return len(g.last.Share(handoffJob, "stock").Targets()) }
	before := owned()
	_, err = g.s.setMembers(slices.Delete(slices.Clone(ms), 2, 3))
	require.NoError(t, err)
	g.publish()
	assert.Greater(t, owned(), before, "no target moved to it")
	assert.True(t, g.deadlineTo("stock").IsZero(), "a move waits for a member that never reports")
	assert.Empty(t, g.warming()["stock"])
}

// In a group where no member fences (every receiver the stock one), a move
// to a member that has reported is made at once, as without make before
// break; one to a member that has not reported in this term (a joiner
// before its first report, or a member that is gone, its Lease not yet
// expired) waits for its report, at most waitForReport.
func TestHandoffNoneInAGroupWithoutFences(t *testing.T) {
	alloc, err := allocation.New(allocation.ConsistentHashing)
	require.NoError(t, err)
	s, err := newState(alloc, map[string]*promconfig.ScrapeConfig{handoffJob: {JobName: handoffJob}})
	require.NoError(t, err)
	s.handoff, s.now = true, time.Unix(1000, 0)
	ms := members(3)
	_, err = s.setMembers(ms)
	require.NoError(t, err)
	for _, m := range ms {
		_, err := s.report(report.Report{Member: m.Identity})
		require.NoError(t, err)
	}
	s.setTargets(newFleet(7, 1, 60).snapshot())
	s.allocation(1, "collector-0")
	s.takeMoved()

	_, err = s.setMembers(append(slices.Clone(ms), allocation.Member{Identity: "joiner"}))
	require.NoError(t, err)
	joiner := func() int { return len(s.allocation(1, "collector-0").Share(handoffJob, "joiner").Targets()) }
	assert.Zero(t, joiner(), "a move to a member that has not reported was made")
	require.NotEmpty(t, s.handoffs)
	for _, ho := range s.handoffs {
		assert.False(t, ho.warming)
		assert.Equal(t, s.now.Add(waitForReport), ho.deadline)
	}
	s.now = s.now.Add(time.Second)
	changed, err := s.report(report.Report{Member: "joiner"})
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Positive(t, joiner(), "its report moved nothing")
	assert.Empty(t, s.handoffs)
	s.takeMoved()

	// To members that have reported, moves are made at once.
	_, err = s.setMembers(ms)
	require.NoError(t, err)
	assert.Positive(t, s.takeMoved(), "the leave moved nothing at once")
	assert.Empty(t, s.handoffs)
}

// A new leader's first allocation starts from the targets the members
// report they hold: each stays in its holder's share, exported, and a
// target whose member is another one now is warmed there and moves make
// before break, as a join's targets do.
func TestNewTermStartsFromHeldTargets(t *testing.T) {
	ms := members(3)
	fl := newFleet(7, 1, 60)
	targets := fl.jobs[handoffJob]

	// Where a fresh allocation puts each target, and, as the last term
	// left them, each with the member after that one.
	fresh, err := allocation.New(allocation.ConsistentHashing)
	require.NoError(t, err)
	require.NoError(t, fresh.SetMembers(ms))
	var all []allocation.Target
	for _, tg := range targets {
		all = append(all, allocation.Target{Hash: tg.Hash, Job: handoffJob})
	}
	fresh.Update(all, nil)
	next := map[string]string{"collector-0": "collector-1", "collector-1": "collector-2", "collector-2": "collector-0"}
	want, holder, held := map[uint64]string{}, map[uint64]string{}, map[string][]string{}
	for _, tg := range targets {
		m, _ := fresh.MemberOf(tg.Hash)
		want[tg.Hash], holder[tg.Hash] = m, next[m]
		held[next[m]] = append(held[next[m]], report.TargetKey(tg.Element.Labels()))
	}
	// A target two members hold (a report from a member that has not
	// seen its last move) stays with the first to report it.
	var twice uint64
	for _, tg := range targets {
		if holder[tg.Hash] == ms[1].Identity {
			twice, holder[tg.Hash] = tg.Hash, ms[0].Identity
			held[ms[0].Identity] = append(held[ms[0].Identity], report.TargetKey(tg.Element.Labels()))
			break
		}
	}
	require.NotZero(t, twice)
	moving := 0
	for h, m := range holder {
		if m != want[h] {
			moving++
		}
	}

	alloc, err := allocation.New(allocation.ConsistentHashing)
	require.NoError(t, err)
	s, err := newState(alloc, map[string]*promconfig.ScrapeConfig{handoffJob: {JobName: handoffJob, ScrapeInterval: model.Duration(2 * time.Second)}})
	require.NoError(t, err)
	s.handoff, s.now, s.seeding = true, time.Unix(1000, 0), true
	g := &handoffGroup{t: t, s: s, fl: fl}
	_, err = s.setMembers(ms)
	require.NoError(t, err)
	for _, m := range ms {
		require.False(t, s.reportedAll(), "before %s reported", m.Identity)
		g.report(report.Report{Member: m.Identity, Fenced: true, Cutover: true, WarmWithin: report.Duration(10 * time.Second), Held: map[string][]string{handoffJob: held[m.Identity]}})
	}
	require.True(t, s.reportedAll())
	s.seeding = false
	s.setTargets(fl.snapshot())
	g.publish()
	for _, tg := range targets {
		assert.Equal(t, holder[tg.Hash], g.owner(tg.Hash), "a target left the member that holds it")
	}
	warming := g.warming()
	assert.Equal(t, moving, len(warming["collector-0"])+len(warming["collector-1"])+len(warming["collector-2"]))
	assert.Zero(t, s.takeMoved())

	// Each moves when its new member reports its first scrape.
	for _, m := range ms {
		g.s.now = g.s.now.Add(time.Second)
		require.True(t, g.report(warmReport(m.Identity, warming[m.Identity]...)))
	}
	g.publish()
	for _, tg := range targets {
		assert.Equal(t, want[tg.Hash], g.owner(tg.Hash))
	}
	assert.Empty(t, g.warming())
	assert.Equal(t, moving, s.takeMoved())
}

// A move's new member that is gone while the move is released: the
// target comes back (here to its old member), and the release ends, so
// that no member drops its own target's data by the cut-over.
func TestReleaseEndsWhenItsNewMemberIsGone(t *testing.T) {
	ms := members(3)
	g := newHandoffGroup(t, 60, ms)
	before := g.owners()
	g.report(report.Report{Member: "joiner", Fenced: true, Cutover: true, WarmWithin: report.Duration(10 * time.Second)})
	_, err := g.s.setMembers(append(slices.Clone(ms), allocation.Member{Identity: "joiner"}))
	require.NoError(t, err)
	g.publish()
	first := g.warming()["joiner"][0]
	g.s.now = g.s.now.Add(time.Second)
	require.True(t, g.report(warmReport("joiner", first)))
	g.publish()
	_, releasing := g.extra()
	require.Equal(t, map[string][]uint64{before[first]: {first}}, releasing)

	g.s.now = g.s.now.Add(time.Second)
	_, err = g.s.setMembers(ms)
	require.NoError(t, err)
	g.publish()
	assert.Equal(t, before[first], g.owner(first))
	_, releasing = g.extra()
	assert.Empty(t, releasing)
	assert.Empty(t, g.cutover(before[first], first), "its old member would drop its data by the cut-over")
	assert.Empty(t, g.s.releases)
	for k := range g.s.extra {
		assert.NotEqual(t, "joiner", k.member, "what a gone member scrapes is kept")
	}
}

// A cut-over falls half an interval off the phase of the new member's
// scrapes (the time of the scrape it reported), at least cutoverDelay
// ahead; without a scrape reported (a move at its deadline), cutoverDelay
// ahead.
func TestCutoverAt(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		interval time.Duration
		scraped  time.Time
		want     time.Duration // after now
	}{
		{time.Second, now, 4500 * time.Millisecond},
		{2 * time.Second, now, 5 * time.Second},
		{8 * time.Second, now, 4 * time.Second},
		{30 * time.Second, now, 15 * time.Second},
		// A report that came half an interval after its scrape: the
		// cut-over stays between two scrapes (now+5s would be one).
		{2 * time.Second, now.Add(-time.Second), 4 * time.Second},
		{2 * time.Second, now.Add(-300 * time.Millisecond), 4700 * time.Millisecond},
		// Long ago, or ahead by a clock's skew: the phase is what counts.
		{2 * time.Second, now.Add(-time.Hour - 200*time.Millisecond), 4800 * time.Millisecond},
		{2 * time.Second, now.Add(10 * time.Second), 5 * time.Second},
		{30 * time.Second, time.Time{}, cutoverDelay},
	} {
		assert.Equal(t, now.Add(tc.want), cutoverAt(now, tc.scraped, tc.interval), "interval %s, scraped %s", tc.interval, tc.scraped)
	}
}

// A new term's targets stay at the members that hold them until discovery
// has reported every job: placed while a job's targets are still to come,
// the load bounds would move a target away and, once they came, back. Then
// each moves at most once, to where a fresh allocation of every job puts
// it. (Members with stock receivers: moves are made at once.)
func TestNewTermParksHeldTargetsUntilEveryJobReported(t *testing.T) {
	ms := members(3)
	fl := newFleet(11, 2, 9) // few targets a member: the bounds bind
	early, late := "job-0", "job-1"

	// Where a fresh allocation of both jobs puts each target; the last
	// term left each of the early job's at the member after that one.
	fresh, err := allocation.New(allocation.ConsistentHashing)
	require.NoError(t, err)
	require.NoError(t, fresh.SetMembers(ms))
	var all []allocation.Target
	for job, ts := range fl.jobs {
		for _, tg := range ts {
			all = append(all, allocation.Target{Hash: tg.Hash, Job: job})
		}
	}
	fresh.Update(all, nil)
	next := map[string]string{"collector-0": "collector-1", "collector-1": "collector-2", "collector-2": "collector-0"}
	want, holder, held := map[uint64]string{}, map[uint64]string{}, map[string][]string{}
	for _, tg := range fl.jobs[early] {
		m, _ := fresh.MemberOf(tg.Hash)
		want[tg.Hash], holder[tg.Hash] = m, next[m]
		held[next[m]] = append(held[next[m]], report.TargetKey(tg.Element.Labels()))
	}

	alloc, err := allocation.New(allocation.ConsistentHashing)
	require.NoError(t, err)
	configs := map[string]*promconfig.ScrapeConfig{}
	for job := range fl.jobs {
		configs[job] = &promconfig.ScrapeConfig{JobName: job, ScrapeInterval: model.Duration(2 * time.Second)}
	}
	s, err := newState(alloc, configs)
	require.NoError(t, err)
	s.handoff, s.now, s.seeding = true, time.Unix(1000, 0), true
	_, err = s.setMembers(ms)
	require.NoError(t, err)
	for _, m := range ms {
		_, err := s.report(report.Report{Member: m.Identity, Held: map[string][]string{early: held[m.Identity]}})
		require.NoError(t, err)
	}
	s.seeding = false
	owners := func() map[uint64]string {
		a := s.allocation(1, "collector-0")
		out := map[uint64]string{}
		for _, m := range a.Members {
			for _, tg := range a.Share(early, m).Targets() {
				out[tg.Hash] = m
			}
		}
		return out
	}

	first := fl.snapshot()
	first.Jobs[late], first.Unreported = nil, map[string]bool{late: true}
	s.setTargets(first)
	assert.Equal(t, holder, owners(), "a held target left its holder before every job reported")
	assert.Zero(t, s.takeMoved())

	s.now = s.now.Add(3 * time.Second)
	s.setTargets(fl.snapshot())
	assert.Equal(t, want, owners(), "not where a fresh allocation of every job puts them")
	moving := 0
	for h, m := range holder {
		if m != want[h] {
			moving++
		}
	}
	require.Positive(t, moving, "the fixture moves nothing")
	assert.Equal(t, moving, s.takeMoved(), "a target moved more than once")
	assert.Empty(t, s.parked)
}
