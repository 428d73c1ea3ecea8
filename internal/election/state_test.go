package election

import (
	"testing"
	"time"
)

// The decisions of one member, as plain functions of time values: every
// case states what the member has seen, by its own clock, and what it
// decides at a given local time.

const (
	testDuration = 15 * time.Second
	testDeadline = 10 * time.Second
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func member(identity string) *state {
	return &state{identity: identity, leaseDuration: testDuration, renewDeadline: testDeadline}
}

// record is holder's record of the given epoch, renewed at renewed by the
// holder's clock.
func record(holder string, epoch int, renewed time.Time) Leader {
	return Leader{Identity: holder, Transitions: epoch, AcquireTime: renewed, RenewTime: renewed, LeaseDuration: testDuration}
}

func TestValidateTiming(t *testing.T) {
	tests := []struct {
		name                      string
		duration, deadline, retry time.Duration
		wantErr                   string
	}{
		{"client-go defaults", 15 * time.Second, 10 * time.Second, 2 * time.Second, ""},
		{"tightest margins", 2 * time.Second, 1201 * time.Millisecond, time.Second, ""},
		{"fractional duration", 15500 * time.Millisecond, 10 * time.Second, 2 * time.Second, "lease::duration: 15.5s must be a whole number of seconds, at least 1s"},
		{"no duration", 0, 0, 0, "lease::duration: 0s must be a whole number of seconds, at least 1s"},
		{"negative retry", 15 * time.Second, 10 * time.Second, -time.Second, "lease::retry_period: -1s must be greater than zero"},
		{"renew within jitter", 15 * time.Second, 2400 * time.Millisecond, 2 * time.Second, "lease::renew_deadline: 2.4s must be greater than 1.2 × lease::retry_period (2s)"},
		{"duration not above renew", 10 * time.Second, 10 * time.Second, 2 * time.Second, "lease::renew_deadline: 10s must be less than lease::duration (10s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateTiming(tt.duration, tt.deadline, tt.retry)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || err.Error() != tt.wantErr):
				t.Fatalf("error %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// A member may try to take the Lease once nobody holds it, or the holder's
// lease ran out by the member's clock: exactly LeaseDuration after it saw
// the last renewal.
func TestTakeOverWindow(t *testing.T) {
	tests := []struct {
		name string
		seen func(s *state)
		now  time.Time
		want time.Duration
	}{
		{"nothing seen", func(*state) {}, t0, 0},
		{"holder seen, just before expiry", func(s *state) { s.observe(record("b", 1, t0), t0) }, at(testDuration - time.Nanosecond), time.Nanosecond},
		{"holder seen, at expiry", func(s *state) { s.observe(record("b", 1, t0), t0) }, at(testDuration), 0},
		{"renewal seen later", func(s *state) {
			s.observe(record("b", 1, t0), t0)
			s.observe(record("b", 1, at(2*time.Second)), at(2*time.Second))
		}, at(testDuration), 2 * time.Second},
		{"released", func(s *state) { s.observe(record("", 1, t0), t0) }, t0, 0},
		{"own record from before a restart", func(s *state) { s.observe(record("a", 1, t0), t0) }, t0, 0},
		{"deleted", func(s *state) { s.observe(record("b", 1, t0), t0); s.deleted(at(time.Second)) }, at(time.Second), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := member("a")
			tt.seen(s)
			if got := s.leaseLeft(tt.now); got != tt.want {
				t.Fatalf("lease left %s, want %s", got, tt.want)
			}
		})
	}
}

// The holder's clock may be far off this member's: its timestamps only tell
// one record from the next; the lease runs from when this member saw it.
func TestClockOffsetsDoNotMatter(t *testing.T) {
	for _, tt := range []struct {
		name           string
		first, renewal time.Duration // the holder's clock minus this member's
	}{
		{"holder 10s ahead", 10 * time.Second, 10 * time.Second},
		{"holder 10s behind", -10 * time.Second, -10 * time.Second},
		{"same clocks", 0, 0},
		{"holder's clock stepped back 20s between renewals", 10 * time.Second, -10 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := member("a")
			s.observe(record("b", 1, t0.Add(tt.first)), t0)
			renewed := at(2 * time.Second)
			s.observe(record("b", 1, renewed.Add(tt.renewal)), renewed)
			if got := s.leaseLeft(renewed.Add(testDuration - time.Nanosecond)); got != time.Nanosecond {
				t.Errorf("just before expiry: lease left %s, want 1ns", got)
			}
			if got := s.leaseLeft(renewed.Add(testDuration)); got != 0 {
				t.Errorf("at expiry: lease left %s, want 0", got)
			}
		})
	}
}

// The same record seen again (a re-list, a re-read, a renewal that wrote
// the same renewTime) is no renewal: it does not extend the lease.
func TestSameRecordIsNoNewObservation(t *testing.T) {
	s := member("a")
	if !s.observe(record("b", 1, t0), t0) {
		t.Fatal("the first record is a new holder")
	}
	if s.observe(record("b", 1, t0), at(10*time.Second)) {
		t.Fatal("the same record again is not a new holder")
	}
	if got := s.leader.ObservedAt; !got.Equal(t0) {
		t.Fatalf("observed at %s, want the first sighting %s", got, t0)
	}
	if got := s.leaseLeft(at(testDuration)); got != 0 {
		t.Fatalf("lease left %s at expiry, want 0", got)
	}
}

// OnNewLeader fires on a change of holder, "" included, and on nothing else.
func TestNewHolder(t *testing.T) {
	s := member("a")
	steps := []struct {
		name string
		step func() bool
		want bool
	}{
		{"first record", func() bool { return s.observe(record("b", 1, t0), t0) }, true},
		{"renewal", func() bool { return s.observe(record("b", 1, at(time.Second)), at(time.Second)) }, false},
		{"release", func() bool { return s.observe(record("", 1, at(2*time.Second)), at(2*time.Second)) }, true},
		{"deleted after release", func() bool { return s.deleted(at(3 * time.Second)) }, false},
		{"this member takes it", func() bool { return s.wrote(s.claim(nil, at(4*time.Second)), at(4*time.Second)) }, true},
		{"its renewal", func() bool { return s.wrote(s.renewal(at(6*time.Second)), at(6*time.Second)) }, false},
	}
	for _, st := range steps {
		if got := st.step(); got != st.want {
			t.Errorf("%s: new holder %v, want %v", st.name, got, st.want)
		}
	}
}

// A leader stops leading when no renewal succeeded within RenewDeadline of
// sending the last one that did, or when another holder (or none) shows up.
func TestStepDown(t *testing.T) {
	tests := []struct {
		name string
		then func(s *state) // after winning epoch 1 at t0
		now  time.Time
		want bool
	}{
		{"just before the deadline", func(*state) {}, at(testDeadline - time.Nanosecond), true},
		{"at the deadline", func(*state) {}, at(testDeadline), false},
		{"renewed in time", func(s *state) { s.wrote(s.renewal(at(8*time.Second)), at(8*time.Second)) }, at(17 * time.Second), true},
		{"renewed, then late", func(s *state) { s.wrote(s.renewal(at(8*time.Second)), at(8*time.Second)) }, at(18 * time.Second), false},
		// The process froze after sending a renewal; the answer, a success,
		// arrives 11s later: the lease ran from the sending.
		{"frozen across the deadline", func(s *state) { s.wrote(s.renewal(at(2*time.Second)), at(2*time.Second)) }, at(13 * time.Second), false},
		{"another holder of a later epoch", func(s *state) { s.observe(record("b", 2, at(5*time.Second)), at(5*time.Second)) }, at(5 * time.Second), false},
		{"a late event from before the take-over", func(s *state) { s.observe(record("b", 0, at(-time.Second)), at(time.Second)) }, at(time.Second), true},
		{"conflict re-read shows another holder", func(s *state) { s.reread(record("b", 0, t0), at(time.Second)) }, at(time.Second), false},
		{"conflict re-read shows this member", func(s *state) { s.reread(s.renewal(t0), at(time.Second)) }, at(time.Second), true},
		{"lease deleted", func(s *state) { s.deleted(at(time.Second)) }, at(time.Second), false},
		{"released", func(s *state) { r, _ := s.release(at(time.Second)); s.observe(r, at(time.Second)) }, at(time.Second), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := member("a")
			s.observe(record("b", 0, at(-time.Minute)), at(-time.Minute))
			current := s.leader
			s.wrote(s.claim(&current, t0), t0)
			tt.then(s)
			if got := s.isLeader(tt.now); got != tt.want {
				t.Fatalf("leads: %v, want %v (leader %+v)", got, tt.want, s.leader)
			}
		})
	}
}

// A member counts on the leader its record names while that leader's lease
// runs by its clock, and on itself while it leads; a member cut off from
// the API server sees neither past that, and must ask its peers.
func TestLeaderLive(t *testing.T) {
	tests := []struct {
		name string
		seen func(s *state)
		now  time.Time
		want bool
	}{
		{"nothing seen", func(*state) {}, t0, false},
		{"another holder within its lease", func(s *state) { s.observe(record("b", 1, t0), t0) }, at(testDuration - time.Nanosecond), true},
		{"another holder past its lease", func(s *state) { s.observe(record("b", 1, t0), t0) }, at(testDuration), false},
		{"nobody holds the Lease", func(s *state) { s.observe(Leader{Transitions: 1}, t0) }, t0, false},
		{"this member leads", func(s *state) { s.wrote(s.claim(nil, t0), t0) }, at(testDeadline - time.Nanosecond), true},
		// Its own record, but no renewal within the deadline: it stepped
		// down, and the others elect another leader it cannot see.
		{"this member stepped down", func(s *state) { s.wrote(s.claim(nil, t0), t0) }, at(testDeadline), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := member("a")
			tt.seen(s)
			if got := s.leaderLive(tt.now); got != tt.want {
				t.Fatalf("leader live: %v, want %v (record %+v)", got, tt.want, s.leader)
			}
		})
	}
}

// A leader whose renewals stop, and a member that waits for its lease, both
// by their own clocks, 10s apart: the leader stops before the member may
// take over, and a renewal and a take-over that race are settled by which
// write lands, never by both members leading.
func TestRenewalRacesTakeOver(t *testing.T) {
	const offset = 10 * time.Second // b's clock minus a's
	a, b := member("a"), member("b")
	a.wrote(a.claim(nil, t0), t0)
	b.observe(a.leader, t0.Add(offset+50*time.Millisecond))
	renewal := a.renewal(at(2 * time.Second))
	a.wrote(renewal, at(2*time.Second))
	b.observe(renewal, at(offset+2050*time.Millisecond))

	// a's renewals fail from here on. Where b may take over, a leads no longer.
	for d := 2 * time.Second; d < 20*time.Second; d += 10 * time.Millisecond {
		if a.isLeader(at(d)) && b.leaseLeft(at(d+offset)) <= 0 {
			t.Fatalf("%s after a's claim, a leads while b may take over", d)
		}
	}
	if a.isLeader(at(12*time.Second)) || b.leaseLeft(at(offset+17050*time.Millisecond)) != 0 {
		t.Fatal("a leads past its renew deadline, or b may not take over at expiry")
	}

	t.Run("the renewal lands first", func(t *testing.T) {
		a, b := *a, *b
		late := a.renewal(at(11 * time.Second))
		a.wrote(late, at(11*time.Second))
		// b's claim conflicts; it reads the Lease again and waits anew.
		b.observe(late, at(offset+17100*time.Millisecond))
		if got := b.leaseLeft(at(offset + 17100*time.Millisecond)); got != testDuration {
			t.Fatalf("b may take over in %s, want %s", got, testDuration)
		}
		if !a.isLeader(at(20 * time.Second)) {
			t.Fatal("a does not lead after its renewal landed")
		}
	})
	t.Run("the take-over lands first", func(t *testing.T) {
		a, b := *a, *b
		current := renewal
		claim := b.claim(&current, at(offset+17050*time.Millisecond))
		b.wrote(claim, at(offset+17050*time.Millisecond))
		if claim.Transitions != 1 {
			t.Fatalf("b's claim has epoch %d, want 1", claim.Transitions)
		}
		// a's renewal, sent at 11s by its clock, lands after b's claim (a's
		// clock ran slow, or the request was held up): it conflicts, a
		// reads b's claim and stops at once, before its own deadline.
		a.reread(claim, at(11100*time.Millisecond))
		if a.isLeader(at(11100*time.Millisecond)) || a.leader.Identity != "b" {
			t.Fatalf("a still leads after re-reading b's claim (leader %q)", a.leader.Identity)
		}
		if !b.isLeader(at(offset + 17100*time.Millisecond)) {
			t.Fatal("b does not lead after its claim landed")
		}
	})
}

// The epoch counts changes of holder and never goes back by this member's
// hand, not even when the Lease was deleted.
func TestEpoch(t *testing.T) {
	tests := []struct {
		name        string
		seen        func(s *state)
		current     *Leader
		wantEpoch   int
		wantAcquire time.Time
	}{
		{"the first member of a new group", func(*state) {}, nil, 0, t0},
		{"another holder's lease ran out", func(*state) {}, &Leader{Identity: "b", Transitions: 4}, 5, t0},
		{"released", func(*state) {}, &Leader{Transitions: 4}, 5, t0},
		{"its own, from before a restart: a new term", func(*state) {}, &Leader{Identity: "a", Transitions: 4, AcquireTime: at(-time.Hour)}, 5, t0},
		{"deleted after epoch 4", func(s *state) { s.observe(record("b", 4, t0), t0); s.deleted(t0) }, nil, 5, t0},
		// A member that never saw the old Lease recreates it from 0; the
		// others count on from there.
		{"recreated by a member that never saw epoch 4", func(s *state) {
			s.observe(record("b", 4, t0), t0)
			s.deleted(t0)
			s.observe(record("c", 0, t0), t0)
		}, &Leader{Identity: "c"}, 1, t0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := member("a")
			tt.seen(s)
			claim := s.claim(tt.current, t0)
			if claim.Identity != "a" || claim.Transitions != tt.wantEpoch || !claim.AcquireTime.Equal(tt.wantAcquire) || !claim.RenewTime.Equal(t0) {
				t.Fatalf("claim %+v, want a's of epoch %d acquired at %s", claim, tt.wantEpoch, tt.wantAcquire)
			}
		})
	}
	s := member("a")
	s.observe(record("b", 4, t0), t0)
	s.deleted(at(time.Second))
	if got := s.leader; got.Identity != "" || got.Transitions != 4 {
		t.Fatalf("after deletion the leader is %q of epoch %d, want nobody of epoch 4", got.Identity, got.Transitions)
	}
}

// Only the holder releases, keeping the epoch; the others may take over at
// once.
func TestRelease(t *testing.T) {
	a, b := member("a"), member("b")
	if _, ok := a.release(t0); ok {
		t.Fatal("a member that never held the Lease releases it")
	}
	a.wrote(a.claim(&Leader{Identity: "b", Transitions: 2}, t0), t0)
	b.observe(a.leader, t0)
	r, ok := a.release(at(time.Second))
	if !ok || r.Identity != "" || r.Transitions != 3 || r.LeaseDuration != time.Second {
		t.Fatalf("release %+v (%v), want nobody's record of epoch 3", r, ok)
	}
	b.observe(r, at(time.Second))
	if got := b.leaseLeft(at(time.Second)); got != 0 {
		t.Fatalf("after the release b waits %s, want 0", got)
	}
	if _, ok := b.release(at(time.Second)); ok {
		t.Fatal("b releases a Lease it does not hold")
	}
}

// A late watch event of this member's own claim, older than its release,
// changes nothing: nobody leads, and no new leader is told (seen in
// TestElectorLeadsRenewsAndReleases, which once saw the leaders "a", "",
// "a"). A newer claim of its own, in the next epoch, is new.
func TestLateOwnClaimAfterReleaseIsIgnored(t *testing.T) {
	a := member("a")
	claim := a.claim(&Leader{}, t0)
	a.wrote(claim, t0)
	renewal := claim
	renewal.RenewTime = at(2 * time.Second)
	a.wrote(renewal, at(2*time.Second))
	r, ok := a.release(at(3 * time.Second))
	if !ok {
		t.Fatal("the holder cannot release")
	}
	a.observe(r, at(3*time.Second))
	if a.observe(renewal, at(3*time.Second)) || a.leader.Identity != "" {
		t.Fatalf("a late event of the renewal before the release made %q the leader", a.leader.Identity)
	}
	next := a.claim(&a.leader, at(4*time.Second))
	if !a.observe(next, at(4*time.Second)) || a.leader.Identity != "a" {
		t.Fatalf("a new claim after the release is not seen: leader %q", a.leader.Identity)
	}
}
