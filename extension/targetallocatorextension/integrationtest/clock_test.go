package integrationtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension/internal/skew"
)

// Replicas whose wall clocks are 10 s apart (the leader ahead, a follower
// behind) agree on one leader, the same members and one assignment, and
// fail over as fast as replicas whose clocks agree: every replica judges
// Leases by when it saw them change, by its own clock, never by the
// timestamps another replica wrote.
func TestClockOffsetsChangeNothing(t *testing.T) {
	ns := controlPlane.Namespace(t)
	targets := make([]string, 30)
	for i := range targets {
		targets[i] = fmt.Sprintf("127.0.0.1:%d", 9200+i)
	}
	jobs := withScrapeConfigs(staticJob("skewed", targets...))

	t.Cleanup(skew.Set("clock-0", 10*time.Second))
	t.Cleanup(skew.Set("clock-1", -10*time.Second))
	first := startReplica(t, controlPlane.Config, ns, "clock-0", "clock", jobs)
	settled(t, []*replica{first}, 10*time.Second) // the replica 10 s ahead leads
	replicas := []*replica{first,
		startReplica(t, controlPlane.Config, ns, "clock-1", "clock", jobs),
		startReplica(t, controlPlane.Config, ns, "clock-2", "clock", jobs)}
	leader := settled(t, replicas, 15*time.Second)
	require.Equal(t, first, leader)
	want := settledAssignment(t, leader, len(targets), replicas...)
	epoch := leader.ext.View().Epoch

	// Three lease durations: a replica that trusted another's timestamps
	// would drop the member 10 s behind at once, or take over from the
	// leader 10 s ahead.
	observed := 0
	for end := time.Now().Add(3 * testLease.Duration); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for _, r := range replicas {
			v := r.ext.View()
			assert.Equal(t, leader.identity, v.Leader, "%s names another leader", r.identity)
			assert.Equal(t, epoch, v.Epoch, "%s saw a leader change", r.identity)
			assert.Len(t, v.Members, 3, "%s lost a member: %v", r.identity, identities(v))
		}
		a, err := assignment(replicas[observed%3])
		if assert.NoError(t, err) {
			assert.Equal(t, want, a, "the assignment changed")
		}
		observed++
	}
	t.Logf("measured: %d looks over %s with clocks at +10 s, -10 s and 0: no leader change, no member lost, one assignment", observed, 3*testLease.Duration)

	// The leader 10 s ahead dies: the others take over by their own clocks.
	died := time.Now()
	leader.proxy.Cut()
	survivors := without(replicas, leader)
	failover := newLeader(t, survivors, died, 20*time.Second)
	bound := testLease.Duration + testLease.RetryPeriod + time.Second
	t.Logf("measured: failover from the leader 10 s ahead %s (bound %s)", failover.Round(time.Millisecond), bound)
	assert.LessOrEqual(t, failover, bound)
	settledAssignment(t, survivors[0], len(targets), survivors...)
}
