package election

import (
	"fmt"
	"time"
)

// JitterFactor is client-go's margin between RenewDeadline and RetryPeriod;
// the same validation keeps lease settings portable between the two.
const JitterFactor = 1.2

// ValidateTiming checks the lease timings of a group's leader and members:
// duration > renewDeadline > JitterFactor × retryPeriod > 0, the duration in
// whole seconds, since a Lease holds it in seconds. Errors name the
// extension's keys, lease::duration, lease::renew_deadline and
// lease::retry_period, because that is where a user sets them.
func ValidateTiming(duration, renewDeadline, retryPeriod time.Duration) error {
	switch {
	case duration < time.Second || duration%time.Second != 0:
		return fmt.Errorf("lease::duration: %s must be a whole number of seconds, at least 1s", duration)
	case retryPeriod <= 0:
		return fmt.Errorf("lease::retry_period: %s must be greater than zero", retryPeriod)
	case renewDeadline <= time.Duration(JitterFactor*float64(retryPeriod)):
		return fmt.Errorf("lease::renew_deadline: %s must be greater than %.1f × lease::retry_period (%s)", renewDeadline, JitterFactor, retryPeriod)
	case duration <= renewDeadline:
		return fmt.Errorf("lease::renew_deadline: %s must be less than lease::duration (%s)", renewDeadline, duration)
	}
	return nil
}

// Leader is the election record as this member last observed it.
type Leader struct {
	// Identity of the holder; "" when nobody holds the Lease.
	Identity string
	// Transitions counts changes of holder: the epoch of the leadership.
	Transitions   int
	AcquireTime   time.Time
	RenewTime     time.Time
	LeaseDuration time.Duration
	// ObservedAt is when this member saw the record change, by its clock.
	ObservedAt time.Time
}

// state is the election as one member sees it, with every decision the
// member takes on it. Like a raft state machine it does no I/O and reads no
// clock: the Elector passes the local time in with each event, so every
// timing window is a plain function of time values.
//
// Expiry is judged from when this member saw a record change, by its own
// clock, never from the timestamps in the record: the members' clocks may
// be offset from one another by any amount (rate differences must stay
// within the margin LeaseDuration − RenewDeadline).
type state struct {
	identity      string
	leaseDuration time.Duration
	renewDeadline time.Duration

	seen    bool   // a record, or the Lease's deletion, has been observed
	leader  Leader // the record last observed
	leading bool
	renewed time.Time // when the last successful write of this member's claim was sent
}

// observe notes a record read or watched at now, and reports whether the
// holder changed. A record equal to the last one is no new observation and
// keeps its date: a re-list or a re-read does not extend a lease. While this
// member leads, another holder's record of an earlier epoch is a late event
// from before it took over, and is ignored; so is this member's own claim
// older than the record last observed in its epoch.
func (s *state) observe(l Leader, now time.Time) (newHolder bool) {
	if s.seen && sameRecord(s.leader, l) {
		return false
	}
	if s.leading && l.Identity != s.identity && l.Transitions < s.leader.Transitions {
		return false
	}
	// This member's own claim, older than the record last observed in the
	// same epoch (its release, or a later renewal): a late watch event of
	// a write this member has since overwritten.
	if s.seen && l.Identity == s.identity && l.Transitions == s.leader.Transitions && l.RenewTime.Before(s.leader.RenewTime) {
		return false
	}
	newHolder = !s.seen || s.leader.Identity != l.Identity
	l.ObservedAt = now
	s.leader, s.seen = l, true
	return newHolder
}

// deleted notes that the Lease is gone at now: nobody holds it, and its
// epoch is kept, so that whoever creates it again carries the epoch on.
func (s *state) deleted(now time.Time) (newHolder bool) {
	return s.observe(Leader{Transitions: s.leader.Transitions}, now)
}

func sameRecord(a, b Leader) bool {
	return a.Identity == b.Identity && a.Transitions == b.Transitions && a.LeaseDuration == b.LeaseDuration &&
		a.AcquireTime.Equal(b.AcquireTime) && a.RenewTime.Equal(b.RenewTime)
}

// leaseLeft is how long the observed holder's lease runs on at now; at ≤ 0
// this member may try to take the Lease: it is absent, released, its own
// (from before a restart), or not renewed for its duration since observed.
func (s *state) leaseLeft(now time.Time) time.Duration {
	if !s.seen || s.leader.Identity == "" || s.leader.Identity == s.identity {
		return 0
	}
	return s.leader.ObservedAt.Add(s.leader.LeaseDuration).Sub(now)
}

// claim is the record this member writes at now to take the Lease; current
// is the Lease as just read, nil if there is none. The epoch counts every
// term, a new one by the same member too, and never goes back, even when
// the Lease was deleted.
func (s *state) claim(current *Leader, now time.Time) Leader {
	l := Leader{Identity: s.identity, LeaseDuration: s.leaseDuration, AcquireTime: now, RenewTime: now}
	switch {
	case current == nil && s.seen:
		l.Transitions = s.leader.Transitions + 1
	case current == nil:
	default:
		// Its own record too: a member that takes the Lease again (after a
		// restart, or a term that ended in an outage) begins a new term,
		// whose answers must not pass for the old one's.
		l.Transitions = current.Transitions + 1
	}
	return l
}

// reread notes the Lease as read at now after a write of this member's
// conflicted. That read is current, never late: another holder there ends
// this member's term at once, whatever its epoch.
func (s *state) reread(l Leader, now time.Time) (newHolder bool) {
	if l.Identity != s.identity {
		s.leading = false
	}
	return s.observe(l, now)
}

// renewal is the record a renewal sent at now writes.
func (s *state) renewal(now time.Time) Leader {
	return Leader{Identity: s.identity, Transitions: s.leader.Transitions, AcquireTime: s.leader.AcquireTime,
		RenewTime: now, LeaseDuration: s.leaseDuration}
}

// wrote notes that this member's write of its claim or renewal l, sent at
// sent, succeeded: it leads, from the moment the write left, which is
// earlier than any other member can have seen it.
func (s *state) wrote(l Leader, sent time.Time) (newHolder bool) {
	newHolder = s.observe(l, sent)
	s.leading, s.renewed = true, sent
	return newHolder
}

// renewBy is when this member stops leading unless a renewal succeeds first.
func (s *state) renewBy() time.Time { return s.renewed.Add(s.renewDeadline) }

// isLeader reports whether this member leads at now: it won, no other
// holder (or none) has been observed since, and its last successful
// renewal is younger than RenewDeadline. Past that, other members may
// already have taken over, whatever this member's renewal loop still
// believes, such as after its process was frozen.
func (s *state) isLeader(now time.Time) bool {
	return s.leading && s.leader.Identity == s.identity && now.Before(s.renewBy())
}

// leaderLive reports whether the record names a leader at now that this
// member may count on: itself while it leads, another holder while its lease
// runs. A member that can no longer read the Lease sees its record age past
// that, and must learn who leads elsewhere.
func (s *state) leaderLive(now time.Time) bool {
	return s.isLeader(now) || s.leaseLeft(now) > 0
}

// stoppedLeading notes that this member's term ended.
func (s *state) stoppedLeading() { s.leading = false }

// release is the record that hands the Lease over at now, and whether this
// member holds the Lease to release. An empty holder lets any member take
// it at once, without waiting for it to expire.
func (s *state) release(now time.Time) (Leader, bool) {
	if !s.seen || s.leader.Identity != s.identity {
		return Leader{}, false
	}
	return Leader{Transitions: s.leader.Transitions, AcquireTime: now, RenewTime: now, LeaseDuration: time.Second}, true
}
