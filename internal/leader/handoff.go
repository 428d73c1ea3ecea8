package leader

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/labels"

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
// member's. Both members learn of that allocation within a round trip, so
// the data of one scrape at most is exported twice or not at all.
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

// waitForReport bounds how long a move waits for its new member to report
// that it fences: a member that has just joined reports within seconds, a
// member whose receiver is the stock one never does.
const waitForReport = 20 * time.Second

// defaultWarmWithin is the warm_within of a member that reports none.
const defaultWarmWithin = 45 * time.Second

// handoff is one target's move, from its old member to its new one.
type handoff struct {
	job      string
	from, to string
	deadline time.Time
	// warming is set once the target is in to's scrape share; before,
	// to has not reported that it fences.
	warming bool
}

// memberFacts are what a member last reported of itself.
type memberFacts struct {
	fenced     bool
	warmWithin time.Duration
	leaving    bool
}

// assign gives the target at i of job to member, make before break when
// it has a member now and member is one.
func (s *state) assign(job string, js *jobState, i int, member string) {
	t := js.targets[i]
	was := memberName(s.names, js.members[i])
	if ho := s.handoffs[t.Hash]; ho != nil {
		if ho.to == member && was != "" {
			return // under way
		}
		s.cancel(t.Hash, ho)
	}
	if member == was {
		return
	}
	facts, reported := s.facts[member]
	if !s.handoff || was == "" || member == "" || reported && !facts.fenced {
		s.move(job, js, i, member)
		return
	}
	ho := &handoff{job: job, from: was, to: member, deadline: s.now.Add(waitForReport)}
	s.handoffs[t.Hash] = ho
	if facts.fenced {
		s.warm(t, ho)
	}
}

// move moves the target at i of job to member at once.
func (s *state) move(job string, js *jobState, i int, member string) {
	t := js.targets[i]
	s.leave(job, memberName(s.names, js.members[i]), t.Hash)
	s.enter(job, member, t)
	js.members[i] = s.memberIndex(member)
	s.moved++
}

// warm puts the target of ho in its new member's scrape share.
func (s *state) warm(t discovery.Target, ho *handoff) {
	ho.warming = true
	ho.deadline = s.now.Add(s.warmWithin(ho.to, ho.job))
	k := shareKey{ho.job, ho.to}
	if s.warming[k] == nil {
		s.warming[k] = map[uint64]shares.Target{}
	}
	s.warming[k][t.Hash] = warmingTarget(t, ho.to)
	s.warmingChanged[k] = true
}

// cancel ends a hand-off without a move.
func (s *state) cancel(h uint64, ho *handoff) {
	if ho.warming {
		k := shareKey{ho.job, ho.to}
		delete(s.warming[k], h)
		s.warmingChanged[k] = true
	}
	delete(s.handoffs, h)
}

// complete ends a hand-off with its move.
func (s *state) complete(h uint64, ho *handoff) {
	s.cancel(h, ho)
	js, ok := s.jobs[ho.job]
	if !ok {
		return
	}
	if i, found := slices.BinarySearchFunc(js.targets, h, func(t discovery.Target, h uint64) int { return cmp.Compare(t.Hash, h) }); found {
		s.move(ho.job, js, i, ho.to)
	}
}

// rewarm replaces a warming target's labels after discovery changed them.
func (s *state) rewarm(t discovery.Target) {
	if ho := s.handoffs[t.Hash]; ho != nil && ho.warming {
		k := shareKey{ho.job, ho.to}
		s.warming[k][t.Hash] = warmingTarget(t, ho.to)
		s.warmingChanged[k] = true
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
	s.facts[r.Member] = memberFacts{fenced: r.Fenced, warmWithin: time.Duration(r.WarmWithin), leaving: r.Leaving}
	if !known && len(s.facts) > 2*len(s.names)+64 {
		for m := range s.facts { // forget those that are no members
			if _, member := s.index[m]; !member && m != r.Member {
				delete(s.facts, m)
			}
		}
	}
	changed := false
	if was.leaving != r.Leaving && s.names != nil {
		moved, err := s.place()
		if err != nil {
			return false, err
		}
		changed = moved
	}
	if r.Fenced {
		for h, ho := range s.handoffs {
			if ho.to == r.Member && !ho.warming {
				if t, ok := s.target(ho.job, h); ok {
					s.warm(t, ho)
					changed = true
				}
			}
		}
	}
	for _, hashes := range r.Warm {
		for _, hex := range hashes {
			h, err := report.ParseHash(hex)
			if err != nil {
				continue // Validate has said so
			}
			if ho := s.handoffs[h]; ho != nil && ho.to == r.Member && ho.warming {
				s.complete(h, ho)
				changed = true
			}
		}
	}
	return changed, nil
}

// expire makes the moves whose deadline has passed, and reports whether
// there were any.
func (s *state) expire() bool {
	changed := false
	for h, ho := range s.handoffs {
		if !ho.deadline.After(s.now) {
			s.complete(h, ho)
			changed = true
		}
	}
	return changed
}

// nextDeadline returns the earliest hand-off deadline, false without one.
func (s *state) nextDeadline() (time.Time, bool) {
	var next time.Time
	for _, ho := range s.handoffs {
		if next.IsZero() || ho.deadline.Before(next) {
			next = ho.deadline
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

// warmingTarget is t as its new member scrapes it while it warms: marked
// with shares.WarmingLabel.
func warmingTarget(t discovery.Target, member string) shares.Target {
	b := labels.NewBuilder(t.Element.Labels())
	b.Set(shares.WarmingLabel, report.FormatHash(t.Hash))
	return shares.Target{Job: t.Job, Member: member, Hash: t.Hash, Element: httpsd.Encode(b.Labels())}
}

// scrapeShares rebuilds the scrape shares of the members whose share or
// warming targets changed in the jobs of keys.
func (s *state) scrapeShares(keys map[shareKey]bool) {
	changed := map[string]map[string]*shares.Share{}
	for k := range keys {
		js, ok := s.jobs[k.job]
		if !ok {
			continue
		}
		w := s.warming[k]
		var share *shares.Share
		if len(w) > 0 {
			share = shares.NewShare(mergeWarming(js.job.Share(k.member).Targets(), w))
		} else {
			delete(s.warming, k)
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

// mergeWarming returns a share's targets and its member's warming targets,
// sorted by hash.
func mergeWarming(own []shares.Target, warming map[uint64]shares.Target) []shares.Target {
	w := slices.SortedFunc(maps.Values(warming), func(a, b shares.Target) int { return cmp.Compare(a.Hash, b.Hash) })
	out := make([]shares.Target, 0, len(own)+len(w))
	i, j := 0, 0
	for i < len(own) || j < len(w) {
		if j == len(w) || i < len(own) && own[i].Hash < w[j].Hash {
			out = append(out, own[i])
			i++
		} else {
			out = append(out, w[j])
			j++
		}
	}
	return out
}
