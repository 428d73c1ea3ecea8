package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// reporter keeps what this member reports to its leader (internal/report)
// and sends it: after each change, and to each new leader.
type reporter struct {
	mu         sync.Mutex
	fenced     bool
	warmWithin time.Duration
	hotStandby bool
	leaving    bool
	// warm are the warming targets whose data was seen and not yet
	// reported, by job, with when the scrape began; sentAt when each was
	// last reported: the receiver sees a warming target's data at each
	// scrape, and the leader takes one report, so another within
	// resendAfter is not sent.
	warm   map[string]map[string]time.Time
	sentAt map[string]time.Time
	// term is the leader and epoch the last report went to, and
	// sentFenced and sentLeaving what it said of fencing and leaving.
	term        string
	sentFenced  bool
	sentLeaving bool
	dirty       chan struct{}
}

func newReporter() *reporter {
	return &reporter{warm: map[string]map[string]time.Time{}, sentAt: map[string]time.Time{}, dirty: make(chan struct{}, 1)}
}

func (r *reporter) wake() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// Fenced implements Group.
func (e *allocatorExtension) Fenced(warmWithin time.Duration, hotStandby bool) {
	r := e.reporter
	r.mu.Lock()
	r.fenced, r.warmWithin, r.hotStandby = true, warmWithin, hotStandby
	r.mu.Unlock()
	r.wake()
}

// Warmed implements Group.
func (e *allocatorExtension) Warmed(job, hash string, scraped time.Time) {
	r := e.reporter
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.warm[job][hash]; ok || time.Since(r.sentAt[hash]) < resendAfter {
		return
	}
	if r.warm[job] == nil {
		r.warm[job] = map[string]time.Time{}
	}
	r.warm[job][hash] = scraped
	r.wake()
}

// Leave implements Group.
func (e *allocatorExtension) Leave(ctx context.Context) error {
	r := e.reporter
	r.mu.Lock()
	r.leaving = true
	bound := r.warmWithin + leaveSlack
	fenced := r.fenced
	r.mu.Unlock()
	if !fenced || e.api == nil {
		return nil // the leader moves nothing make before break to it
	}
	r.wake()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	start := time.Now()
	if e.elector != nil && e.elector.IsLeader() && len(e.members.Members()) > 1 {
		// Another member leads while this one hands its share over: the
		// next leader's first allocation then counts this member in, as
		// the last one did, and moves nothing at once.
		e.set.Logger.Info("Stepping down before leaving")
		e.elector.StepDown()
	}
	for {
		own, changed := e.Shares()
		n, next, err := exporting(own, time.Now())
		if err == nil && n == 0 {
			e.set.Logger.Info("This member's share is handed over: leaving", zap.Duration("took", time.Since(start)))
			return nil
		}
		// A releasing target is no longer exported from its cut-over.
		cutover := time.NewTimer(time.Hour)
		if !next.IsZero() {
			cutover.Reset(time.Until(next))
		}
		select {
		case <-changed:
			cutover.Stop()
		case <-cutover.C:
		case <-ctx.Done():
			cutover.Stop()
			e.set.Logger.Warn("Leaving before this member's share is handed over", zap.Int("targets", n), zap.Duration("waited", time.Since(start)))
			return fmt.Errorf("hand over this member's share: %w", ctx.Err())
		}
	}
}

// resendAfter is how long after reporting a warming target's first scrape
// a member does not report it again: the leader moves the target within a
// round trip, after which its data is no longer the data of a warming
// target; if it still is (the report was lost), it is reported again.
const resendAfter = 5 * time.Second

// leaveSlack is how much longer than its warm_within a leaving member
// waits for its share to be handed over: the leader's deadline adds the
// job's scrape interval.
const leaveSlack = 15 * time.Second

// cutoverSettle is how long after a releasing target's cut-over a leaving
// member still counts it as its own: its last scrape before the cut-over
// may still be under way.
const cutoverSettle = time.Second

// exporting counts the targets of own whose data this member still exports
// at now: neither warming ones nor releasing ones past their cut-over (and
// cutoverSettle). It returns when the next of those still to come passes,
// zero without one.
func exporting(own Shares, now time.Time) (n int, next time.Time, err error) {
	var errs []error
	for _, s := range own {
		groups, err := s.Targets()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, g := range groups {
			m := shares.TakeMarks(maps.Clone(g.Labels))
			done := m.Cutover.Add(cutoverSettle)
			switch {
			case m.Warming != "":
			case m.Releasing && !m.Cutover.IsZero() && !now.Before(done):
			default:
				n += len(g.Targets)
				if m.Releasing && !m.Cutover.IsZero() && (next.IsZero() || done.Before(next)) {
					next = done
				}
			}
		}
	}
	return n, next, errors.Join(errs...)
}

// next returns the report to send to the leader of term now (the leader
// and its epoch; known says there is one), whether to send it (a member
// reports to each new leader, and, when its receiver fences, each change;
// seriesChanged says its series changed), and whether term is new: its
// report then also says what the member holds. The caller adds the series
// and what is held.
func (r *reporter) next(member, term string, known, seriesChanged bool) (rep report.Report, send, newTerm bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	newTerm = term != r.term
	send = known && (newTerm || r.fenced != r.sentFenced || r.fenced && (len(r.warm) > 0 || r.leaving != r.sentLeaving || seriesChanged))
	rep = report.Report{Member: member, Fenced: r.fenced, Cutover: r.fenced, WarmWithin: report.Duration(r.warmWithin), HotStandby: r.hotStandby, Leaving: r.leaving}
	if len(r.warm) > 0 {
		rep.Warm, rep.WarmAt = map[string][]string{}, map[string]int64{}
		for job, hashes := range r.warm {
			rep.Warm[job] = slices.Sorted(maps.Keys(hashes))
			for h, at := range hashes {
				if !at.IsZero() {
					rep.WarmAt[h] = at.UnixMilli()
				}
			}
		}
	}
	return rep, send, newTerm
}

// sent records that rep reached the leader of term at now: the warming
// targets it named are not reported again within resendAfter; those seen
// while it was sent go with the next report.
func (r *reporter) sent(rep report.Report, term string, newTerm bool, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if newTerm {
		clear(r.sentAt)
	}
	r.term, r.sentFenced, r.sentLeaving = term, rep.Fenced, rep.Leaving
	for h, at := range r.sentAt {
		if now.Sub(at) >= resendAfter {
			delete(r.sentAt, h)
		}
	}
	for job, hashes := range rep.Warm {
		for _, h := range hashes {
			r.sentAt[h] = now
			delete(r.warm[job], h)
		}
		if len(r.warm[job]) == 0 {
			delete(r.warm, job)
		}
	}
}

// sendReports runs while the member runs: it sends the member's report when it
// changed and to each new leader, and after a failure again after retry.
func (e *allocatorExtension) sendReports(ctx context.Context, retry time.Duration) {
	r := e.reporter
	// The series the receiver measured (series.go) go out with the next
	// report, at most every seriesInterval: every scrape changes them.
	seriesTicker := time.NewTicker(e.seriesInterval())
	defer seriesTicker.Stop()
	for ctx.Err() == nil {
		own, changed := e.Shares() // closed after a change of leader, too
		series, seriesChanged := e.measured.take(own)
		view := e.View()
		term := fmt.Sprintf("%s/%d", view.Leader, view.Epoch)
		rep, send, newTerm := r.next(e.s.identity, term, view.Leader != "", seriesChanged)
		rep.Series = series
		if newTerm {
			rep.Held = held(own) // what the new leader starts from
		}
		var err error
		if send {
			sendCtx, cancel := context.WithTimeout(ctx, retry+e.cfg.Client.Timeout)
			err = e.api.SendReport(sendCtx, rep)
			cancel()
		}
		if send && err == nil {
			r.sent(rep, term, newTerm, time.Now())
		}
		if seriesChanged && (!send || err != nil) {
			e.measured.mu.Lock()
			e.measured.dirty = true // with the next report
			e.measured.mu.Unlock()
		}
		if err != nil {
			e.set.Logger.Debug("Cannot report to the leader", zap.Error(err))
			allocatorapi.Pause(ctx, nil, retry)
			continue
		}
		select {
		case <-ctx.Done():
		case <-r.dirty:
		case <-changed:
		case <-seriesTicker.C:
		}
	}
}

// TakeReport implements allocatorapi.Reporter: the report goes to this
// member's term while it leads, its series to the term's series
// (series.go).
func (e *allocatorExtension) TakeReport(ctx context.Context, rep report.Report) error {
	term := e.reports.Load()
	if term == nil || e.Allocation() == nil {
		return errors.New("this member does not lead")
	}
	e.takeSeries(rep)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	select {
	case term.ch <- rep:
		return nil
	case <-term.done:
		// The member that sent it learns at once, and sends it to the
		// next leader, rather than after its request's timeout.
		return errors.New("this member's term ended")
	case <-ctx.Done():
		return fmt.Errorf("the leader's term did not take the report: %w", ctx.Err())
	}
}

// termReports is where the leader's term takes reports: its channel, and
// done, closed when the term ends.
type termReports struct {
	ch   chan<- report.Report
	done <-chan struct{}
}
