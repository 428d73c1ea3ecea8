package election_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/embedded-ta/embedded-ta/internal/election"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/membership"
)

// controlPlane is a real etcd and kube-apiserver, started by the first test
// that needs one, so that the other tests and the benchmarks run without.
var controlPlane kubetest.OnDemand

func realAPIServer(t *testing.T) *kubetest.Env { return controlPlane.Get(t) }

func TestMain(m *testing.M) { kubetest.MainOnDemand(m, &controlPlane) }

var (
	leaseDuration = 5 * time.Second
	renewDeadline = 3 * time.Second
	retryPeriod   = time.Second
)

// offsetClock is the real clock shifted by offset: the wall clock of a
// machine that is that far off. Timers and tickers measure durations,
// which an offset does not change.
type offsetClock struct {
	clock.RealClock
	offset time.Duration
}

func (c offsetClock) Now() time.Time                  { return time.Now().Add(c.offset) }
func (c offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// member is one member of group "clock": an elector and a membership on a
// clock of its own, talking to the API server through a proxy the test can
// cut.
type member struct {
	identity string
	proxy    *kubetest.Proxy
	elector  *election.Elector
	members  *membership.Membership
	cancel   context.CancelFunc
	done     sync.WaitGroup
}

func startMember(t *testing.T, env *kubetest.Env, namespace, identity string, offset time.Duration) *member {
	t.Helper()
	proxy, cfg := kubetest.NewProxy(t, env.Config)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	clk := offsetClock{offset: offset}
	logErrors := func(op string, err error) {
		if err != nil {
			t.Logf("%s: %s: %v", identity, op, err)
		}
	}
	m := &member{identity: identity, proxy: proxy}
	m.members, err = membership.New(membership.Config{Client: client, Namespace: namespace, Group: "clock",
		Self:          membership.Member{Identity: identity, Endpoint: identity + ":8080"},
		LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RenewPeriod: retryPeriod, Clock: clk, OnAPIResult: logErrors})
	if err != nil {
		t.Fatal(err)
	}
	m.elector, err = election.New(election.Config{Client: client, Namespace: namespace, Name: "clock", Identity: identity,
		Labels:        map[string]string{membership.LabelGroup: "clock", membership.LabelRole: membership.RoleLeader},
		LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod, Clock: clk,
		Callbacks: election.Callbacks{
			OnAPIResult: logErrors,
			// As the extension does: the leader watches every member
			// Lease, a follower the leader's.
			OnNewLeader: func(l election.Leader) { m.members.Follow(l.Identity) },
			OnStartedLeading: func(ctx context.Context) {
				_ = m.members.Lead(ctx)
				<-ctx.Done()
			},
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.done.Go(func() { m.members.Run(ctx) })
	m.done.Go(func() { m.elector.Run(ctx) })
	t.Cleanup(m.stop)
	return m
}

// stop ends the member's Runs and waits for them.
func (m *member) stop() {
	m.cancel()
	m.done.Wait()
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %s: %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// agree reports whether every member names leader and counts n members:
// the leader sees them all, a follower the leader and itself.
func agree(ms []*member, leader string, n int) bool {
	for _, m := range ms {
		if m.elector.Leader().Identity != leader || m.members.Size() != n {
			return false
		}
		want := 2
		if m.identity == leader {
			want = n
		}
		if len(m.members.Members()) != want {
			return false
		}
	}
	return true
}

// Members whose wall clocks are 10 s apart (the leader ahead, a member
// behind) agree on one leader and the same members, and fail over as fast
// as members whose clocks agree: each judges a Lease by when it saw it
// change, by its own clock, never by the timestamps another member wrote.
func TestClockOffsetsChangeNothing(t *testing.T) {
	env := realAPIServer(t)
	ns := env.Namespace(t)
	first := startMember(t, env, ns, "clock-0", 10*time.Second)
	waitFor(t, "clock-0 leads", 10*time.Second, first.elector.IsLeader)
	ms := []*member{first, startMember(t, env, ns, "clock-1", -10*time.Second), startMember(t, env, ns, "clock-2", 0)}
	waitFor(t, "all agree on clock-0 and three members", 15*time.Second, func() bool { return agree(ms, "clock-0", 3) })
	epoch := first.elector.Leader().Transitions

	// Three lease durations: a member that trusted another's timestamps
	// would drop the member 10 s behind at once, or take over from the
	// leader 10 s ahead.
	looks := 0
	for end := time.Now().Add(3 * leaseDuration); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, m := range ms {
			if l := m.elector.Leader(); l.Identity != "clock-0" || l.Transitions != epoch {
				t.Fatalf("%s sees leader %s of epoch %d, want clock-0 of epoch %d", m.identity, l.Identity, l.Transitions, epoch)
			}
			if n := m.members.Size(); n != 3 {
				t.Fatalf("%s counts %d members, want 3", m.identity, n)
			}
		}
		if !first.elector.IsLeader() {
			t.Fatal("clock-0 stopped leading")
		}
		looks++
	}
	t.Logf("measured: %d looks over %s with clocks at +10 s, -10 s and 0: one leader, no leader change, no member lost", looks, 3*leaseDuration)

	// The leader 10 s ahead crashes: cut off from the API server, it can
	// neither release its Lease nor delete its member Lease.
	first.proxy.Cut()
	crashed := time.Now()
	first.cancel()
	survivors := ms[1:]
	failover := waitFor(t, "a survivor leads", 4*leaseDuration, func() bool {
		return survivors[0].elector.IsLeader() || survivors[1].elector.IsLeader()
	})
	bound := leaseDuration + retryPeriod + time.Second
	t.Logf("measured: failover from the leader 10 s ahead in %s (bound %s)", failover.Round(time.Millisecond), bound)
	if failover > bound {
		t.Errorf("failover took %s, more than %s", failover, bound)
	}
	leader := survivors[0].identity
	if survivors[1].elector.IsLeader() {
		leader = survivors[1].identity
	}
	waitFor(t, "the survivors agree on the new leader and drop clock-0", 2*leaseDuration, func() bool { return agree(survivors, leader, 2) })
	if l := survivors[1].elector.Leader(); l.Transitions != epoch+1 {
		t.Errorf("epoch %d after the failover, want %d", l.Transitions, epoch+1)
	}
	t.Logf("measured: clock-0's member Lease dropped %s after the crash", time.Since(crashed).Round(time.Millisecond))
	first.done.Wait()
}
