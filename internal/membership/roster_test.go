package membership

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/embedded-ta/embedded-ta/internal/election"
)

// The decisions of one member about its group, as plain functions of time
// values: each case states which member Leases it saw when, by its own
// clock, and what it decides at a given local time.

const (
	testDuration = 15 * time.Second
	testDeadline = 10 * time.Second
	testRenew    = 2 * time.Second
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// lease is identity's member Lease, renewed at renewed by its own clock.
func lease(identity string, renewed time.Time, version string) Member {
	return Member{Identity: identity, Endpoint: identity + ":8080", RenewTime: renewed, LeaseDuration: testDuration, resourceVersion: version}
}

func identities(members []Member) []string {
	var ids []string
	for _, m := range members {
		ids = append(ids, m.Identity)
	}
	return ids
}

// A member is live for exactly its lease duration after this member saw it
// renewed; the next expiry is the earliest of them.
func TestMemberExpiry(t *testing.T) {
	tests := []struct {
		name     string
		now      time.Time
		want     []string
		wantNext time.Duration
	}{
		{"at the sighting", t0, []string{"a", "b"}, testDuration},
		{"a just before its expiry", at(testDuration - time.Nanosecond), []string{"a", "b"}, time.Nanosecond},
		{"a at its expiry", at(testDuration), []string{"b"}, 5 * time.Second},
		{"b just before its expiry", at(20*time.Second - time.Nanosecond), []string{"b"}, time.Nanosecond},
		{"both expired", at(20 * time.Second), nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := roster{}
			r.observe("a", lease("a", t0, "1"), t0)
			r.observe("b", lease("b", t0, "2"), at(5*time.Second))
			members, next, ok := r.live(tt.now)
			if got := identities(members); !slices.Equal(got, tt.want) || next != tt.wantNext || ok != (tt.want != nil) {
				t.Fatalf("live %v, next expiry in %s (%v); want %v in %s", got, next, ok, tt.want, tt.wantNext)
			}
		})
	}
}

// Members whose clocks are 10s ahead of or behind this member's stay
// members as long as they renew, and expire exactly a lease duration after
// their last renewal was seen: the renewTime they write is never compared
// with this member's clock.
func TestClockOffsetsDoNotMatter(t *testing.T) {
	for _, offset := range []time.Duration{10 * time.Second, -10 * time.Second, 0} {
		t.Run(offset.String(), func(t *testing.T) {
			r := roster{}
			var last time.Time
			for d := time.Duration(0); d <= 3*testDuration; d += testRenew {
				last = at(d)
				r.observe("m", lease("m", last.Add(offset), "1"), last)
				if members, _, _ := r.live(last.Add(testRenew - time.Nanosecond)); len(members) != 1 {
					t.Fatalf("%s after joining, the member renewing every %s is gone", d, testRenew)
				}
			}
			if members, _, _ := r.live(last.Add(testDuration - time.Nanosecond)); len(members) != 1 {
				t.Fatal("the member expired before its lease duration")
			}
			if members, _, _ := r.live(last.Add(testDuration)); len(members) != 0 {
				t.Fatal("the member outlived its lease duration")
			}
		})
	}
}

// Only a new renewTime is a renewal. The same renewTime seen again (a
// re-list, a write by another hand) keeps the first sighting's date, while
// the Lease's other fields are taken.
func TestSameRenewTimeIsNoNewObservation(t *testing.T) {
	r := roster{}
	r.observe("m", lease("m", t0, "1"), t0)
	again := lease("m", t0, "2")
	again.Endpoint = "10.0.0.9:8080"
	r.observe("m", again, at(10*time.Second))
	if got := r["m"]; !got.ObservedAt.Equal(t0) || got.Endpoint != "10.0.0.9:8080" || got.resourceVersion != "2" {
		t.Fatalf("member %+v, want the new endpoint and version, observed at %s", got, t0)
	}
	if members, _, _ := r.live(at(testDuration)); len(members) != 0 {
		t.Fatal("a repeated renewTime extended the lease")
	}
	r.observe("m", lease("m", at(-time.Minute), "3"), at(20*time.Second)) // its clock stepped back: still a renewal
	if members, _, _ := r.live(at(20*time.Second + testDuration - time.Nanosecond)); len(members) != 1 {
		t.Fatal("a renewal with an earlier renewTime was not taken")
	}
}

// A member that leaves deletes its Lease, and is gone at once, long before
// its lease would have run out.
func TestGracefulLeave(t *testing.T) {
	r := roster{}
	r.observe("a", lease("a", t0, "1"), t0)
	r.observe("b", lease("b", t0, "2"), t0)
	r.forget("a")
	if members, _, _ := r.live(at(time.Millisecond)); !slices.Equal(identities(members), []string{"b"}) {
		t.Fatalf("live %v after a left, want [b]", identities(members))
	}
	if stale := r.stale(at(time.Hour)); !maps.Equal(stale, map[string]string{"b": "2"}) {
		t.Fatalf("stale %v, want only b's Lease: a's is gone already", stale)
	}
}

// A member knows every peer whose Lease it saw and not saw deleted, live
// or not: once cut off from the API server, every Lease expires by its
// clock, and these are the peers it can still ask who leads.
func TestKnownOutlivesExpiry(t *testing.T) {
	r := roster{}
	r.observe("b", lease("b", t0, "2"), t0)
	r.observe("a", lease("a", t0, "1"), t0)
	r.observe("c", lease("c", t0, "3"), t0)
	r.forget("c")
	if members, _, ok := r.live(at(time.Hour)); ok {
		t.Fatalf("live %v an hour later, want none", identities(members))
	}
	if got := identities(r.known()); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("known %v, want [a b]: expired, not deleted", got)
	}
}

// The leader's Sweep deletes the Leases of members gone for twice their
// lease duration, at the version last seen, so that a renewal since wins.
func TestSweep(t *testing.T) {
	tests := []struct {
		name string
		now  time.Time
		want map[string]string
	}{
		{"live", at(testDuration - time.Nanosecond), map[string]string{}},
		{"expired, not long gone", at(2*testDuration - time.Nanosecond), map[string]string{}},
		{"gone for 2× lease duration", at(2 * testDuration), map[string]string{"a": "3"}},
		{"both long gone", at(time.Hour), map[string]string{"a": "3", "b": "4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := roster{}
			r.observe("a", lease("a", t0, "1"), t0)
			r.observe("a", lease("a", t0, "3"), at(time.Second)) // a label change: no renewal, a new version
			r.observe("b", lease("b", t0, "4"), at(10*time.Second))
			if got := r.stale(tt.now); !maps.Equal(got, tt.want) {
				t.Fatalf("stale %v, want %v", got, tt.want)
			}
		})
	}
}

// A member counts itself in for its renew deadline after the last write of
// its own Lease that succeeded was sent: before the others, judging by the
// lease duration, can drop it.
func TestJoined(t *testing.T) {
	tests := []struct {
		name    string
		renewed time.Time
		now     time.Time
		want    bool
	}{
		{"never written", time.Time{}, t0, false},
		{"just written", t0, t0, true},
		{"just before the deadline", t0, at(testDeadline - time.Nanosecond), true},
		{"at the deadline", t0, at(testDeadline), false},
		{"frozen past its lease", t0, at(time.Minute), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := joined(tt.renewed, tt.now, testDeadline); got != tt.want {
				t.Fatalf("joined %v, want %v", got, tt.want)
			}
		})
	}
}

// Renewals change no member list; a member's new endpoint or node does.
func TestSameMembers(t *testing.T) {
	a, b := lease("a", t0, "1"), lease("b", t0, "1")
	renewed := lease("a", at(2*time.Second), "2")
	renewed.ObservedAt = at(2 * time.Second)
	moved := a
	moved.Node = "node-2"
	for _, tt := range []struct {
		name string
		x, y []Member
		want bool
	}{
		{"a renewal", []Member{a, b}, []Member{renewed, b}, true},
		{"a member joins", []Member{a}, []Member{a, b}, false},
		{"a member moves", []Member{a, b}, []Member{moved, b}, false},
		{"none", nil, []Member{}, true},
	} {
		if got := sameMembers(tt.x, tt.y); got != tt.want {
			t.Errorf("%s: same %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A member renews as often as its retry period allows while the group is
// small, and less often as it grows, so that the group writes at most
// maxGroupWrites member Leases a second; its lease duration and renew
// deadline grow with the period, by the jitter factor, in whole seconds.
func TestMemberTiming(t *testing.T) {
	for _, tc := range []struct {
		size                       int
		period, duration, deadline time.Duration
	}{
		{0, testRenew, testDuration, testDeadline},
		{100, testRenew, testDuration, testDeadline},
		{180, testRenew, testDuration, testDeadline},
		{270, 3 * time.Second, testDuration + 2*time.Second, testDeadline + 2*time.Second},        // 1.2 × 1 s, rounded up
		{1000, 11_111_111_112, testDuration + 11*time.Second, testDeadline + 11*time.Second},      // 1.2 × 9.1 s
		{5000, 55_555_555_556, testDuration + 65*time.Second, testDeadline + 65*time.Second},      // 1.2 × 53.6 s
		{10_000, 111_111_111_112, testDuration + 131*time.Second, testDeadline + 131*time.Second}, // 1.2 × 109.1 s
	} {
		period, duration, deadline := Timing(testDuration, testDeadline, testRenew, tc.size)
		assert.Equal(t, tc.period, period, "size %d", tc.size)
		assert.Equal(t, tc.duration, duration, "size %d", tc.size)
		assert.Equal(t, tc.deadline, deadline, "size %d", tc.size)
		assert.NoError(t, election.ValidateTiming(duration, deadline, period), "size %d", tc.size)
		assert.LessOrEqual(t, float64(tc.size)/period.Seconds(), float64(maxGroupWrites), "size %d: writes a second", tc.size)
	}
}
