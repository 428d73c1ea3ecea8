// Package election elects one leader among the replicas of a group through a
// coordination.k8s.io Lease.
//
// The Lease holds client-go's leader election record (resourcelock.LeaseLock
// writes it, with the same optimistic concurrency), so kubectl and anything
// that reads client-go leases understand it. The timing differs from
// client-go's LeaderElector on purpose: that elector polls the Lease every
// RetryPeriod with a jitter of up to 1.2×, so it observes a renewal up to
// 2.2×RetryPeriod late and tries to take over up to 2.2×RetryPeriod after
// expiry. Here a follower watches the Lease, dates every change on arrival
// and tries to take over the moment the holder's lease runs out, or at once
// when the holder releases it. Failover after a crash then takes about
// LeaseDuration and a graceful handover about a round trip.
//
// Clocks: like client-go, a replica judges expiry by its own clock, from the
// moment it saw the record change, never from the timestamps in the record,
// so clock offsets between replicas do not matter (clock rate differences
// do, within the margin LeaseDuration−RenewDeadline).
package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	rl "k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"

	"github.com/embedded-ta/embedded-ta/internal/kube"
)

// Operations reported to Callbacks.OnAPIResult.
const (
	OpLease = "leader lease"
	OpWatch = "leader lease watch"
)

// JitterFactor is client-go's margin between RenewDeadline and RetryPeriod;
// the same validation keeps lease settings portable between the two.
const JitterFactor = 1.2

// Config describes one election. All durations must satisfy
// LeaseDuration > RenewDeadline > JitterFactor×RetryPeriod > 0.
type Config struct {
	Client    coordinationclient.LeasesGetter
	Namespace string
	// Name of the Lease; one election per name.
	Name string
	// Identity of this candidate, written as the Lease's holderIdentity.
	Identity string
	// Labels are set on the Lease.
	Labels map[string]string

	// LeaseDuration is how long followers wait after the last renewal they
	// saw before they take over.
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps trying to renew before it
	// stops leading.
	RenewDeadline time.Duration
	// RetryPeriod is the leader's renewal period and the followers' wait
	// between failed API calls.
	RetryPeriod time.Duration

	Callbacks Callbacks
	// Clock defaults to the real clock.
	Clock clock.WithTicker
}

// Callbacks are called from the elector's goroutines. None may block for
// long, except OnStartedLeading, which runs in a goroutine of its own.
type Callbacks struct {
	// OnStartedLeading runs when this candidate becomes leader; ctx is
	// cancelled when it stops leading, and it must then return promptly:
	// the elector waits for it before it releases the Lease, so that the
	// leader's work has stopped before another candidate's starts.
	OnStartedLeading func(ctx context.Context)
	// OnStoppedLeading runs after leadership ends and OnStartedLeading has
	// returned, before the Lease is released on a graceful stop.
	OnStoppedLeading func()
	// OnNewLeader runs whenever the observed holder changes, "" included.
	OnNewLeader func(Leader)
	// OnAPIResult runs after every API call the elector makes, with its
	// error or nil; op is OpLease for reads and writes, OpWatch for the watch.
	OnAPIResult func(op string, err error)
}

// Leader is the election record as this replica last observed it.
type Leader struct {
	// Identity of the holder; "" when nobody holds the Lease.
	Identity string
	// Transitions counts changes of holder: the epoch of the leadership.
	Transitions   int
	AcquireTime   time.Time
	RenewTime     time.Time
	LeaseDuration time.Duration
	// ObservedAt is when this replica saw the record change, by its clock.
	ObservedAt time.Time
}

// Elector runs one candidate's side of an election.
type Elector struct {
	cfg   Config
	lock  *rl.LeaseLock
	clock clock.WithTicker

	// changed wakes the election loop when the watch sees the Lease change.
	changed chan struct{}

	mu         sync.Mutex
	observed   rl.LeaderElectionRecord
	observedAt time.Time
	seen       bool
	leading    bool
	renewed    time.Time // last successful write of the Lease while leading
}

// New validates cfg and returns an elector; Run starts it.
func New(cfg Config) (*Elector, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("election: no client")
	case cfg.Namespace == "" || cfg.Name == "":
		return nil, errors.New("election: lease namespace and name must be set")
	case cfg.Identity == "":
		return nil, errors.New("election: identity must be set")
	case cfg.RetryPeriod <= 0:
		return nil, errors.New("retry_period must be greater than zero")
	case cfg.RenewDeadline <= time.Duration(JitterFactor*float64(cfg.RetryPeriod)):
		return nil, fmt.Errorf("renew_deadline (%s) must be greater than %.1f × retry_period (%s)", cfg.RenewDeadline, JitterFactor, cfg.RetryPeriod)
	case cfg.LeaseDuration <= cfg.RenewDeadline:
		return nil, fmt.Errorf("duration (%s) must be greater than renew_deadline (%s)", cfg.LeaseDuration, cfg.RenewDeadline)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Elector{
		cfg:   cfg,
		clock: cfg.Clock,
		lock: &rl.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name},
			Client:     cfg.Client,
			LockConfig: rl.ResourceLockConfig{Identity: cfg.Identity},
			Labels:     cfg.Labels,
		},
		changed: make(chan struct{}, 1),
	}, nil
}

// Run campaigns until ctx is done, leading whenever it wins. On return the
// Lease has been released if this candidate held it.
func (e *Elector) Run(ctx context.Context) {
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go e.watch(watchCtx)
	for e.acquire(ctx) {
		e.lead(ctx)
	}
}

// IsLeader reports whether this candidate leads now: it won, and its last
// renewal is younger than RenewDeadline by its own clock. The second half
// matters to a process that was frozen (SIGSTOP, a long GC pause, a
// suspended VM) past its lease: it does not lead the moment it wakes, even
// before its renewal loop has noticed that another candidate took over.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading && e.clock.Since(e.renewed) < e.cfg.RenewDeadline
}

// Leader returns the record as last observed.
func (e *Elector) Leader() Leader {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leaderLocked()
}

func (e *Elector) leaderLocked() Leader {
	l := Leader{
		Identity:      e.observed.HolderIdentity,
		Transitions:   e.observed.LeaderTransitions,
		AcquireTime:   e.observed.AcquireTime.Time,
		RenewTime:     e.observed.RenewTime.Time,
		LeaseDuration: time.Duration(e.observed.LeaseDurationSeconds) * time.Second,
		ObservedAt:    e.observedAt,
	}
	return l
}

// acquire blocks until this candidate leads (true) or ctx is done (false).
func (e *Elector) acquire(ctx context.Context) bool {
	for {
		wait := e.cfg.RetryPeriod
		if left := e.leaseLeft(); left <= 0 {
			ok, err := e.tryAcquire(ctx)
			if ok {
				return true
			}
			if err == nil {
				wait = max(e.leaseLeft(), 0)
			}
		} else {
			wait = left
		}
		t := e.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-e.changed:
			t.Stop()
		case <-t.C():
		}
	}
}

// leaseLeft is how long the observed holder's lease has to run; ≤ 0 means
// this candidate may try to take the Lease.
func (e *Elector) leaseLeft() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.seen || e.observed.HolderIdentity == "" || e.observed.HolderIdentity == e.cfg.Identity {
		return 0
	}
	expiry := e.observedAt.Add(time.Duration(e.observed.LeaseDurationSeconds) * time.Second)
	return expiry.Sub(e.clock.Now())
}

func (e *Elector) tryAcquire(ctx context.Context) (bool, error) {
	now := metav1.NewMicroTime(e.clock.Now())
	record := rl.LeaderElectionRecord{
		HolderIdentity:       e.cfg.Identity,
		LeaseDurationSeconds: int(e.cfg.LeaseDuration / time.Second),
		AcquireTime:          metav1.NewTime(now.Time),
		RenewTime:            metav1.NewTime(now.Time),
	}
	old, _, err := e.lock.Get(ctx)
	switch {
	case apierrors.IsNotFound(err):
		err = e.lock.Create(ctx, record)
		if apierrors.IsAlreadyExists(err) {
			// Another candidate created it first: a lost race, not an API problem.
			e.report(nil)
			return false, nil
		}
		e.report(err)
		if err != nil {
			return false, fmt.Errorf("create lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err)
		}
		e.won(record)
		return true, nil
	case err != nil:
		e.report(err)
		return false, fmt.Errorf("get lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err)
	}
	e.observe(*old)
	if e.leaseLeft() > 0 {
		e.report(nil)
		return false, nil
	}
	record.LeaderTransitions = old.LeaderTransitions
	if old.HolderIdentity == e.cfg.Identity {
		record.AcquireTime = old.AcquireTime
	} else {
		record.LeaderTransitions++
	}
	if err := e.lock.Update(ctx, record); err != nil {
		// A conflict means another candidate was faster: not an API problem.
		if apierrors.IsConflict(err) {
			e.report(nil)
			return false, nil
		}
		e.report(err)
		return false, fmt.Errorf("update lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err)
	}
	e.report(nil)
	e.won(record)
	return true, nil
}

func (e *Elector) won(record rl.LeaderElectionRecord) {
	e.observe(record)
	e.mu.Lock()
	e.leading, e.renewed = true, e.clock.Now()
	e.mu.Unlock()
}

// lead runs the leader's callbacks and renews the Lease until leadership
// ends; on a graceful stop it releases the Lease.
func (e *Elector) lead(ctx context.Context) {
	leadCtx, cancel := context.WithCancel(ctx)
	var led sync.WaitGroup
	if f := e.cfg.Callbacks.OnStartedLeading; f != nil {
		led.Go(func() { f(leadCtx) })
	}
	e.renew(leadCtx)
	cancel()
	led.Wait()
	e.mu.Lock()
	e.leading = false
	e.mu.Unlock()
	if f := e.cfg.Callbacks.OnStoppedLeading; f != nil {
		f()
	}
	if ctx.Err() != nil {
		e.release()
	}
}

// renew keeps the Lease until ctx is done, another holder shows up, or no
// renewal succeeded for RenewDeadline.
func (e *Elector) renew(ctx context.Context) {
	ticker := e.clock.NewTicker(e.cfg.RetryPeriod)
	defer ticker.Stop()
	lastRenew := e.clock.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.changed:
			if e.Leader().Identity != e.cfg.Identity {
				return
			}
			continue
		case <-ticker.C():
		}
		left := e.cfg.RenewDeadline - e.clock.Since(lastRenew)
		callCtx, cancel := context.WithTimeout(ctx, max(left, time.Millisecond))
		err := e.tryRenew(callCtx)
		cancel()
		switch {
		case err == nil:
			lastRenew = e.clock.Now()
			e.mu.Lock()
			e.renewed = lastRenew
			e.mu.Unlock()
		case errors.Is(err, errLost) || e.clock.Since(lastRenew) >= e.cfg.RenewDeadline:
			return
		}
	}
}

var errLost = errors.New("lease is held by another candidate")

func (e *Elector) tryRenew(ctx context.Context) error {
	l := e.Leader()
	record := rl.LeaderElectionRecord{
		HolderIdentity:       e.cfg.Identity,
		LeaseDurationSeconds: int(e.cfg.LeaseDuration / time.Second),
		AcquireTime:          metav1.NewTime(l.AcquireTime),
		RenewTime:            metav1.NewTime(e.clock.Now()),
		LeaderTransitions:    l.Transitions,
	}
	err := e.lock.Update(ctx, record)
	if apierrors.IsConflict(err) {
		// Someone else wrote the Lease: re-read it before judging.
		current, _, getErr := e.lock.Get(ctx)
		if getErr != nil {
			e.report(getErr)
			return getErr
		}
		e.observe(*current)
		if current.HolderIdentity != e.cfg.Identity {
			e.report(nil)
			return errLost
		}
		err = e.lock.Update(ctx, record)
	}
	e.report(err)
	if err != nil {
		return fmt.Errorf("renew lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err)
	}
	e.observe(record)
	return nil
}

// release hands the Lease over at once: an empty holder lets any follower
// take it without waiting for expiry.
func (e *Elector) release() {
	l := e.Leader()
	if l.Identity != e.cfg.Identity {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewDeadline)
	defer cancel()
	now := metav1.NewTime(e.clock.Now())
	record := rl.LeaderElectionRecord{
		LeaseDurationSeconds: 1,
		AcquireTime:          now,
		RenewTime:            now,
		LeaderTransitions:    l.Transitions,
	}
	err := e.lock.Update(ctx, record)
	e.report(err)
	if err == nil {
		e.observe(record)
	}
}

// observe records what the Lease says now, dating changes by the local clock.
func (e *Elector) observe(record rl.LeaderElectionRecord) {
	e.mu.Lock()
	if e.seen && sameRecord(e.observed, record) {
		e.mu.Unlock()
		return
	}
	newHolder := !e.seen || e.observed.HolderIdentity != record.HolderIdentity
	e.observed, e.observedAt, e.seen = record, e.clock.Now(), true
	leader := e.leaderLocked()
	e.mu.Unlock()

	select {
	case e.changed <- struct{}{}:
	default:
	}
	if f := e.cfg.Callbacks.OnNewLeader; newHolder && f != nil {
		f(leader)
	}
}

func sameRecord(a, b rl.LeaderElectionRecord) bool {
	return a.HolderIdentity == b.HolderIdentity &&
		a.LeaseDurationSeconds == b.LeaseDurationSeconds &&
		a.LeaderTransitions == b.LeaderTransitions &&
		a.AcquireTime.Equal(&b.AcquireTime) &&
		a.RenewTime.Equal(&b.RenewTime)
}

func (e *Elector) report(err error) {
	if errors.Is(err, context.Canceled) {
		return // stopping, not failing
	}
	e.reportOp(OpLease, err)
}

func (e *Elector) reportOp(op string, err error) {
	if f := e.cfg.Callbacks.OnAPIResult; f != nil {
		f(op, err)
	}
}

// watch feeds every change of the Lease to observe.
func (e *Elector) watch(ctx context.Context) {
	kube.WatchLeases(ctx, e.cfg.Client, e.cfg.Namespace,
		metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", e.cfg.Name).String()},
		func(lease *coordinationv1.Lease, deleted bool) {
			if deleted {
				e.observe(rl.LeaderElectionRecord{})
				return
			}
			e.observe(*rl.LeaseSpecToLeaderElectionRecord(&lease.Spec))
		},
		func(err error) { e.reportOp(OpWatch, err) })
}
