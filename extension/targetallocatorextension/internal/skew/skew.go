// Package skew sets a replica's wall clock apart from the real one, so that
// the integration tests can run replicas whose clocks disagree, in one
// process. Nothing outside tests sets it: a replica uses the real clock.
package skew

import (
	"sync"
	"time"

	"k8s.io/utils/clock"
)

var offsets sync.Map // identity → time.Duration

// Set makes the replica named identity, started after the call, see the
// time offset by d. The returned function undoes it.
func Set(identity string, d time.Duration) (undo func()) {
	offsets.Store(identity, d)
	return func() { offsets.Delete(identity) }
}

// Clock is the clock of the replica named identity: nil (the real clock)
// unless a test set an offset.
func Clock(identity string) clock.WithTicker {
	d, ok := offsets.Load(identity)
	if !ok {
		return nil
	}
	return offset{d: d.(time.Duration)}
}

// offset is the real clock, d ahead (behind, if d < 0). Timers and tickers
// measure durations, which an offset does not change.
type offset struct {
	clock.RealClock
	d time.Duration
}

func (o offset) Now() time.Time                  { return time.Now().Add(o.d) }
func (o offset) Since(t time.Time) time.Duration { return o.Now().Sub(t) }
