// Package membership keeps the exact list of a group's members.
//
// Every replica holds a member Lease of its own, named after its identity
// and labelled with its group, and renews it; a replica that stops gracefully
// deletes it. Every replica watches the member Leases of its group, and only
// those: nothing else in the namespace can become a member, whatever its
// labels or pod selector. A member whose Lease has not been renewed for its
// lease duration, by the observer's clock, is no longer a member.
package membership

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

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

// Member is one replica of a group, as its Lease describes it.
type Member struct {
	Identity string `json:"identity"`
	// Endpoint is host:port where the member serves the allocator API.
	Endpoint string `json:"endpoint"`
	// Node is the Kubernetes node the member runs on, if known.
	Node string `json:"node,omitempty"`
	// RenewTime is the member's last renewal, by the member's clock.
	RenewTime time.Time `json:"renew_time"`
	// ObservedAt is when this replica saw that renewal, by its own clock.
	ObservedAt time.Time `json:"observed_at"`
	// LeaseDuration is how long the member stays without a renewal.
	LeaseDuration time.Duration `json:"lease_duration"`

	resourceVersion string
}

// Config describes this replica's membership in a group.
type Config struct {
	Client    coordinationclient.LeasesGetter
	Namespace string
	Group     string
	// Self is this replica; its RenewTime, ObservedAt and LeaseDuration are ignored.
	Self Member
	// LeaseDuration is how long this replica stays a member without renewing.
	LeaseDuration time.Duration
	// RenewPeriod is how often this replica renews its Lease; it must be
	// shorter than LeaseDuration.
	RenewPeriod time.Duration
	// OnChange receives the member list whenever it changes.
	OnChange func([]Member)
	// OnAPIResult receives the result of every API call, nil for success;
	// op is OpLease for this replica's Lease, OpWatch for the group's watch.
	OnAPIResult func(op string, err error)
	// Clock defaults to the real clock.
	Clock clock.WithTicker
}

// Membership publishes this replica's Lease and tracks the group's members.
type Membership struct {
	cfg     Config
	changed chan struct{}

	mu      sync.Mutex
	seen    map[string]Member // every member Lease of the group, live or not
	members []Member          // the live ones, by identity
	own     *coordinationv1.Lease
	joined  time.Time // last successful renewal of the own Lease
}

// New validates cfg and returns a Membership; Run starts it.
func New(cfg Config) (*Membership, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("membership: no client")
	case cfg.Namespace == "" || cfg.Group == "" || cfg.Self.Identity == "":
		return nil, errors.New("membership: namespace, group and identity must be set")
	case cfg.LeaseDuration < time.Second:
		return nil, fmt.Errorf("membership: lease duration %s is shorter than a second", cfg.LeaseDuration)
	case cfg.RenewPeriod <= 0 || cfg.RenewPeriod >= cfg.LeaseDuration:
		return nil, fmt.Errorf("membership: renew period %s must be positive and shorter than the lease duration %s", cfg.RenewPeriod, cfg.LeaseDuration)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return &Membership{cfg: cfg, changed: make(chan struct{}, 1), seen: map[string]Member{}}, nil
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

// Joined reports whether this replica's Lease was renewed within its lease duration.
func (m *Membership) Joined() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.joined.IsZero() && m.cfg.Clock.Since(m.joined) < m.cfg.LeaseDuration
}

// Run publishes and renews this replica's Lease and watches the group until
// ctx is done; then it deletes the Lease, so that the group drops this
// replica at once.
func (m *Membership) Run(ctx context.Context) {
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go kube.WatchLeases(watchCtx, m.cfg.Client, m.cfg.Namespace, Selector(m.cfg.Group), m.observe,
		func(err error) { m.reportOp(OpWatch, err) })

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

// observe records a member Lease as the watch sees it.
func (m *Membership) observe(lease *coordinationv1.Lease, deleted bool) {
	m.mu.Lock()
	if deleted {
		delete(m.seen, lease.Name)
	} else {
		member := fromLease(lease)
		if old, ok := m.seen[lease.Name]; ok && old.RenewTime.Equal(member.RenewTime) && old.Endpoint == member.Endpoint && old.Node == member.Node {
			member.ObservedAt = old.ObservedAt
		} else {
			member.ObservedAt = m.cfg.Clock.Now()
		}
		m.seen[lease.Name] = member
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
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	live := make([]Member, 0, len(m.seen))
	next, ok := time.Duration(0), false
	for _, member := range m.seen {
		left := member.ObservedAt.Add(member.LeaseDuration).Sub(now)
		if left <= 0 {
			continue
		}
		live = append(live, member)
		if !ok || left < next {
			next, ok = left, true
		}
	}
	slices.SortFunc(live, func(a, b Member) int { return strings.Compare(a.Identity, b.Identity) })
	changed := !slices.EqualFunc(live, m.members, func(a, b Member) bool {
		return a.Identity == b.Identity && a.Endpoint == b.Endpoint && a.Node == b.Node
	})
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

// renew writes this replica's Lease, creating it if needed.
func (m *Membership) renew(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RenewPeriod)
	defer cancel()
	err := m.writeOwn(ctx)
	m.report(err)
	if err == nil {
		m.mu.Lock()
		m.joined = m.cfg.Clock.Now()
		m.mu.Unlock()
	}
}

func (m *Membership) writeOwn(ctx context.Context) error {
	leases := m.cfg.Client.Leases(m.cfg.Namespace)
	name := m.cfg.Self.Identity
	m.mu.Lock()
	own := m.own
	m.mu.Unlock()
	if own == nil {
		current, err := leases.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			current = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: m.cfg.Namespace}}
		case err != nil:
			return fmt.Errorf("get member lease %s/%s: %w", m.cfg.Namespace, name, err)
		case current.Labels[LabelGroup] != m.cfg.Group || current.Labels[LabelRole] != RoleMember:
			return fmt.Errorf("lease %s/%s exists and is not a member lease of group %q (labels %v): identities must be unique in a namespace",
				m.cfg.Namespace, name, m.cfg.Group, current.Labels)
		}
		own = current
	}
	lease := m.leaseFrom(own)
	var (
		written *coordinationv1.Lease
		err     error
	)
	if lease.ResourceVersion == "" {
		written, err = leases.Create(ctx, lease, metav1.CreateOptions{})
	} else {
		written, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	if err != nil {
		written = nil // re-read before the next write
	}
	m.mu.Lock()
	m.own = written
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("write member lease %s/%s: %w", m.cfg.Namespace, name, err)
	}
	return nil
}

func (m *Membership) leaseFrom(current *coordinationv1.Lease) *coordinationv1.Lease {
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
	now := metav1.NewMicroTime(m.cfg.Clock.Now())
	lease.Spec.HolderIdentity = ptr.To(m.cfg.Self.Identity)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(m.cfg.LeaseDuration / time.Second))
	lease.Spec.RenewTime = &now
	if lease.Spec.AcquireTime == nil || current.ResourceVersion == "" {
		lease.Spec.AcquireTime = &now
	}
	return lease
}

// leave deletes this replica's Lease.
func (m *Membership) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.RenewPeriod)
	defer cancel()
	name := m.cfg.Self.Identity
	m.mu.Lock()
	own := m.own
	m.mu.Unlock()
	opts := metav1.DeleteOptions{}
	if own != nil {
		opts.Preconditions = &metav1.Preconditions{UID: &own.UID}
	}
	err := m.cfg.Client.Leases(m.cfg.Namespace).Delete(ctx, name, opts)
	if apierrors.IsNotFound(err) {
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("delete member lease %s/%s: %w", m.cfg.Namespace, name, err)
	}
	m.report(err)
}

// Sweep deletes the Leases of members that have been gone for a whole lease
// duration past their expiry, such as replicas removed by a scale-down after
// a crash. The leader calls it; a concurrent renewal wins over the delete.
func (m *Membership) Sweep(ctx context.Context) error {
	now := m.cfg.Clock.Now()
	m.mu.Lock()
	stale := map[string]string{}
	for name, member := range m.seen {
		if now.Sub(member.ObservedAt) > 2*member.LeaseDuration {
			stale[name] = member.resourceVersion
		}
	}
	m.mu.Unlock()
	var errs []error
	for name, version := range stale {
		opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &version}}
		err := m.cfg.Client.Leases(m.cfg.Namespace).Delete(ctx, name, opts)
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
