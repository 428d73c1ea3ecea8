// Package membership keeps the exact list of a group's members.
//
// Every member holds a member Lease of its own, named after its identity
// and labelled with its group, and renews it; a member that stops gracefully
// deletes it. Every member watches the member Leases of its group, and only
// those: nothing else in the namespace can become a member, whatever its
// labels or pod selector. A member whose Lease has not been renewed for its
// lease duration, by the observer's clock, is no longer a member.
//
// The decisions live in roster, which does no I/O and reads no clock; the
// Membership feeds it what the API server and the local clock say.
package membership

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/embedded-ta/embedded-ta/internal/election"
	"github.com/embedded-ta/embedded-ta/internal/kube"
)

// Labels and annotations of the Leases this product writes.
const (
	LabelGroup         = "embedded-ta.io/group"
	LabelRole          = "embedded-ta.io/role"
	RoleMember         = "member"
	RoleLeader         = "leader"
	AnnotationEndpoint = "embedded-ta.io/endpoint"
	AnnotationNode     = "embedded-ta.io/node"
)

// Operations reported to Config.OnAPIResult.
const (
	OpLease = "member lease"
	OpWatch = "member lease watch"
)

// Member is one member of a group, as its Lease describes it.
type Member struct {
	Identity string `json:"identity"`
	// Endpoint is host:port where the member serves the allocator API.
	Endpoint string `json:"endpoint"`
	// Node is the Kubernetes node the member runs on, if known.
	Node string `json:"node,omitempty"`
	// RenewTime is the member's last renewal, by the member's clock.
	RenewTime time.Time `json:"renew_time"`
	// ObservedAt is when this member saw that renewal, by its own clock.
	ObservedAt time.Time `json:"observed_at"`
	// LeaseDuration is how long the member stays without a renewal.
	LeaseDuration time.Duration `json:"lease_duration"`

	resourceVersion string
}

// Config describes this member's membership in a group.
type Config struct {
	Client    kubernetes.Interface
	Namespace string
	Group     string
	// Self is this member; its RenewTime, ObservedAt and LeaseDuration are ignored.
	Self Member
	// LeaseDuration is how long the group keeps a member that stopped renewing.
	LeaseDuration time.Duration
	// RenewDeadline is how long this member counts itself joined after its
	// last renewal; shorter than LeaseDuration, like a leader's.
	RenewDeadline time.Duration
	// RenewPeriod is how often this member renews its Lease: the retry
	// period. The three durations must pass election.ValidateTiming.
	RenewPeriod time.Duration
	// OnChange receives the member list whenever it changes.
	OnChange func([]Member)
	// OnAPIResult receives the result of every API call, nil for success;
	// op is OpLease for this member's Lease, OpWatch for the group's watch.
	OnAPIResult func(op string, err error)
	// Clock defaults to the real clock.
	Clock clock.WithTicker
}

// Membership publishes this member's Lease and tracks the group's members.
type Membership struct {
	cfg     Config
	changed chan struct{}

	mu      sync.Mutex
	roster  roster
	members []Member              // the live ones, by identity
	own     *coordinationv1.Lease // the last write of the own Lease; nil: read it first
	ownUID  *types.UID            // the own Lease's, once written: leave deletes no other
	renewed time.Time             // when the last successful write of the own Lease was sent
}

// New validates cfg and returns a Membership; Run starts it.
func New(cfg Config) (*Membership, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("membership: no client")
	case cfg.Namespace == "" || cfg.Group == "" || cfg.Self.Identity == "":
		return nil, errors.New("membership: namespace, group and identity must be set")
	}
	if err := election.ValidateTiming(cfg.LeaseDuration, cfg.RenewDeadline, cfg.RenewPeriod); err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Membership{cfg: cfg, changed: make(chan struct{}, 1), roster: roster{}}, nil
}

// Selector selects the member Leases of group.
func Selector(group string) metav1.ListOptions {
	return metav1.ListOptions{LabelSelector: labels.Set{LabelGroup: group, LabelRole: RoleMember}.String()}
}

// Members returns the live members, sorted by identity.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.members)
}

// Known returns every member whose Lease this member has seen and not seen
// deleted, live or not, sorted by identity: the peers a member cut off from
// the API server, to whom every Lease looks expired, can still ask.
func (m *Membership) Known() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.roster.known()
}

// Joined reports whether this member's Lease was renewed within RenewDeadline.
func (m *Membership) Joined() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return joined(m.renewed, m.cfg.Clock.Now(), m.cfg.RenewDeadline)
}

// Run publishes and renews this member's Lease and watches the group until
// ctx is done; then it deletes the Lease, so that the group drops this
// member at once. It returns when its goroutines have.
func (m *Membership) Run(ctx context.Context) {
	watchCtx, stopWatch := context.WithCancel(ctx)
	var watching sync.WaitGroup
	watching.Go(func() {
		kube.WatchLeases(watchCtx, m.cfg.Client, m.cfg.Namespace, Selector(m.cfg.Group), m.observe,
			func(err error) { m.reportOp(OpWatch, err) })
	})
	defer watching.Wait()
	defer stopWatch()

	renew := m.cfg.Clock.NewTicker(m.cfg.RenewPeriod)
	defer renew.Stop()
	expiry := m.cfg.Clock.NewTimer(m.cfg.LeaseDuration)
	defer expiry.Stop()

	m.renew(ctx)
	for {
		select {
		case <-ctx.Done():
			m.leave()
			return
		case <-renew.C():
			m.renew(ctx)
			continue
		case <-m.changed:
		case <-expiry.C():
		}
		if next, ok := m.refresh(); ok {
			expiry.Reset(next)
		}
	}
}

// observe feeds a member Lease, as the watch sees it, to the roster.
func (m *Membership) observe(lease *coordinationv1.Lease, deleted bool) {
	m.mu.Lock()
	if deleted {
		m.roster.forget(lease.Name)
	} else {
		m.roster.observe(lease.Name, fromLease(lease), m.cfg.Clock.Now())
	}
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// refresh recomputes the live members, tells OnChange if they changed, and
// returns when the next one expires.
func (m *Membership) refresh() (time.Duration, bool) {
	m.mu.Lock()
	live, next, ok := m.roster.live(m.cfg.Clock.Now())
	changed := !sameMembers(live, m.members)
	m.members = live
	m.mu.Unlock()
	if changed && m.cfg.OnChange != nil {
		m.cfg.OnChange(slices.Clone(live))
	}
	return next, ok
}

func fromLease(l *coordinationv1.Lease) Member {
	member := Member{
		Identity: ptr.Deref(l.Spec.HolderIdentity, l.Name),
		Endpoint: l.Annotations[AnnotationEndpoint],
		Node:     l.Annotations[AnnotationNode],

		resourceVersion: l.ResourceVersion,
	}
	if l.Spec.RenewTime != nil {
		member.RenewTime = l.Spec.RenewTime.Time
	}
	if d := l.Spec.LeaseDurationSeconds; d != nil {
		member.LeaseDuration = time.Duration(*d) * time.Second
	}
	return member
}

// renew writes this member's Lease, creating it if needed.
func (m *Membership) renew(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RenewPeriod)
	defer cancel()
	sent := m.cfg.Clock.Now()
	err := m.writeOwn(ctx, sent)
	m.report(err)
	if err == nil {
		m.mu.Lock()
		m.renewed = sent
		m.mu.Unlock()
	}
}

// writeOwn writes this member's Lease renewed at now. It reads the Lease
// first only when it holds no copy of its last write, and refuses to take
// over a Lease that is not a member Lease of its group.
func (m *Membership) writeOwn(ctx context.Context, now time.Time) error {
	leases := m.cfg.Client.CoordinationV1().Leases(m.cfg.Namespace)
	name := m.cfg.Self.Identity
	m.mu.Lock()
	own := m.own
	m.mu.Unlock()
	create := false
	if own == nil {
		current, err := leases.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			current, create = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: m.cfg.Namespace}}, true
		case err != nil:
			return fmt.Errorf("get member lease %s/%s: %w", m.cfg.Namespace, name, err)
		case current.Labels[LabelGroup] != m.cfg.Group || current.Labels[LabelRole] != RoleMember:
			return fmt.Errorf("lease %s/%s exists and is not a member lease of group %q (labels %v): identities must be unique in a namespace",
				m.cfg.Namespace, name, m.cfg.Group, current.Labels)
		}
		own = current
	}
	lease := m.leaseFrom(own, now, create)
	var err error
	if create {
		own, err = leases.Create(ctx, lease, metav1.CreateOptions{})
	} else {
		own, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.own = nil // re-read before the next write
		return fmt.Errorf("write member lease %s/%s: %w", m.cfg.Namespace, name, err)
	}
	m.own, m.ownUID = own, &own.UID
	return nil
}

// leaseFrom is current, the own Lease as last read or written, renewed at now.
func (m *Membership) leaseFrom(current *coordinationv1.Lease, now time.Time, create bool) *coordinationv1.Lease {
	lease := current.DeepCopy()
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	lease.Labels[LabelGroup] = m.cfg.Group
	lease.Labels[LabelRole] = RoleMember
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[AnnotationEndpoint] = m.cfg.Self.Endpoint
	if m.cfg.Self.Node != "" {
		lease.Annotations[AnnotationNode] = m.cfg.Self.Node
	}
	renewed := metav1.NewMicroTime(now)
	lease.Spec.HolderIdentity = ptr.To(m.cfg.Self.Identity)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(m.cfg.LeaseDuration / time.Second))
	lease.Spec.RenewTime = &renewed
	if create || lease.Spec.AcquireTime == nil {
		lease.Spec.AcquireTime = &renewed
	}
	return lease
}

// leave deletes this member's Lease, if it ever wrote one: a Lease of the
// same name that is not its own stays.
func (m *Membership) leave() {
	m.mu.Lock()
	uid := m.ownUID
	m.mu.Unlock()
	if uid == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.RenewPeriod)
	defer cancel()
	name := m.cfg.Self.Identity
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: uid}}
	err := m.cfg.Client.CoordinationV1().Leases(m.cfg.Namespace).Delete(ctx, name, opts)
	if apierrors.IsNotFound(err) {
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("delete member lease %s/%s: %w", m.cfg.Namespace, name, err)
	}
	m.report(err)
}

// Sweep deletes the Leases the roster finds stale. The leader calls it; a
// renewal since the roster saw a Lease wins over the delete, by its
// resource version.
func (m *Membership) Sweep(ctx context.Context) error {
	m.mu.Lock()
	stale := m.roster.stale(m.cfg.Clock.Now())
	m.mu.Unlock()
	var errs []error
	for name, version := range stale {
		opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &version}}
		err := m.cfg.Client.CoordinationV1().Leases(m.cfg.Namespace).Delete(ctx, name, opts)
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("delete expired member lease %s/%s: %w", m.cfg.Namespace, name, err))
		}
	}
	return errors.Join(errs...)
}

func (m *Membership) report(err error) {
	if errors.Is(err, context.Canceled) {
		return // stopping, not failing
	}
	m.reportOp(OpLease, err)
}

func (m *Membership) reportOp(op string, err error) {
	if f := m.cfg.OnAPIResult; f != nil {
		f(op, err)
	}
}
