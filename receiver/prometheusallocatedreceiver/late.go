package prometheusallocatedreceiver // import "github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver"

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// lateScrapes keeps the last scrapes of each warming target, whose data the
// fence drops, for a member that learns of its move's cut-over late.
//
// The leader sets a move's cut-over a few seconds ahead (time for the
// allocation to reach both members); a member that learns of it only after
// it has passed, on a busy node, has dropped the scrapes taken between as a
// warming target's, and they would be exported by nobody: its old member
// drops them from the cut-over on. With the last scrapes kept, the fence
// passes those taken from the cut-over on as soon as it sees the target in
// its share, before its next scrape: late, but once. (A member that learns
// late of a move away exports the scrapes between twice instead; nothing
// can be taken back once exported.)
//
// What is kept is bounded: lateKept scrapes a target, lateMaxPoints data
// points in all; beyond, a scrape is not kept (it is lost only if its
// member also learns of the cut-over late).
type lateScrapes struct {
	mu     sync.Mutex
	kept   map[lateKey][]lateScrape
	points int
}

// lateKey names a target by the job of its share and its key in reports
// (report.TargetKey of its labels, without the leader's marks): the same
// while it warms and once it is in the share.
type lateKey struct{ job, target string }

type lateScrape struct {
	at time.Time // the scrape's time (scrapeTime)
	md pmetric.Metrics
}

const (
	// lateKept is how many of a warming target's last scrapes are kept: a
	// member that learns of the cut-over up to this many intervals late
	// loses nothing.
	lateKept = 3
	// lateMaxPoints bounds the data points kept for all warming targets
	// (at a few hundred bytes a point, tens of MB).
	lateMaxPoints = 200_000
)

// keep keeps a copy of a warming target's scrape, begun at, without its
// staleness markers (which pass at once), dropping the oldest beyond
// lateKept.
func (l *lateScrapes) keep(key lateKey, md pmetric.Metrics, at time.Time) {
	c := pmetric.NewMetrics()
	md.CopyTo(c)
	removePoints(c, true)
	n := c.DataPointCount()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kept == nil {
		l.kept = map[lateKey][]lateScrape{}
	}
	kept := l.kept[key]
	if len(kept) == lateKept {
		l.points -= kept[0].md.DataPointCount()
		kept = append(kept[:0], kept[1:]...)
	}
	if l.points+n > lateMaxPoints {
		l.kept[key] = kept
		return
	}
	l.kept[key] = append(kept, lateScrape{at: at, md: c})
	l.points += n
}

// take removes what is kept of a target and returns its scrapes taken at
// or after from and before until, oldest first.
func (l *lateScrapes) take(key lateKey, from, until time.Time) []pmetric.Metrics {
	l.mu.Lock()
	kept, ok := l.kept[key]
	if ok {
		delete(l.kept, key)
		for _, s := range kept {
			l.points -= s.md.DataPointCount()
		}
	}
	l.mu.Unlock()
	var out []pmetric.Metrics
	for _, s := range kept {
		if !s.at.Before(from) && s.at.Before(until) {
			out = append(out, s.md)
		}
	}
	return out
}

// retain drops what is kept of the targets that neither warm nor arrived
// with a cut-over any more, as arriving (called only when something is
// kept) returns them.
func (l *lateScrapes) retain(arriving func() map[lateKey]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.kept) == 0 {
		return
	}
	keep := arriving()
	for key, kept := range l.kept {
		if !keep[key] {
			for _, s := range kept {
				l.points -= s.md.DataPointCount()
			}
			delete(l.kept, key)
		}
	}
}

// pass hands next the scrapes of a target kept while it warmed that were
// taken from its cut-over on and before the scrape at hand (taken at now).
func (l *lateScrapes) pass(ctx context.Context, next consumer.Metrics, key lateKey, cutover, now time.Time) error {
	for _, md := range l.take(key, cutover, now) {
		if err := next.ConsumeMetrics(ctx, md); err != nil {
			return err
		}
	}
	return nil
}
