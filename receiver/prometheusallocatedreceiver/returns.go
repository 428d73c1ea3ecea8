package prometheusallocatedreceiver // import "github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver"

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
)

// returns keeps, for the fence, the targets that came back to what this
// member scrapes soon after they had left it, and when; and those that
// left it as another member's (away), whose scrape loops' staleness
// markers the fence drops.
//
// The stock receiver acts on what it reads of its share late: its HTTP SD
// polls every refresh_interval, its discovery manager passes what it read
// on within 5 s, its scrape manager reloads within 5 s more (stockDelays).
// A target that leaves what this member scrapes and comes back within
// refresh_interval + stockDelays (a move away and, at the next change of
// the group, back: a join followed by a restart of the member that
// joined) may still be scraped by the stock receiver's scrape loop from
// before, which stops when the stock receiver acts on a poll that read the
// target gone: up to stockDelays after it came back, and a new loop starts
// only with a later reload. A warming target's first scrape, taken by a
// loop that is about to stop, would have the leader put the move's
// cut-over among the scrapes that this member then never takes: lost. So
// the fence reports a warming target that came back so soon only from a
// scrape taken stockDelays after it came back (and warmSlack more, for a
// late answer or a slow reload on a busy node): every poll since has read
// it, and its loop stays.
type returns struct {
	mu sync.Mutex
	// forget is how long after a target left the stock receiver may still
	// scrape it (refresh_interval + stockDelays), settle how long after it
	// came back its scrape loop may still stop (stockDelays); both with
	// warmSlack more.
	forget, settle time.Duration
	// left are the targets that left what this member scrapes less than
	// forget ago, back those that came back after that less than settle
	// ago: when.
	left, back map[lateKey]time.Time
	// away are the targets that left what this member scrapes as another
	// member's (releasing, warming or on standby: their series go on at
	// their member), for awayKept: the staleness markers that the stock
	// receiver's scrape loop writes when it stops, two intervals after it
	// stopped, up to forget after they left, are dropped.
	away map[targetKey][]awayTarget
}

// awayTarget is a target that left as another member's: its labels in the
// share, and when.
type awayTarget struct {
	labels labels.Labels
	at     time.Time
}

// awayKept bounds how long a target that left as another member's is kept
// beyond forget: its scrape loop's staleness markers come two intervals
// and a tenth after the loop stopped, so scrape intervals up to 10 minutes
// are covered.
const awayKept = 30 * time.Minute

func newReturns(forget, settle time.Duration) returns {
	return returns{forget: forget, settle: settle, left: map[lateKey]time.Time{}, back: map[lateKey]time.Time{}, away: map[targetKey][]awayTarget{}}
}

// observe takes the change from prev to next of what this member scrapes,
// seen at now: the jobs whose ETag changed.
func (r *returns) observe(prev, next *shareIndex, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, at := range r.left {
		if now.Sub(at) >= r.forget {
			delete(r.left, k)
		}
	}
	for k, at := range r.back {
		if now.Sub(at) >= r.settle {
			delete(r.back, k)
		}
	}
	for k, ts := range r.away {
		ts = slices.DeleteFunc(ts, func(t awayTarget) bool { return now.Sub(t.at) >= r.forget+awayKept })
		if len(ts) == 0 {
			delete(r.away, k)
		} else {
			r.away[k] = ts
		}
	}
	var before map[string]jobTargets
	if prev != nil {
		before = prev.jobs
	}
	for job, jt := range next.jobs {
		was, had := before[job]
		if had && jt.etag != "" && was.etag == jt.etag {
			continue
		}
		gone := make(map[string]shareTarget, len(was.targets))
		for _, t := range was.targets {
			gone[t.seriesKey] = t
		}
		for _, t := range jt.targets {
			if _, ok := gone[t.seriesKey]; ok {
				delete(gone, t.seriesKey)
				continue
			}
			k := lateKey{job, t.seriesKey}
			if _, ok := r.left[k]; ok {
				delete(r.left, k)
				r.back[k] = now
			}
			r.arrived(t)
		}
		for _, t := range gone {
			r.leave(job, t, now)
		}
	}
	for job, was := range before {
		if _, ok := next.jobs[job]; !ok {
			for _, t := range was.targets {
				r.leave(job, t, now)
			}
		}
	}
}

// leave records that t of job left what this member scrapes at now.
func (r *returns) leave(job string, t shareTarget, now time.Time) {
	r.left[lateKey{job, t.seriesKey}] = now
	if t.marks.Releasing || t.marks.Warming != "" {
		r.away[t.key] = append(r.away[t.key], awayTarget{labels: t.labels, at: now})
	}
}

// arrived forgets that t left as another member's.
func (r *returns) arrived(t shareTarget) {
	ts := slices.DeleteFunc(r.away[t.key], func(a awayTarget) bool { return labels.Equal(a.labels, t.labels) })
	if len(ts) == 0 {
		delete(r.away, t.key)
	} else {
		r.away[t.key] = ts
	}
}

// movedAway reports whether target, scraped by the stock receiver, left
// what this member scrapes as another member's less than forget and three
// of its intervals before now: its scrape loop's staleness markers are no
// end of its series.
func (r *returns) movedAway(target *scrape.Target, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.away) == 0 {
		return false
	}
	discovered := target.DiscoveredLabels(labels.NewBuilder(labels.EmptyLabels()))
	key := targetKey{job: discovered.Get(model.JobLabel), address: discovered.Get(model.AddressLabel)}
	interval, _ := model.ParseDuration(target.GetValue(model.ScrapeIntervalLabel))
	for _, a := range r.away[key] {
		if now.Sub(a.at) < r.forget+3*time.Duration(interval) && sameTarget(a.labels, discovered) {
			return true
		}
	}
	return false
}

// settled reports whether a scrape of the target, begun at scraped, is
// taken by a scrape loop that stays: false when the target came back less
// than settle before it.
func (r *returns) settled(k lateKey, scraped time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	back, ok := r.back[k]
	return !ok || !scraped.Before(back.Add(r.settle))
}
