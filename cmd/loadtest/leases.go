package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/embedded-ta/embedded-ta/internal/election"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/membership"
)

// leaseFigures are what -member-leases measures of a group's Leases.
type leaseFigures struct {
	members int
	// writes is the group's Lease writes (creates, updates, deletes) a
	// second, the leader Lease's included.
	writes float64
	// events are the watch events a follower receives a second (its
	// leader Lease watch and its member Lease watch): the mean and the
	// most of any follower.
	events, eventsMax float64
	// settle is how long the group took to settle, window how long it
	// was measured.
	settle, window time.Duration
}

// memberLeases runs a group of n members on a local control plane (etcd and
// kube-apiserver from bin/, as the tests start them), each with the
// extension's own election and membership code and its timing defaults
// (lease 15 s, renew deadline 10 s, retry period 2 s), wired as the
// extension wires them: the leader watches every member Lease, a follower
// the leader's. Once the group has settled (the leader sees every member,
// every follower knows the group's size and has renewed at the period it
// implies), it counts the Lease writes that reach the API server and the
// watch events each follower receives over window.
func memberLeases(n int, window time.Duration, w io.Writer) (leaseFigures, error) {
	f := leaseFigures{members: n}
	env, err := kubetest.Start()
	if err != nil {
		return f, err
	}
	defer func() { _ = env.Stop() }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const namespace = "loadtest"
	if _, err := env.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return f, err
	}

	var writes atomic.Int64
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS = -1 // no client-side limit: every member's calls reach the server
	// One connection a member: an HTTP/2 connection carries only so many
	// watches at once.
	cfg.TLSClientConfig.NextProtos = []string{"http/1.1"}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return promhttp.RoundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if r.Method != http.MethodGet && strings.Contains(r.URL.Path, "/leases") {
				writes.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	const (
		duration = 15 * time.Second
		deadline = 10 * time.Second
		retry    = 2 * time.Second
	)
	type member struct {
		identity string
		members  *membership.Membership
		elector  *election.Elector
		events   atomic.Int64
	}
	group := make([]*member, n)
	var running sync.WaitGroup
	defer running.Wait()
	defer cancel()
	start := time.Now()
	for i := range group {
		m := &member{identity: fmt.Sprintf("loadtest-%d", i)}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return f, err
		}
		onResult := func(op string, err error) {
			if err == nil && (op == membership.OpWatch || op == election.OpWatch) {
				m.events.Add(1) // called once with each event
			}
		}
		m.members, err = membership.New(membership.Config{Client: client, Namespace: namespace, Group: "loadtest",
			Self:          membership.Member{Identity: m.identity, Endpoint: fmt.Sprintf("127.0.0.1:%d", 20000+i)},
			LeaseDuration: duration, RenewDeadline: deadline, RenewPeriod: retry, OnAPIResult: onResult,
			Leader: func() string { return m.elector.Leader().Identity }})
		if err != nil {
			return f, err
		}
		m.elector, err = election.New(election.Config{Client: client, Namespace: namespace, Name: "loadtest", Identity: m.identity,
			Labels:        map[string]string{membership.LabelGroup: "loadtest", membership.LabelRole: membership.RoleLeader},
			LeaseDuration: duration, RenewDeadline: deadline, RetryPeriod: retry,
			Callbacks: election.Callbacks{
				OnAPIResult: onResult,
				OnNewLeader: func(l election.Leader) { m.members.Follow(l.Identity) },
				OnStartedLeading: func(ctx context.Context) {
					_ = m.members.Lead(ctx)
					<-ctx.Done()
				},
			}})
		if err != nil {
			return f, err
		}
		group[i] = m
		running.Go(func() { m.members.Run(ctx) })
		running.Go(func() { m.elector.Run(ctx) })
	}
	fmt.Fprintf(w, "member leases: %d members started in %s\n", n, time.Since(start).Round(time.Millisecond))

	// Settled: one leader that sees every member; every follower knows the
	// group's size and has renewed since it learned it.
	period, _, _ := membership.Timing(duration, deadline, retry, n)
	settledBy := time.Now().Add(5*time.Minute + 2*period)
	var leader *member
	for {
		leader = nil
		known := 0
		for _, m := range group {
			if m.elector.IsLeader() {
				leader = m
			}
			if m.members.Size() == n {
				known++
			}
		}
		if leader != nil && len(leader.members.Members()) == n && known == n {
			break
		}
		if time.Now().After(settledBy) {
			return f, fmt.Errorf("the group of %d did not settle: %d members know its size", n, known)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(period + time.Second) // every member renews once at the group's period
	f.settle = time.Since(start)
	fmt.Fprintf(w, "member leases: settled after %s (leader %s); renewal period at this size %s; measuring %s\n",
		f.settle.Round(time.Millisecond), leader.identity, period.Round(time.Millisecond), window)

	w0 := writes.Load()
	e0 := make([]int64, n)
	for i, m := range group {
		e0[i] = m.events.Load()
	}
	begin := time.Now()
	time.Sleep(window)
	f.window = time.Since(begin)
	f.writes = float64(writes.Load()-w0) / f.window.Seconds()
	var rates []float64
	for i, m := range group {
		if m == leader {
			continue
		}
		rates = append(rates, float64(m.events.Load()-e0[i])/f.window.Seconds())
	}
	for _, r := range rates {
		f.events += r / float64(len(rates))
	}
	f.eventsMax = slices.Max(rates)
	fmt.Fprintf(w, "member leases: %d members: %.1f Lease writes/s for the group, %.2f watch events/s a follower (most %.2f), over %s\n",
		n, f.writes, f.events, f.eventsMax, f.window.Round(time.Millisecond))
	return f, nil
}
