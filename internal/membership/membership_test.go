package membership

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

func config(client *fake.Clientset) Config {
	return Config{Client: client, Namespace: "ns", Group: "g", Self: Member{Identity: "m-0", Endpoint: "10.0.0.1:8080", Node: "node-1"},
		LeaseDuration: testDuration, RenewDeadline: testDeadline, RenewPeriod: testRenew}
}

// The timing invariants are the election's, in the extension's words.
func TestNewValidatesTiming(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"client-go defaults", func(*Config) {}, ""},
		{"no identity", func(c *Config) { c.Self.Identity = "" }, "namespace, group and identity must be set"},
		{"no renew deadline", func(c *Config) { c.RenewDeadline = 0 }, "membership: lease::renew_deadline: 0s must be greater than 1.2 × lease::retry_period (2s)"},
		{"renew period not below the lease", func(c *Config) { c.RenewPeriod = testDuration }, "membership: lease::renew_deadline: 10s must be greater than 1.2 × lease::retry_period (15s)"},
		{"fractional lease", func(c *Config) { c.LeaseDuration = 1500 * time.Millisecond }, "membership: lease::duration: 1.5s must be a whole number of seconds, at least 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config(fake.NewClientset())
			tt.change(&cfg)
			_, err := New(cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// run is one Membership on a fake clock and a fake API server, with what
// its callbacks saw.
type run struct {
	*Membership
	client *fake.Clientset
	clock  *clocktesting.FakeClock
	cancel context.CancelFunc
	done   chan struct{}
	t      *testing.T

	mu       sync.Mutex
	changes  [][]string
	failures []string // "op: error"
}

func start(t *testing.T, client *fake.Clientset) *run {
	t.Helper()
	r := &run{client: client, clock: clocktesting.NewFakeClock(t0), done: make(chan struct{}), t: t}
	cfg := config(client)
	cfg.Clock = r.clock
	cfg.OnChange = func(members []Member) {
		r.mu.Lock()
		r.changes = append(r.changes, identities(members))
		r.mu.Unlock()
	}
	cfg.OnAPIResult = func(op string, err error) {
		if err != nil {
			r.mu.Lock()
			r.failures = append(r.failures, op+": "+err.Error())
			r.mu.Unlock()
		}
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Membership = m
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { m.Run(ctx); close(r.done) }()
	t.Cleanup(r.stop)
	return r
}

// stop ends Run and waits for it, and fails the test if Run left a
// goroutine of its watch's informer running: it must await them.
func (r *run) stop() {
	r.cancel()
	<-r.done
	buf := make([]byte, 1<<20)
	if stacks := buf[:runtime.Stack(buf, true)]; bytes.Contains(stacks, []byte("k8s.io/client-go/tools/cache.")) {
		r.t.Errorf("an informer goroutine outlived Run:\n%s", stacks)
	}
}

// step moves the fake clock on once Run waits for it, and waits until this
// member saw its own renewal, if one was due.
func (r *run) step(t *testing.T, d time.Duration) {
	t.Helper()
	eventually(t, "Run waits for its clock", r.clock.HasWaiters)
	r.clock.Step(d)
	now := r.clock.Now()
	eventually(t, "own renewal seen", func() bool {
		i := slices.IndexFunc(r.Members(), func(m Member) bool { return m.Identity == "m-0" })
		return i >= 0 && now.Sub(r.Members()[i].ObservedAt) < testRenew
	})
}

func (r *run) members() []string { return identities(r.Members()) }

// put writes identity's member Lease, renewed at renewed by its clock.
func put(t *testing.T, client *fake.Clientset, identity string, renewed time.Time) {
	t.Helper()
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: identity, Namespace: "ns",
			Labels:      map[string]string{LabelGroup: "g", LabelRole: RoleMember},
			Annotations: map[string]string{AnnotationEndpoint: identity + ":8080"}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(identity), LeaseDurationSeconds: ptr.To(int32(testDuration / time.Second)),
			RenewTime: ptr.To(metav1.NewMicroTime(renewed))},
	}
	leases := client.CoordinationV1().Leases("ns")
	if _, err := leases.Update(context.Background(), l, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
		_, err = leases.Create(context.Background(), l, metav1.CreateOptions{})
	} else if err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out: %s", what)
		}
	}
}

// watched returns a channel closed once client's Lease watch is open.
func watched(client *fake.Clientset) <-chan struct{} {
	open := make(chan struct{})
	var once sync.Once
	client.PrependWatchReactor("leases", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace(),
			metav1.ListOptions{ResourceVersion: a.(k8stesting.WatchAction).GetWatchRestrictions().ResourceVersion})
		once.Do(func() { close(open) })
		return true, w, err
	})
	return open
}

// A member joins, sees the others join, expire and leave by its own clock,
// and leaves; Run returns once all is done.
func TestRunJoinsWatchesAndLeaves(t *testing.T) {
	client := fake.NewClientset()
	watching := watched(client)
	r := start(t, client)
	lead, stopLeading := context.WithCancel(context.Background())
	defer stopLeading()
	go func() { _ = r.Lead(lead) }() // the leader watches every member
	eventually(t, "joined", r.Joined)
	<-watching
	own, err := client.CoordinationV1().Leases("ns").Get(context.Background(), "m-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if own.Labels[LabelGroup] != "g" || own.Labels[LabelRole] != RoleMember || own.Annotations[AnnotationEndpoint] != "10.0.0.1:8080" ||
		own.Annotations[AnnotationNode] != "node-1" || ptr.Deref(own.Spec.LeaseDurationSeconds, 0) != 15 {
		t.Fatalf("own Lease %+v", own)
	}

	// The member lists itself before anyone else comes (else the two
	// sightings may make one change).
	eventually(t, "m-0 listed", func() bool { return slices.Equal(r.members(), []string{"m-0"}) })
	put(t, client, "m-1", t0.Add(10*time.Second)) // its clock is 10s ahead; it never renews
	eventually(t, "m-1 joined", func() bool { return slices.Equal(r.members(), []string{"m-0", "m-1"}) })
	for range 7 {
		r.step(t, testRenew)
	}
	if got := r.members(); !slices.Equal(got, []string{"m-0", "m-1"}) {
		t.Fatalf("members %v 14s after m-1's only renewal, want m-1 still", got)
	}
	r.step(t, time.Second)
	eventually(t, "m-1 expired at 15s", func() bool { return slices.Equal(r.members(), []string{"m-0"}) })

	put(t, client, "m-2", t0.Add(-10*time.Second)) // 10s behind
	eventually(t, "m-2 joined", func() bool { return slices.Equal(r.members(), []string{"m-0", "m-2"}) })
	if err := client.CoordinationV1().Leases("ns").Delete(context.Background(), "m-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "m-2 left", func() bool { return slices.Equal(r.members(), []string{"m-0"}) })

	r.stop()
	if _, err := client.CoordinationV1().Leases("ns").Get(context.Background(), "m-0", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("own Lease after leaving: %v, want it deleted", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	want := [][]string{{"m-0"}, {"m-0", "m-1"}, {"m-0"}, {"m-0", "m-2"}, {"m-0"}}
	if !slices.EqualFunc(r.changes, want, slices.Equal) || len(r.failures) > 0 {
		t.Fatalf("changes %v, want %v; failures %q", r.changes, want, r.failures)
	}
}

// A member whose renewals fail counts itself out at its renew deadline, and
// says why, naming its Lease.
func TestJoinedEndsAtRenewDeadline(t *testing.T) {
	client := fake.NewClientset()
	var failing atomic.Bool
	client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, kruntime.Object, error) {
		if !failing.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewServiceUnavailable("etcd is away")
	})
	r := start(t, client)
	eventually(t, "joined", r.Joined)
	failing.Store(true)
	for range 4 {
		eventually(t, "Run waits for its clock", r.clock.HasWaiters)
		r.clock.Step(testRenew)
	}
	eventually(t, "Run waits for its clock", r.clock.HasWaiters)
	r.clock.Step(testRenew - time.Nanosecond)
	if !r.Joined() {
		t.Fatal("out before the renew deadline")
	}
	r.clock.Step(time.Nanosecond)
	if r.Joined() {
		t.Fatal("joined at the renew deadline")
	}
	want := "member lease: write member lease ns/m-0: etcd is away"
	eventually(t, "failures reported", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.Contains(r.failures, want)
	})
}

// A Lease named like this member that is not its member Lease is refused,
// and left alone when the member stops.
func TestForeignLeaseIsRefused(t *testing.T) {
	client := fake.NewClientset(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "m-0", Namespace: "ns"}})
	r := start(t, client)
	eventually(t, "refused", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.failures) > 0
	})
	r.stop()
	if r.Joined() {
		t.Fatal("joined through a foreign Lease")
	}
	if _, err := client.CoordinationV1().Leases("ns").Get(context.Background(), "m-0", metav1.GetOptions{}); err != nil {
		t.Fatalf("the foreign Lease is gone: %v", err)
	}
	want := `member lease: lease ns/m-0 exists and is not a member lease of group "g"`
	if f := r.failures[0]; !strings.HasPrefix(f, want) {
		t.Fatalf("failure %q, want one starting %q", f, want)
	}
}

// A failing watch is reported under OpWatch, naming the group's Leases.
func TestReportsWatchErrors(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "leases", func(k8stesting.Action) (bool, kruntime.Object, error) {
		return true, nil, apierrors.NewForbidden(coordinationv1.Resource("leases"), "", errors.New("no list"))
	})
	r := start(t, client)
	lead, stopLeading := context.WithCancel(context.Background())
	defer stopLeading()
	go func() { _ = r.Lead(lead) }()
	want := OpWatch + ": watch leases in namespace ns (embedded-ta.io/group=g,embedded-ta.io/role=member): "
	eventually(t, "a watch error", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return slices.ContainsFunc(r.failures, func(f string) bool { return strings.HasPrefix(f, want) })
	})
}

// Sweep deletes the Leases of members gone for twice their lease duration,
// and no other.
func TestSweepDeletesLongGoneLeases(t *testing.T) {
	client := fake.NewClientset()
	clk := clocktesting.NewFakeClock(t0)
	cfg := config(client)
	cfg.Clock = clk
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.scope = scopeAll // the leader's, which sweeps
	leases := client.CoordinationV1().Leases("ns")
	seen := func(identity string, renewed time.Time) {
		put(t, client, identity, renewed)
		l, err := leases.Get(context.Background(), identity, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m.observe(l, false)
	}
	seen("m-1", t0)
	seen("m-2", t0)
	clk.Step(2*testDuration - time.Nanosecond)
	seen("m-2", clk.Now()) // m-2 renews; m-1 does not
	if err := m.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Get(context.Background(), "m-1", metav1.GetOptions{}); err != nil {
		t.Fatalf("m-1's Lease swept a nanosecond early: %v", err)
	}
	clk.Step(time.Nanosecond)
	if err := m.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	list, err := leases.List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "m-2" {
		t.Fatalf("Leases after the sweep: %v, want m-2's only", list.Items)
	}
}

// A follower watches the leader's member Lease alone: its members are the
// leader and itself, whatever other Leases there are. It learns the group's
// size from the leader's Lease and renews as seldom as that size asks, its
// Lease written with the longer duration. Leading, it watches every member
// Lease and writes the group's size in its own.
func TestFollowerWatchesTheLeaderAlone(t *testing.T) {
	client := fake.NewClientset()
	var (
		mu     sync.Mutex
		fields []string
		writes int
	)
	client.PrependWatchReactor("leases", func(a k8stesting.Action) (bool, watch.Interface, error) {
		mu.Lock()
		fields = append(fields, a.(k8stesting.WatchAction).GetWatchRestrictions().Fields.String())
		mu.Unlock()
		return false, nil, nil
	})
	client.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, kruntime.Object, error) {
		if a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).Name == "m-0" {
			mu.Lock()
			writes++
			mu.Unlock()
		}
		return false, nil, nil
	})
	writesSoFar := func() int {
		mu.Lock()
		defer mu.Unlock()
		return writes
	}
	put(t, client, "m-1", t0)
	leader, err := client.CoordinationV1().Leases("ns").Get(context.Background(), "m-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leader.Annotations[AnnotationMembers] = "1000"
	if _, err := client.CoordinationV1().Leases("ns").Update(context.Background(), leader, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	put(t, client, "m-2", t0)

	r := start(t, client)
	eventually(t, "joined", r.Joined)
	r.Follow("m-1")
	eventually(t, "the leader seen", func() bool { return slices.Equal(r.members(), []string{"m-0", "m-1"}) && r.Size() == 1000 })
	mu.Lock()
	if !slices.Equal(fields, []string{"metadata.name=m-1"}) {
		t.Errorf("watches with field selectors %q, want the leader's name alone", fields)
	}
	mu.Unlock()
	if got := identities(r.Known()); !slices.Contains(got, "m-2") || !slices.Contains(got, "m-1") {
		t.Errorf("known peers %v, want those listed at the start", got)
	}

	// The next renewal, due after the retry period, is the first at the
	// group's size.
	eventually(t, "Run waits for its clock", r.clock.HasWaiters)
	before := writesSoFar()
	r.clock.Step(testRenew)
	eventually(t, "renewed", func() bool { return writesSoFar() == before+1 })
	own, err := client.CoordinationV1().Leases("ns").Get(context.Background(), "m-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ptr.Deref(own.Spec.LeaseDurationSeconds, 0); got != 26 {
		t.Errorf("lease duration %ds in a group of 1000, want 26s", got)
	}
	if _, ok := own.Annotations[AnnotationMembers]; ok {
		t.Errorf("a follower wrote the group's size")
	}
	// From then on every 11.1 s, not every 2 s.
	for range 5 {
		eventually(t, "Run waits for its clock", r.clock.HasWaiters)
		r.clock.Step(testRenew)
	}
	time.Sleep(50 * time.Millisecond)
	if got := writesSoFar(); got != before+1 {
		t.Fatalf("%d renewals within 10 s in a group of 1000, want none", got-before-1)
	}
	eventually(t, "Run waits for its clock", r.clock.HasWaiters)
	r.clock.Step(1200 * time.Millisecond)
	eventually(t, "renewed after 11.1 s", func() bool { return writesSoFar() == before+2 })

	// Leading: every member, and the group's size in its own Lease.
	put(t, client, "m-1", r.clock.Now()) // m-1 renews as it steps down
	lead, stopLeading := context.WithCancel(context.Background())
	defer stopLeading()
	if err := r.Lead(lead); err != nil {
		t.Fatal(err)
	}
	if got := r.members(); !slices.Equal(got, []string{"m-0", "m-1", "m-2"}) {
		t.Fatalf("members %v once leading, want every one", got)
	}
	if r.Size() != 3 {
		t.Fatalf("size %d once leading, want 3", r.Size())
	}
	eventually(t, "Run waits for its clock", r.clock.HasWaiters)
	r.clock.Step(11200 * time.Millisecond) // the period set at the last renewal
	eventually(t, "renewed as the leader", func() bool {
		own, err := client.CoordinationV1().Leases("ns").Get(context.Background(), "m-0", metav1.GetOptions{})
		return err == nil && own.Annotations[AnnotationMembers] == "3"
	})

	// Leadership over: the leader's Lease alone again.
	stopLeading()
	eventually(t, "following again", func() bool { return slices.Equal(r.members(), []string{"m-0", "m-1"}) })
}

// A follower that becomes leader keeps the date it saw the old leader's
// last renewal: a leader that died expires a lease duration after that
// renewal, not after the new leader's first list.
func TestNewLeaderKeepsWhenItSawTheOldLeader(t *testing.T) {
	client := fake.NewClientset()
	put(t, client, "m-1", t0)
	r := start(t, client)
	eventually(t, "joined", r.Joined)
	r.Follow("m-1")
	eventually(t, "the leader seen", func() bool { return slices.Equal(r.members(), []string{"m-0", "m-1"}) })
	for range 3 {
		r.step(t, testRenew) // m-1 has died: it renews no more
	}
	r.Follow("")    // its leader Lease ran out
	r.Follow("m-0") // this member leads
	lead, stopLeading := context.WithCancel(context.Background())
	defer stopLeading()
	if err := r.Lead(lead); err != nil {
		t.Fatal(err)
	}
	if got := r.members(); !slices.Equal(got, []string{"m-0", "m-1"}) {
		t.Fatalf("members %v, want m-1 until its Lease expires", got)
	}
	i := slices.IndexFunc(r.Members(), func(m Member) bool { return m.Identity == "m-1" })
	if at := r.Members()[i].ObservedAt; !at.Equal(t0) {
		t.Fatalf("m-1's renewal dated %s, want %s, when this member first saw it", at, t0)
	}
	for range 4 {
		r.step(t, testRenew)
	}
	r.step(t, time.Second) // 15 s after m-1's renewal
	eventually(t, "m-1 expired", func() bool { return slices.Equal(r.members(), []string{"m-0"}) })
}

// A leader whose early renewal (the group's size changed) fails does not
// try again at once: at most one write a second, by the clock, whatever
// the API server answers.
func TestFailedEarlyRenewalIsNotRetriedAtOnce(t *testing.T) {
	client := fake.NewClientset()
	var failing atomic.Bool
	var attempts atomic.Int64
	client.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, kruntime.Object, error) {
		if a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).Name != "m-0" || !failing.Load() {
			return false, nil, nil
		}
		attempts.Add(1)
		return true, nil, apierrors.NewServiceUnavailable("etcd is away")
	})
	r := start(t, client)
	eventually(t, "joined", r.Joined)
	lead, stopLeading := context.WithCancel(context.Background())
	defer stopLeading()
	if err := r.Lead(lead); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Run waits for its clock", r.clock.HasWaiters)
	r.clock.Step(time.Second) // the last write a second ago
	failing.Store(true)
	put(t, client, "m-1", r.clock.Now()) // the group grows: an early renewal
	eventually(t, "m-1 seen", func() bool { return r.Size() == 2 })
	time.Sleep(200 * time.Millisecond) // the clock stands still meanwhile
	if n := attempts.Load(); n > 1 {
		t.Fatalf("%d writes of the own Lease within one second of the clock, want at most one", n)
	}
}
