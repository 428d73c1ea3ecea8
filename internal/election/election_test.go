package election

import (
	"bytes"
	"context"
	"errors"
	"runtime"
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

// The timing invariants are client-go's, checked at construction.
func TestNewValidatesTiming(t *testing.T) {
	base := Config{Client: fake.NewClientset(), Namespace: "ns", Name: "group", Identity: "group-0",
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
	tests := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{"client-go defaults", func(*Config) {}, ""},
		{"no identity", func(c *Config) { c.Identity = "" }, "identity must be set"},
		{"no lease name", func(c *Config) { c.Name = "" }, "namespace and name must be set"},
		{"zero retry", func(c *Config) { c.RetryPeriod = 0 }, "lease::retry_period: 0s must be greater than zero"},
		{"renew within jitter", func(c *Config) { c.RenewDeadline = 2400 * time.Millisecond }, "lease::renew_deadline: 2.4s must be greater than 1.2 × lease::retry_period (2s)"},
		{"duration not above renew", func(c *Config) { c.LeaseDuration = 10 * time.Second }, "lease::renew_deadline: 10s must be less than lease::duration (10s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
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

// run is one elector on a fake clock and a fake API server, with what its
// callbacks saw.
type run struct {
	*Elector
	client *fake.Clientset
	clock  *clocktesting.FakeClock
	cancel context.CancelFunc
	done   chan struct{}
	t      *testing.T

	mu       sync.Mutex
	leading  bool
	terms    int
	leaders  []string
	failures []string // "op: error"
}

func startElector(t *testing.T, client *fake.Clientset) *run {
	t.Helper()
	r := &run{client: client, clock: clocktesting.NewFakeClock(t0), done: make(chan struct{}), t: t}
	e, err := New(Config{Client: client, Namespace: "ns", Name: "group", Identity: "group-0",
		LeaseDuration: testDuration, RenewDeadline: testDeadline, RetryPeriod: 2 * time.Second, Clock: r.clock,
		Callbacks: Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				r.set(func() { r.leading = true; r.terms++ })
				<-ctx.Done()
			},
			OnStoppedLeading: func() { r.set(func() { r.leading = false }) },
			OnNewLeader:      func(l Leader) { r.set(func() { r.leaders = append(r.leaders, l.Identity) }) },
			OnAPIResult: func(op string, err error) {
				if err != nil {
					r.set(func() { r.failures = append(r.failures, op+": "+err.Error()) })
				}
			},
		}})
	if err != nil {
		t.Fatal(err)
	}
	r.Elector = e
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { e.Run(ctx); close(r.done) }()
	t.Cleanup(r.stop)
	return r
}

func (r *run) set(f func()) { r.mu.Lock(); f(); r.mu.Unlock() }

func (r *run) get(f func()) { r.mu.Lock(); f(); r.mu.Unlock() }

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

// step moves the fake clock on once Run waits for it.
func (r *run) step(t *testing.T, d time.Duration) {
	t.Helper()
	eventually(t, "the elector waits for its clock", r.clock.HasWaiters)
	r.clock.Step(d)
}

func (r *run) lease(t *testing.T) *coordinationv1.Lease {
	t.Helper()
	l, err := r.client.CoordinationV1().Leases("ns").Get(context.Background(), "group", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out: %s", what)
		}
	}
}

// A member alone takes the Lease, renews it every RetryPeriod by its clock,
// and hands it over on a graceful stop; Run returns once all is done.
func TestElectorLeadsRenewsAndReleases(t *testing.T) {
	r := startElector(t, fake.NewClientset())
	eventually(t, "leads", func() bool { var l bool; r.get(func() { l = r.leading }); return l && r.IsLeader() })
	if l := r.lease(t); ptr.Deref(l.Spec.HolderIdentity, "") != "group-0" || ptr.Deref(l.Spec.LeaseTransitions, -1) != 0 {
		t.Fatalf("lease %+v, want group-0's of epoch 0", l.Spec)
	}
	r.step(t, 2*time.Second)
	eventually(t, "renewed", func() bool { return r.lease(t).Spec.RenewTime.Equal(ptr.To(metav1.NewMicroTime(at(2 * time.Second)))) })

	r.stop()
	if l := r.lease(t); ptr.Deref(l.Spec.HolderIdentity, "x") != "" || ptr.Deref(l.Spec.LeaseTransitions, -1) != 0 {
		t.Fatalf("lease after stop %+v, want released in epoch 0", l.Spec)
	}
	r.get(func() {
		if r.leading || r.terms != 1 || strings.Join(r.leaders, ",") != "group-0," || len(r.failures) > 0 {
			t.Fatalf("leading %v, terms %d, leaders %q, failures %q", r.leading, r.terms, r.leaders, r.failures)
		}
	})
}

// Renewals that fail end the term exactly RenewDeadline after the last
// one that succeeded was sent, each failure reported with the Lease's name.
func TestElectorStepsDownWhenRenewalsFail(t *testing.T) {
	client := fake.NewClientset()
	var failing atomic.Bool
	client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, kruntime.Object, error) {
		if !failing.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewServiceUnavailable("etcd is away")
	})
	r := startElector(t, client)
	eventually(t, "leads", r.IsLeader)
	failing.Store(true)
	r.step(t, 2*time.Second)
	eventually(t, "a failed renewal reported", func() bool {
		var n int
		r.get(func() { n = len(r.failures) })
		return n > 0
	})
	r.get(func() {
		if want := "leader lease: renew leader lease ns/group: etcd is away"; r.failures[0] != want {
			t.Fatalf("failure %q, want %q", r.failures[0], want)
		}
	})
	r.step(t, testDeadline-2*time.Second-time.Nanosecond)
	if !r.IsLeader() {
		t.Fatal("stopped leading before the renew deadline")
	}
	r.step(t, time.Nanosecond)
	if r.IsLeader() {
		t.Fatal("leads at the renew deadline")
	}
	eventually(t, "term ended", func() bool { var l bool; r.get(func() { l = r.leading }); return !l })
}

// Another holder's record ends the term at once; this member then takes the
// Lease over exactly LeaseDuration after it saw that record, by its clock,
// whatever the record's timestamps say, and counts the epoch on.
func TestElectorTakesOverAtExpiry(t *testing.T) {
	client := fake.NewClientset()
	r := startElector(t, client)
	eventually(t, "leads", r.IsLeader)
	l := r.lease(t)
	l.Spec.HolderIdentity = ptr.To("group-1")
	l.Spec.LeaseTransitions = ptr.To[int32](1)
	l.Spec.RenewTime = ptr.To(metav1.NewMicroTime(at(-time.Hour))) // group-1's clock is far behind
	if _, err := client.CoordinationV1().Leases("ns").Update(context.Background(), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "term ended", func() bool { var l bool; r.get(func() { l = r.leading }); return !l })
	// The end of the term and the leader it saw are two updates: a CI run
	// once read the leader between them.
	eventually(t, "group-1 leads, observed at t0", func() bool {
		got := r.Leader()
		return got.Identity == "group-1" && got.ObservedAt.Equal(t0)
	})
	r.step(t, testDuration-time.Nanosecond)
	time.Sleep(50 * time.Millisecond) // a wrong take-over would be underway
	if r.IsLeader() || ptr.Deref(r.lease(t).Spec.HolderIdentity, "") != "group-1" {
		t.Fatal("took over before the lease ran out")
	}
	r.step(t, time.Nanosecond)
	eventually(t, "took over", r.IsLeader)
	if l := r.lease(t); ptr.Deref(l.Spec.HolderIdentity, "") != "group-0" || ptr.Deref(l.Spec.LeaseTransitions, -1) != 2 {
		t.Fatalf("lease %+v, want group-0's of epoch 2", l.Spec)
	}
	r.get(func() {
		if got := strings.Join(r.leaders, ","); got != "group-0,group-1,group-0" {
			t.Fatalf("leaders seen %q", got)
		}
	})
}

// A deleted Lease ends the term; the member creates it again and carries
// the epoch on rather than counting from 0.
func TestElectorRecreatesDeletedLease(t *testing.T) {
	client := fake.NewClientset()
	watching := watched(client)
	r := startElector(t, client)
	eventually(t, "leads", r.IsLeader)
	<-watching // the fake API server delivers no deletion to a watch opened after it
	if err := client.CoordinationV1().Leases("ns").Delete(context.Background(), "group", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "second term", func() bool { var n int; r.get(func() { n = r.terms }); return n == 2 && r.IsLeader() })
	if got := ptr.Deref(r.lease(t).Spec.LeaseTransitions, -1); got != 1 {
		t.Fatalf("epoch %d after the Lease was recreated, want 1", got)
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

// A failing watch is reported under OpWatch, naming the Leases watched.
func TestElectorReportsWatchErrors(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "leases", func(k8stesting.Action) (bool, kruntime.Object, error) {
		return true, nil, apierrors.NewForbidden(coordinationv1.Resource("leases"), "", errors.New("no list"))
	})
	r := startElector(t, client)
	eventually(t, "a watch error", func() bool {
		var found bool
		r.get(func() {
			for _, f := range r.failures {
				found = found || strings.HasPrefix(f, OpWatch+": watch leases in namespace ns (metadata.name=group): ")
			}
		})
		return found
	})
}
