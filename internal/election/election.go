// Package election elects one leader among the members of a group through
// a coordination.k8s.io Lease.
//
// The Lease holds client-go's leader election record (resourcelock.LeaseLock
// writes it, with the same optimistic concurrency), so kubectl and anything
// that reads client-go leases understand it. The timing differs from
// client-go's LeaderElector on purpose: that elector polls the Lease every
// RetryPeriod with a jitter of up to 1.2×, so it observes a renewal up to
// 2.2×RetryPeriod late and tries to take over up to 2.2×RetryPeriod after
// expiry. Here a member watches the Lease, dates every change on arrival
// and tries to take over the moment the leader's lease runs out, or at once
// when the leader releases it. Failover after a crash then takes about
// LeaseDuration and a graceful handover about a round trip.
//
// The decisions live in state, which does no I/O and reads no clock; the
// Elector feeds it what the API server and the local clock say.
package election

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	rl "k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/clock"

	"github.com/embedded-ta/embedded-ta/internal/kube"
)

// Operations reported to Callbacks.OnAPIResult.
const (
	OpLease = "leader lease"
	OpWatch = "leader lease watch"
)

// Config describes one election. The durations must pass ValidateTiming.
type Config struct {
	Client    kubernetes.Interface
	Namespace string
	// Name of the Lease; one election per name, the group's.
	Name string
	// Identity of this member, written as the Lease's holderIdentity.
	Identity string
	// Labels are set on the Lease.
	Labels map[string]string

	// LeaseDuration is how long the other members wait after the last
	// renewal they saw before they take over.
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps trying to renew before it
	// stops leading.
	RenewDeadline time.Duration
	// RetryPeriod is the leader's renewal period and the first wait after a
	// failed API call.
	RetryPeriod time.Duration

	Callbacks Callbacks
	// Clock defaults to the real clock.
	Clock clock.WithTicker
}

// Callbacks are called from the elector's goroutines. None may block for
// long, except OnStartedLeading, which runs in a goroutine of its own.
type Callbacks struct {
	// OnStartedLeading runs when this member becomes leader; ctx is
	// cancelled when it stops leading, and it must then return promptly:
	// the elector waits for it before it releases the Lease, so that the
	// leader's work has stopped before another member's starts.
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

// Elector runs one member's side of an election.
type Elector struct {
	cfg  Config
	lock *rl.LeaseLock
	// changed wakes Run when the observed record changes.
	changed chan struct{}
	// down is closed by StepDown.
	down     chan struct{}
	stepDown sync.Once

	mu sync.Mutex
	s  state
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
	}
	if err := ValidateTiming(cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod); err != nil {
		return nil, fmt.Errorf("election: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Elector{
		cfg: cfg,
		lock: &rl.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.Name},
			Client:     cfg.Client.CoordinationV1(),
			LockConfig: rl.ResourceLockConfig{Identity: cfg.Identity},
			Labels:     cfg.Labels,
		},
		changed: make(chan struct{}, 1),
		down:    make(chan struct{}),
		s:       state{identity: cfg.Identity, leaseDuration: cfg.LeaseDuration, renewDeadline: cfg.RenewDeadline},
	}, nil
}

// Run campaigns until ctx is done, leading whenever it wins. It returns
// when its goroutines have, the Lease released if this member held it.
func (e *Elector) Run(ctx context.Context) {
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() { e.watch(watchCtx) })
	defer watching.Wait()
	defer stopWatch()
	campaign, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-e.down:
			stop()
		case <-campaign.Done():
		}
	}()
	for e.acquire(campaign) {
		e.lead(campaign)
	}
	<-ctx.Done() // after StepDown, it goes on following who leads
}

// StepDown ends this member's candidacy: if it leads, it stops leading and
// releases the Lease, and it campaigns no more, while Run goes on
// following who leads. A member about to leave steps down so that another
// leads while it hands its share over.
func (e *Elector) StepDown() { e.stepDown.Do(func() { close(e.down) }) }

// IsLeader reports whether this member leads now, by its own clock: see
// state.isLeader for why a won election is not enough.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.s.isLeader(e.cfg.Clock.Now())
}

// LeaderLive reports whether the record as last observed names a live
// leader, by this member's clock: see state.leaderLive.
func (e *Elector) LeaderLive() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.s.leaderLive(e.cfg.Clock.Now())
}

// Leader returns the record as last observed.
func (e *Elector) Leader() Leader {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.s.leader
}

// acquire blocks until this member leads (true) or ctx is done (false).
func (e *Elector) acquire(ctx context.Context) bool {
	// Failed calls are retried ever more slowly, up to RenewDeadline, so
	// that a struggling API server is not pressed; an answer resets that.
	backoff := wait.Backoff{Duration: e.cfg.RetryPeriod, Factor: 2, Jitter: 0.1, Steps: math.MaxInt32, Cap: e.cfg.RenewDeadline}
	retry := backoff
	for ctx.Err() == nil {
		e.mu.Lock()
		d := e.s.leaseLeft(e.cfg.Clock.Now())
		e.mu.Unlock()
		if d <= 0 {
			won, err := e.tryAcquire(ctx)
			switch {
			case won:
				return true
			case err != nil:
				d = retry.Step()
			default:
				// The Lease is held, or another member was faster: the
				// record read, or the winner's when the watch brings it,
				// says how long to wait.
				retry, d = backoff, e.cfg.RetryPeriod
			}
		}
		if !e.sleep(ctx, d) {
			return false
		}
	}
	return false
}

// sleep waits for d, a change of the record or the end of ctx (false).
func (e *Elector) sleep(ctx context.Context, d time.Duration) bool {
	t := e.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-e.changed:
	case <-t.C():
	}
	return true
}

// tryAcquire reads the Lease and, if the state says it may be taken, writes
// this member's claim. Losing a race to another member is no API error.
func (e *Elector) tryAcquire(ctx context.Context) (bool, error) {
	current, _, err := e.lock.Get(ctx)
	now := e.cfg.Clock.Now()
	if apierrors.IsNotFound(err) {
		e.mu.Lock()
		claim := e.s.claim(nil, now)
		e.mu.Unlock()
		err = e.lock.Create(ctx, toRecord(claim))
		if apierrors.IsAlreadyExists(err) {
			e.report(nil)
			return false, nil
		}
		return e.claimed(claim, now, err)
	}
	if err != nil {
		e.report(err)
		return false, fmt.Errorf("get leader lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err)
	}
	observed := fromRecord(*current)
	e.observe(observed)
	e.mu.Lock()
	left := e.s.leaseLeft(now)
	claim := e.s.claim(&observed, now)
	e.mu.Unlock()
	if left > 0 {
		e.report(nil)
		return false, nil
	}
	err = e.lock.Update(ctx, toRecord(claim))
	if apierrors.IsConflict(err) {
		e.report(nil)
		return false, nil
	}
	return e.claimed(claim, now, err)
}

// claimed handles the result of writing claim, sent at sent.
func (e *Elector) claimed(claim Leader, sent time.Time, err error) (bool, error) {
	e.report(err)
	if err != nil {
		return false, fmt.Errorf("take leader lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err)
	}
	e.wrote(claim, sent)
	return true, nil
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
	e.s.stoppedLeading()
	e.mu.Unlock()
	if f := e.cfg.Callbacks.OnStoppedLeading; f != nil {
		f()
	}
	if ctx.Err() != nil {
		e.release()
	}
}

// renew renews the Lease every RetryPeriod until ctx is done or the state
// says this member no longer leads: another holder observed, or no renewal
// succeeded by its deadline, when a timer wakes it.
func (e *Elector) renew(ctx context.Context) {
	next := e.cfg.Clock.Now().Add(e.cfg.RetryPeriod)
	for {
		now := e.cfg.Clock.Now()
		e.mu.Lock()
		leading, by := e.s.isLeader(now), e.s.renewBy()
		e.mu.Unlock()
		switch {
		case !leading:
			return
		case !now.Before(next):
			next = now.Add(e.cfg.RetryPeriod)
			callCtx, cancel := context.WithTimeout(ctx, by.Sub(now))
			e.tryRenew(callCtx, now)
			cancel()
		case !e.sleep(ctx, min(next.Sub(now), by.Sub(now))):
			return
		}
	}
}

// tryRenew writes a renewal sent at now. On a conflict it re-reads the
// Lease: another holder there ends this member's term; its own record (a
// write whose answer was lost) only needs the write again.
func (e *Elector) tryRenew(ctx context.Context, now time.Time) {
	e.mu.Lock()
	renewal := e.s.renewal(now)
	e.mu.Unlock()
	err := e.lock.Update(ctx, toRecord(renewal))
	if apierrors.IsConflict(err) {
		current, _, getErr := e.lock.Get(ctx)
		if getErr != nil {
			e.report(fmt.Errorf("reread leader lease %s/%s after a conflict: %w", e.cfg.Namespace, e.cfg.Name, getErr))
			return
		}
		reread := fromRecord(*current)
		e.changedBy(func(now time.Time) bool { return e.s.reread(reread, now) })
		if reread.Identity != e.cfg.Identity {
			e.report(nil)
			return
		}
		err = e.lock.Update(ctx, toRecord(renewal))
	}
	if err != nil {
		e.report(fmt.Errorf("renew leader lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err))
		return
	}
	e.report(nil)
	e.wrote(renewal, now)
}

// release hands the Lease over at once, if this member holds it.
func (e *Elector) release() {
	now := e.cfg.Clock.Now()
	e.mu.Lock()
	record, ok := e.s.release(now)
	e.mu.Unlock()
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RenewDeadline)
	defer cancel()
	err := e.lock.Update(ctx, toRecord(record))
	if err != nil {
		err = fmt.Errorf("release leader lease %s/%s: %w", e.cfg.Namespace, e.cfg.Name, err)
	}
	e.report(err)
	if err == nil {
		e.observe(record)
	}
}

// observe feeds a record read or watched to the state, dated now.
func (e *Elector) observe(l Leader) {
	e.changedBy(func(now time.Time) bool { return e.s.observe(l, now) })
}

// wrote feeds a successful write sent at sent to the state.
func (e *Elector) wrote(l Leader, sent time.Time) {
	e.changedBy(func(time.Time) bool { return e.s.wrote(l, sent) })
}

// changedBy applies change to the state under the lock, wakes Run, and
// tells OnNewLeader if the holder changed.
func (e *Elector) changedBy(change func(now time.Time) (newHolder bool)) {
	e.mu.Lock()
	newHolder, leader := change(e.cfg.Clock.Now()), e.s.leader
	e.mu.Unlock()
	select {
	case e.changed <- struct{}{}:
	default:
	}
	if f := e.cfg.Callbacks.OnNewLeader; newHolder && f != nil {
		f(leader)
	}
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

// watch feeds every change of the Lease to the state until ctx is done.
func (e *Elector) watch(ctx context.Context) {
	kube.WatchLeases(ctx, e.cfg.Client, e.cfg.Namespace,
		metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", e.cfg.Name).String()},
		func(lease *coordinationv1.Lease, deleted bool) {
			if deleted {
				e.changedBy(e.s.deleted)
				return
			}
			e.observe(fromRecord(*rl.LeaseSpecToLeaderElectionRecord(&lease.Spec)))
		},
		func(err error) { e.reportOp(OpWatch, err) }, nil)
}

func fromRecord(r rl.LeaderElectionRecord) Leader {
	return Leader{
		Identity:      r.HolderIdentity,
		Transitions:   r.LeaderTransitions,
		AcquireTime:   r.AcquireTime.Time,
		RenewTime:     r.RenewTime.Time,
		LeaseDuration: time.Duration(r.LeaseDurationSeconds) * time.Second,
	}
}

func toRecord(l Leader) rl.LeaderElectionRecord {
	return rl.LeaderElectionRecord{
		HolderIdentity:       l.Identity,
		LeaseDurationSeconds: int(l.LeaseDuration / time.Second),
		AcquireTime:          metav1.NewTime(l.AcquireTime),
		RenewTime:            metav1.NewTime(l.RenewTime),
		LeaderTransitions:    l.Transitions,
	}
}
