package prometheusallocatedreceiver // import "github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver"

import (
	"sync"
	"time"
)

// returns keeps, for the fence, the targets that came back to what this
// member scrapes soon after they had left it, and when.
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
}

func newReturns(forget, settle time.Duration) returns {
	return returns{forget: forget, settle: settle, left: map[lateKey]time.Time{}, back: map[lateKey]time.Time{}}
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
	var before map[string]jobTargets
	if prev != nil {
		before = prev.jobs
	}
	for job, jt := range next.jobs {
		was, had := before[job]
		if had && jt.etag != "" && was.etag == jt.etag {
			continue
		}
		gone := make(map[string]bool, len(was.targets))
		for _, t := range was.targets {
			gone[t.seriesKey] = true
		}
		for _, t := range jt.targets {
			if gone[t.seriesKey] {
				delete(gone, t.seriesKey)
				continue
			}
			k := lateKey{job, t.seriesKey}
			if _, ok := r.left[k]; ok {
				delete(r.left, k)
				r.back[k] = now
			}
		}
		for key := range gone {
			r.left[lateKey{job, key}] = now
		}
	}
	for job, was := range before {
		if _, ok := next.jobs[job]; !ok {
			for _, t := range was.targets {
				r.left[lateKey{job, t.seriesKey}] = now
			}
		}
	}
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
