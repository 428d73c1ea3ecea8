package leader

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// A planned move is made before it is broken. When a target's member
// changes from one member to another (a join, a graceful leave, a
// rebalancing), the target stays in its old member's share, which exports
// it, and is handed to the new member as a warming target: it is in what
// the new member scrapes (shares.Job.ScrapeShare, marked with
// shares.WarmingLabel), and the new member's receiver drops its data. When
// the new member reports the target's first scrape (report.Report.Warm),
// one allocation moves it: out of the old member's share, into the new
// member's, with a cut-over (shares.CutoverLabel) at least cutoverDelay
// later (cutoverAt). Both
// members go on scraping it (the old one marks it shares.ReleasingLabel)
// and their receivers split its data at the cut-over: the old member
// exports the scrapes before it, the new member those from it on, so that
// each interval's scrape is exported once. One scrape interval after the
// cut-over (and cutoverDelay more), an allocation releases it: it leaves
// what the old member scrapes, and its mark of the cut-over leaves the new
// member's. A new member that does not fence its data gets no cut-over:
// it exports all it scrapes, and its old member exports one interval more.
//
// Every wait is bounded: a move whose new member has not reported that it
// fences its data (report.Report.Fenced) waits for that at most
// waitForReport, and a warming target is moved at its deadline (the new
// member's warm_within plus the job's scrape interval) whether or not its
// first scrape was reported. A move whose old member is gone, or that
// takes a target from no member or gives it to none, is made at once.
//
// A member that reports it is leaving gets no targets from the allocator
// but keeps exporting its share until each target's hand-off is made.

// waitForReport bounds how long after a member joined (or the term began)
// a move to it waits for its report that it fences: a member whose
// receiver is prometheus_allocated reports within a second or two of
// joining, one whose receiver is the stock one never does, and gets its
// targets by plain moves from then on.
const waitForReport = 5 * time.Second

// heldWait bounds how long a new term waits for every member's first
// report, with the targets it holds (report.Report.Held), before it takes
// discovery's targets: its first allocation starts from where they are,
// and moves them make before break. Members report to a new leader as
// soon as they see it; one that is gone (its Lease not yet expired) does
// not, and costs this wait.
const heldWait = 3 * time.Second

// defaultWarmWithin is the warm_within of a member that reports none.
const defaultWarmWithin = 45 * time.Second

// cutoverDelay is how long after a move the cut-over is: time for the
// allocation to reach both members' receivers (pushed in-process, and to
// followers over a blocking request, as a rule in milliseconds), with a
// wide margin for a busy node: a fresh-clone run on a loaded 2-core
// machine once saw a follower learn of a move more than 3 s after it. A
// member that learns of the move after its cut-over exports, as its old
// member, its scrapes in between: doubled; as its new member, its fence
// passes them late from the copies it kept while the target warmed (up to
// three intervals late).
const cutoverDelay = 4 * time.Second

// handoff is one target's move, from its old member to its new one.
type handoff struct {
	job      string
	from, to string
	deadline time.Time
	// cutover is a release's cut-over (shares.CutoverLabel); zero when its
	// new member does not fence its data.
	cutover time.Time
	// warming is set once the target is in to's scrape share; before,
	// to has not reported that it fences.
	warming bool
}

// memberFacts are what a member last reported of itself.
type memberFacts struct {
	fenced     bool
	cutover    bool
	warmWithin time.Duration
	leaving    bool
	standby    bool
}

// assign gives the target at i of job to member, make before break when
// it has a member now and member is one.
func (s *state) assign(job string, js *jobState, i int, member string) {
	t := js.targets[i]
	was := memberName(s.names, js.members[i])
	if s.parked[t.Hash] {
		if was != "" {
			return // at its holder until discovery has reported every job
		}
		delete(s.parked, t.Hash) // its holder is gone
	}
	if ho := s.handoffs[t.Hash]; ho != nil {
		if ho.to == member && was != "" {
			return // under way
		}
		s.cancel(t.Hash, ho)
	}
	if member == was {
		return
	}
	// A member that has not reported that it fences may still: its
	// receiver starts after its extension, whose first report says it
	// does not; a move to it waits for that, at most waitForReport. A
	// member that has not reported at all in this term (every member
	// reports to each new leader) may be gone, its Lease not yet expired:
	// a move to it waits for its report, too, in any group.
	facts, reported := s.facts[member]
	waitUntil := s.joined[member].Add(waitForReport)
	if !s.handoff || was == "" || member == "" ||
		!facts.fenced && !waitUntil.After(s.now) || // it did not report that it fences in time
		reported && !facts.fenced && !s.anyFenced() { // stock receivers: nothing is made before it breaks
		s.move(job, js, i, member)
		return
	}
	ho := &handoff{job: job, from: was, to: member, deadline: waitUntil}
	s.handoffs[t.Hash] = ho
	if facts.fenced {
		s.warm(t, ho)
	}
}

// anyFenced reports whether a member has reported that it fences: in a
// group where none has (every receiver the stock one), moves are made at
// once, as before make before break.
func (s *state) anyFenced() bool {
	for _, f := range s.facts {
		if f.fenced {
			return true
		}
	}
	return false
}

// move moves the target at i of job to member at once. A move still being
// released whose new member loses the target (or is gone), or whose old
// member gets it back, ends: neither exports by its cut-over any more.
func (s *state) move(job string, js *jobState, i int, member string) {
	t := js.targets[i]
	was := memberName(s.names, js.members[i])
	if rel := s.releases[t.Hash]; rel != nil && !rel.cutover.IsZero() && (rel.to == was || was == "" || member == rel.from) {
		s.release(t.Hash, rel)
	}
	s.leave(job, was, t.Hash)
	s.enter(job, member, t)
	js.members[i] = s.memberIndex(member)
	s.moved++
}

// warm puts the target of ho in its new member's scrape share.
func (s *state) warm(t discovery.Target, ho *handoff) {
	if rel := s.releases[t.Hash]; rel != nil && rel.from == ho.to {
		s.release(t.Hash, rel) // it comes back to where it was
	}
	ho.warming = true
	ho.deadline = s.now.Add(s.warmWithin(ho.to, ho.job))
	s.scrapeExtra(ho.job, ho.to, markedTarget(t, labels.Label{Name: shares.WarmingLabel, Value: report.FormatHash(t.Hash)}))
}

// scrapeExtra adds t to what member scrapes of job beyond its share.
func (s *state) scrapeExtra(job, member string, t shares.Target) {
	k := shareKey{job, member}
	if s.extra[k] == nil {
		s.extra[k] = map[uint64]shares.Target{}
	}
	s.extra[k][t.Hash] = t
	s.extraChanged[k] = true
}

// release ends a moved target's scrapes at its old member, and its mark of
// the cut-over at its new one.
func (s *state) release(h uint64, rel *handoff) {
	k := shareKey{rel.job, rel.from}
	delete(s.extra[k], h)
	s.extraChanged[k] = true
	if !rel.cutover.IsZero() {
		k := shareKey{rel.job, rel.to}
		delete(s.extra[k], h)
		s.extraChanged[k] = true
	}
	delete(s.releases, h)
}

// cancel ends a hand-off without a move.
func (s *state) cancel(h uint64, ho *handoff) {
	if ho.warming {
		k := shareKey{ho.job, ho.to}
		delete(s.extra[k], h)
		s.extraChanged[k] = true
	}
	delete(s.handoffs, h)
}

// complete ends a hand-off with its move; the old member exports the
// target until the cut-over, and the new member from it on. scraped is
// when the new member's scrape that its report named began, zero when no
// report made the move (see cutoverAt).
func (s *state) complete(h uint64, ho *handoff, scraped time.Time) {
	s.cancel(h, ho)
	js, ok := s.jobs[ho.job]
	if !ok {
		return
	}
	i, found := slices.BinarySearchFunc(js.targets, h, func(t discovery.Target, h uint64) int { return cmp.Compare(t.Hash, h) })
	if !found {
		return
	}
	s.move(ho.job, js, i, ho.to)
	// Only a member that fences its data releases: one whose receiver is
	// the stock one would export what it scrapes.
	if interval := s.intervals[ho.job]; interval > 0 && s.facts[ho.from].fenced {
		if rel := s.releases[h]; rel != nil {
			s.release(h, rel)
		}
		rel := &handoff{job: ho.job, from: ho.from, to: ho.to, deadline: s.now.Add(interval)}
		if s.facts[ho.from].cutover && s.facts[ho.to].cutover {
			rel.cutover = cutoverAt(s.now, scraped, interval)
			rel.deadline = rel.cutover.Add(interval + cutoverDelay)
		}
		s.releases[h] = rel
		s.markRelease(js.targets[i], rel)
	}
}

// cutoverAt is a move's cut-over: cutoverDelay after now at least, and,
// when the move was made on the new member's report of a scrape, half an
// interval off that scrape's time, so between two of the new member's
// scrapes, whose phase within the interval does not change. At the phase
// itself it would fall between two scrapes taken at the same instant
// (members on one host scrape a target at the same offset within the
// interval), and by a clock's jitter both could fall on the wrong side of
// it, a scrape dropped by both members. The scrape's time, not the
// report's: a report that took half an interval to come would put the
// cut-over right at the phase.
func cutoverAt(now, scraped time.Time, interval time.Duration) time.Time {
	earliest := now.Add(cutoverDelay)
	if scraped.IsZero() || interval <= 0 {
		return earliest
	}
	mid := scraped.Add(interval / 2)
	d := earliest.Sub(mid)
	k := d / interval // rounded toward zero: up when d > 0
	if d > 0 && d%interval != 0 {
		k++
	}
	return mid.Add(k * interval)
}

// markRelease puts a released target in what its old member scrapes,
// marked releasing, and marks its cut-over in what its new member scrapes.
func (s *state) markRelease(t discovery.Target, rel *handoff) {
	releasing := labels.Label{Name: shares.ReleasingLabel, Value: report.FormatHash(t.Hash)}
	if rel.cutover.IsZero() {
		s.scrapeExtra(rel.job, rel.from, markedTarget(t, releasing))
		return
	}
	cutover := labels.Label{Name: shares.CutoverLabel, Value: shares.FormatCutover(rel.cutover)}
	s.scrapeExtra(rel.job, rel.from, markedTarget(t, releasing, cutover))
	s.scrapeExtra(rel.job, rel.to, markedTarget(t, cutover))
}

// relabel replaces the labels of a warming or releasing target after
// discovery changed them.
func (s *state) relabel(t discovery.Target) {
	if ho := s.handoffs[t.Hash]; ho != nil && ho.warming {
		s.scrapeExtra(ho.job, ho.to, markedTarget(t, labels.Label{Name: shares.WarmingLabel, Value: report.FormatHash(t.Hash)}))
	}
	if rel := s.releases[t.Hash]; rel != nil {
		s.markRelease(t, rel)
	}
}

// forget ends the hand-off and the release of a target that is gone.
func (s *state) forget(h uint64) {
	delete(s.parked, h)
	if ho := s.handoffs[h]; ho != nil {
		s.cancel(h, ho)
	}
	if rel := s.releases[h]; rel != nil {
		s.release(h, rel)
	}
}

func (s *state) warmWithin(member, job string) time.Duration {
	d := s.facts[member].warmWithin
	if d <= 0 {
		d = defaultWarmWithin
	}
	return d + s.intervals[job]
}

// report takes a member's report and reports whether the allocation changed.
func (s *state) report(r report.Report) (bool, error) {
	was, known := s.facts[r.Member]
	s.facts[r.Member] = memberFacts{fenced: r.Fenced, cutover: r.Fenced && r.Cutover, warmWithin: time.Duration(r.WarmWithin), leaving: r.Leaving, standby: r.HotStandby && r.Fenced}
	if was.standby != (r.HotStandby && r.Fenced) {
		s.standbyChanged = true
	}
	if !known && len(s.facts) > 2*len(s.names)+64 {
		for m := range s.facts { // forget those that are no members
			if _, member := s.index[m]; !member && m != r.Member {
				delete(s.facts, m)
			}
		}
	}
	if s.seeding {
		s.hold(r)
	}
	changed := s.standbyChanged
	if was.leaving != r.Leaving && s.names != nil {
		moved, err := s.place()
		if err != nil {
			return false, err
		}
		changed = moved
	}
	for h, ho := range s.handoffs {
		if ho.to != r.Member || ho.warming {
			continue
		}
		switch {
		case r.Fenced:
			if t, ok := s.target(ho.job, h); ok {
				s.warm(t, ho)
				changed = true
			}
		case !s.anyFenced(): // it reported, in a group of stock receivers
			s.complete(h, ho, time.Time{})
			changed = true
		}
	}
	for _, hashes := range r.Warm {
		for _, hex := range hashes {
			h, err := report.ParseHash(hex)
			if err != nil {
				continue // Validate has said so
			}
			if ho := s.handoffs[h]; ho != nil && ho.to == r.Member && ho.warming {
				// A member that does not say when it scraped: about now;
				// one whose clock is off by more than its warm_within is
				// not believed.
				scraped := s.now
				if ms, ok := r.WarmAt[hex]; ok {
					if at := time.UnixMilli(ms); at.Sub(s.now).Abs() <= s.warmWithin(ho.to, ho.job) {
						scraped = at
					}
				}
				s.complete(h, ho, scraped)
				changed = true
			}
		}
	}
	return changed, nil
}

// maxHeld bounds the targets a new term starts from where they are: each
// costs a decoding of its labels and a hash (report.TargetKey) on the
// term's first allocation, a few microseconds. A group that holds more
// starts from a fresh allocation, as if nobody had reported.
const maxHeld = 100_000

// hold records the targets a member holds as the term begins; a target two
// members hold stays with the first to report it.
func (s *state) hold(r report.Report) {
	if s.heldOver {
		return
	}
	if s.held == nil {
		s.held = map[string]map[string]string{}
	}
	for _, keys := range r.Held {
		s.heldCount += len(keys)
	}
	if s.heldCount > maxHeld {
		s.held, s.heldOver = nil, true
		return
	}
	for job, keys := range r.Held {
		if s.held[job] == nil {
			s.held[job] = make(map[string]string, len(keys))
		}
		for _, k := range keys {
			if _, taken := s.held[job][k]; !taken {
				s.held[job][k] = r.Member
			}
		}
	}
}

// reportedAll reports whether every member has reported in this term.
func (s *state) reportedAll() bool {
	for _, m := range s.names {
		if _, ok := s.facts[m]; !ok {
			return false
		}
	}
	return true
}

// expire makes the moves and the releases whose deadline has passed,
// reports whether there were any, and counts the moves.
func (s *state) expire() (changed bool, late int) {
	for h, rel := range s.releases {
		if !rel.deadline.After(s.now) {
			s.release(h, rel)
			changed = true
		}
	}
	for h, ho := range s.handoffs {
		if !ho.deadline.After(s.now) {
			s.complete(h, ho, time.Time{})
			changed = true
			late++
		}
	}
	return changed, late
}

// nextDeadline returns the earliest deadline of a hand-off or a release,
// false without one.
func (s *state) nextDeadline() (time.Time, bool) {
	var next time.Time
	for _, m := range []map[uint64]*handoff{s.handoffs, s.releases} {
		for _, ho := range m {
			if next.IsZero() || ho.deadline.Before(next) {
				next = ho.deadline
			}
		}
	}
	return next, !next.IsZero()
}

// handoffs counts the moves under way, and of them those warming.
func (s *state) handoffCount() (all, warming int) {
	for _, ho := range s.handoffs {
		all++
		if ho.warming {
			warming++
		}
	}
	return all, warming
}

// target finds a known target by job and hash.
func (s *state) target(job string, h uint64) (discovery.Target, bool) {
	js, ok := s.jobs[job]
	if !ok {
		return discovery.Target{}, false
	}
	i, found := slices.BinarySearchFunc(js.targets, h, func(t discovery.Target, h uint64) int { return cmp.Compare(t.Hash, h) })
	if !found {
		return discovery.Target{}, false
	}
	return js.targets[i], true
}

// markedTarget is t as member scrapes it: with the leader's marks (see
// shares.Marks).
func markedTarget(t discovery.Target, marks ...labels.Label) shares.Target {
	b := labels.NewBuilder(t.Element.Labels())
	for _, l := range marks {
		b.Set(l.Name, l.Value)
	}
	return shares.Target{Hash: t.Hash, Element: httpsd.Encode(b.Labels())}
}

// scrapeShares rebuilds the scrape shares of the members whose share or
// extra targets changed in the jobs of keys.
func (s *state) scrapeShares(keys map[shareKey]bool) {
	changed := map[string]map[string]*shares.Share{}
	for k := range keys {
		js, ok := s.jobs[k.job]
		if !ok {
			continue
		}
		w := s.extra[k]
		if len(s.standby[k]) > 0 {
			w = maps.Clone(s.standby[k])
			maps.Copy(w, s.extra[k])
		}
		var share *shares.Share
		if len(w) > 0 {
			share = shares.NewShare(mergeExtra(js.job.Share(k.member).Targets(), w))
		} else {
			if len(s.extra[k]) == 0 {
				delete(s.extra, k)
			}
			if js.job.ScrapeShare(k.member) == js.job.Share(k.member) {
				continue // none before either
			}
		}
		if changed[k.job] == nil {
			changed[k.job] = map[string]*shares.Share{}
		}
		changed[k.job][k.member] = share
	}
	for name, byMember := range changed {
		s.jobs[name].job = s.jobs[name].job.WithScrape(byMember)
	}
}

// exactHeirs bounds the work of heirs: targets × members², the scores of
// an allocation without each member in turn.
const exactHeirs = 20_000_000

// heirs returns, with consistent-hashing, the member each target would go
// to if its member died, by allocating the targets without each member in
// turn, load bounds and limits included, while that costs at most
// exactHeirs scores; nil otherwise (allocation.Successor is then the
// heir, the load bounds apart).
func (s *state) heirs() map[uint64]string {
	if s.fresh == nil || s.alloc.Strategy() != allocation.ConsistentHashing || len(s.members) < 2 {
		return nil
	}
	var targets []allocation.Target
	for name, js := range s.jobs {
		for _, t := range js.targets {
			targets = append(targets, allocation.Target{Hash: t.Hash, Node: t.Node, Job: name, Pin: t.Pin})
		}
	}
	if len(targets)*len(s.members)*len(s.members) > exactHeirs {
		return nil
	}
	heirs := make(map[uint64]string, len(targets))
	for k, gone := range s.members {
		a, err := s.fresh()
		if err != nil {
			return nil
		}
		if err := a.SetMembers(slices.Delete(slices.Clone(s.members), k, k+1)); err != nil {
			return nil
		}
		a.SetTargets(targets)
		for _, t := range targets {
			if m, _ := s.alloc.MemberOf(t.Hash); m == gone.Identity {
				if heir, ok := a.MemberOf(t.Hash); ok {
					heirs[t.Hash] = heir
				}
			}
		}
	}
	return heirs
}

// standbyTarget is t as member scrapes it on hot standby.
func standbyTarget(t discovery.Target) shares.Target {
	return markedTarget(t, labels.Label{Name: shares.WarmingLabel, Value: shares.Standby})
}

// mergeExtra returns a share's targets and its member's extra targets,
// sorted by hash: an extra target of the share (one that arrives, marked
// with its cut-over) in place of the share's.
func mergeExtra(own []shares.Target, extra map[uint64]shares.Target) []shares.Target {
	w := slices.SortedFunc(maps.Values(extra), func(a, b shares.Target) int { return cmp.Compare(a.Hash, b.Hash) })
	out := make([]shares.Target, 0, len(own)+len(w))
	i, j := 0, 0
	for i < len(own) || j < len(w) {
		switch {
		case j == len(w) || i < len(own) && own[i].Hash < w[j].Hash:
			out = append(out, own[i])
			i++
		case i < len(own) && own[i].Hash == w[j].Hash:
			out = append(out, w[j])
			i++
			j++
		default:
			out = append(out, w[j])
			j++
		}
	}
	return out
}

// Hot standby: a member that reports hot_standby also warms the targets it
// would take if their member died, their successors in the allocator
// (allocation.Successor: consistent-hashing only). When their member dies,
// the allocator gives them to it, and its receiver already scrapes them:
// their data passes at once, with no poll or stock receiver delay. The
// price is a second scrape of every such target, and a pass over all
// targets (one score per target and member) at each allocation while a
// member is on standby.

// standbys computes what each standby member warms, and adds to keys the
// shares whose standby targets changed.
func (s *state) standbys(keys map[shareKey]bool) {
	any := false
	for _, f := range s.facts {
		any = any || f.standby
	}
	if !any && len(s.standby) == 0 {
		return
	}
	next := map[shareKey]map[uint64]shares.Target{}
	if any {
		heirs := s.heirs()
		for name, js := range s.jobs {
			for i, t := range js.targets {
				m, ok := heirs[t.Hash]
				if !ok {
					m, ok = allocation.Successor(s.alloc, t.Hash)
				}
				if !ok || !s.facts[m].standby || m == memberName(s.names, js.members[i]) {
					continue
				}
				if _, member := s.index[m]; !member {
					continue
				}
				k := shareKey{name, m}
				if next[k] == nil {
					next[k] = map[uint64]shares.Target{}
				}
				next[k][t.Hash] = standbyTarget(t)
			}
		}
	}
	for k, ts := range next {
		if !maps.EqualFunc(ts, s.standby[k], func(a, b shares.Target) bool { return a.Element == b.Element }) {
			keys[k] = true
		}
	}
	for k := range s.standby {
		if _, ok := next[k]; !ok {
			keys[k] = true
		}
	}
	s.standby = next
	s.standbyChanged = false
}
