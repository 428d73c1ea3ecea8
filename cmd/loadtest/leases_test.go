package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/embedded-ta/embedded-ta/internal/membership"
)

// A group of 200 members on a real control plane, as -member-leases runs
// it: the group writes at most 100 Leases a second (its members renew at
// the period its size asks for, the leader Lease on top), and no follower
// receives more than 5 watch events a second; and the members do renew
// (at least half the writes the period implies).
func TestMemberLeases(t *testing.T) {
	const n = 200
	var out bytes.Buffer
	f, err := memberLeases(n, 20*time.Second, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	period, _, _ := membership.Timing(15*time.Second, 10*time.Second, 2*time.Second, n)
	t.Logf("measured: %d members: %.1f Lease writes/s, %.2f watch events/s a follower (most %.2f), renewal period %s",
		n, f.writes, f.events, f.eventsMax, period)
	if f.writes > 100 {
		t.Errorf("%.1f Lease writes a second, more than 100", f.writes)
	}
	if least := 0.5 * n / period.Seconds(); f.writes < least {
		t.Errorf("%.1f Lease writes a second, fewer than %.1f: the members do not renew", f.writes, least)
	}
	if f.eventsMax > 5 {
		t.Errorf("a follower received %.2f watch events a second, more than 5", f.eventsMax)
	}
}
