package membership

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/embedded-ta/embedded-ta/internal/election"
)

// roster is the group's member Leases as one member sees them, with every
// decision the member takes on them. It does no I/O and reads no clock: the
// Membership passes the local time in with each event.
//
// A member is live for its lease duration after this member saw its Lease
// renewed, by this member's clock; the renewTime in the Lease, written by
// the other member's clock, only tells a renewal from a repetition. Clock
// offsets between members therefore change nothing.
type roster map[string]Member // by Lease name, live or not

// observe notes a member's Lease as seen at now. Only a new renewTime is a
// new renewal: a Lease re-listed or changed otherwise keeps its date.
func (r roster) observe(name string, m Member, now time.Time) {
	m.ObservedAt = now
	if old, ok := r[name]; ok && old.RenewTime.Equal(m.RenewTime) {
		m.ObservedAt = old.ObservedAt
	}
	r[name] = m
}

// forget drops a member whose Lease was deleted: it left the group.
func (r roster) forget(name string) { delete(r, name) }

// live returns the members live at now, by identity, and how long until the
// first of them expires (ok is false when none is live). A member expires
// exactly its lease duration after its renewal was observed.
func (r roster) live(now time.Time) (members []Member, next time.Duration, ok bool) {
	members = make([]Member, 0, len(r))
	for _, m := range r {
		left := m.ObservedAt.Add(m.LeaseDuration).Sub(now)
		if left <= 0 {
			continue
		}
		members = append(members, m)
		if !ok || left < next {
			next, ok = left, true
		}
	}
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.Identity, b.Identity) })
	return members, next, ok
}

// known returns every member in the roster, live or not, by identity.
func (r roster) known() []Member {
	members := slices.Collect(maps.Values(r))
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.Identity, b.Identity) })
	return members
}

// sameMembers reports whether two member lists name the same members at the
// same places; renewals alone change nothing a reader of the list uses.
func sameMembers(a, b []Member) bool {
	return slices.EqualFunc(a, b, func(a, b Member) bool {
		return a.Identity == b.Identity && a.Endpoint == b.Endpoint && a.Node == b.Node
	})
}

// stale returns the Leases the leader's Sweep deletes at now, by name, with
// the resource version they were seen at: those of members gone for twice
// their lease duration, a whole duration past their expiry, such as
// members removed by a scale-down after a crash.
func (r roster) stale(now time.Time) map[string]string {
	stale := map[string]string{}
	for name, m := range r {
		if now.Sub(m.ObservedAt) >= 2*m.LeaseDuration {
			stale[name] = m.resourceVersion
		}
	}
	return stale
}

// joined reports whether this member counts as a member at now, its own
// Lease last written at renewed: for renewDeadline after that, shorter than
// the lease duration after which the others drop it, so that it never
// counts itself in when the others may not.
func joined(renewed, now time.Time, renewDeadline time.Duration) bool {
	return !renewed.IsZero() && now.Sub(renewed) < renewDeadline
}

// maxGroupWrites bounds the member Lease writes a second of a whole group,
// whatever its size; the leader Lease's renewals (one a retry period) and
// the leader's sweeps come on top, within 100 a second.
const maxGroupWrites = 90

// Timing returns a member's renewal period in a group of size
// members, and the lease duration and renew deadline that go with it: the
// configured ones, longer by the period's growth (times the election's
// jitter factor, in whole seconds), so that a renewal may come as late,
// beyond its period, as the configured timing allows.
func Timing(duration, renewDeadline, retryPeriod time.Duration, size int) (period, memberDuration, memberDeadline time.Duration) {
	period = max(retryPeriod, (time.Duration(size)*time.Second+maxGroupWrites-1)/maxGroupWrites) // rounded up: never more writes
	var extra time.Duration
	if grown := period - retryPeriod; grown > 0 {
		extra = (time.Duration(election.JitterFactor*float64(grown)) + time.Second - 1).Truncate(time.Second)
	}
	return period, duration + extra, renewDeadline + extra
}
