// Package membership keeps the exact list of a group's members.
//
// Every member holds a member Lease of its own, named after its identity
// and labelled with its group, and renews it; a member that stops gracefully
// deletes it. The leader watches the member Leases of its group, and only
// those: nothing else in the namespace can become a member, whatever its
// labels or pod selector. A member whose Lease has not been renewed for its
// lease duration, by the observer's clock, is no longer a member.
//
// Only the leader needs every member; a follower watches the leader's
// member Lease alone (its endpoint, and the group's size, which the leader
// writes in it), so that it receives a few events a second whatever the
// group's size, and the API server sends each renewal to one watcher, not
// to every member. A member lists the group's Leases once as it starts: the
// peers it asks who leads when it cannot reach the API server.
//
// A member renews every max(RenewPeriod, size / maxGroupWrites s), so that
// a whole group writes at most maxGroupWrites member Leases a second, and
// its Lease's duration and its renew deadline grow with its period
// (Timing).
//
// The decisions live in roster, which does no I/O and reads no clock; the
// Membership feeds it what the API server and the local clock say.
package membership

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
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
	// AnnotationMembers is the group's size, in the leader's member Lease.
	AnnotationMembers = "embedded-ta.io/members"
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
	// Leader, if set, names the current leader, read whenever Follow or
	// Lead asks for another watch: callbacks that call Follow may come in
	// another order than the leaders they name.
	Leader func() string
	// OnChange receives the member list (Members) whenever it, or the
	// group's size (Size), changes.
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
	rescope chan struct{}
	// resize asks for a renewal before its time (after the duration it
	// carries): the leader writes a new
	// group size at once (at most one a second), for the followers.
	resize chan time.Duration

	mu     sync.Mutex
	roster roster
	// prev is every Lease seen before the last change of what is watched
	// (a Lease seen again with the same renewal keeps when it was first
	// seen); forget removes deleted ones.
	prev    roster
	peers   map[string]Member     // every member Lease seen, by name: listed at start, and each leader's
	members []Member              // the live ones, by identity
	own     *coordinationv1.Lease // the last write of the own Lease; nil: read it first
	ownUID  *types.UID            // the own Lease's, once written: leave deletes no other
	renewed time.Time             // when the last successful write of the own Lease was sent
	// deadline is the renew deadline, and duration the lease duration, of
	// the last successful write; period is how long until the next.
	deadline, duration, period time.Duration
	// size is the group's size: the live members while leading, else as
	// the leader's Lease last said (0: not known).
	size, sizeTold int       // sizeTold: as OnChange last had it
	sizeWritten    int       // as the own Lease last says it
	attempted      time.Time // when the last write of the own Lease was sent, failed or not
	listedSize     int       // the member Leases listed at the start: the size until the leader's is known
	// leading counts the Lead calls under way, and leader is the leader
	// Follow last named.
	leading int
	leader  string
	// scope is what is watched (scopeAll, a leader's name, or "" for
	// nothing), synced is closed and listed set once its first list is in,
	// and scoped is closed at its next change.
	scope          string
	synced, scoped chan struct{}
	listed         bool
}

// What a member watches: every member Lease of the group, or none; else the
// leader's alone, by its name.
const (
	scopeAll  = "*" // no Lease name
	scopeNone = ""
)

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
	return &Membership{cfg: cfg, changed: make(chan struct{}, 1), rescope: make(chan struct{}, 1), resize: make(chan time.Duration, 1), roster: roster{}, peers: map[string]Member{},
		deadline: cfg.RenewDeadline, duration: cfg.LeaseDuration, period: cfg.RenewPeriod,
		scope: "-", listed: true, synced: make(chan struct{}), scoped: make(chan struct{})}, nil
}

// Selector selects the member Leases of group.
func Selector(group string) metav1.ListOptions {
	return metav1.ListOptions{LabelSelector: labels.Set{LabelGroup: group, LabelRole: RoleMember}.String()}
}

// Members returns the live members, sorted by identity: every one while
// this member leads (once Lead has returned), else the leader and itself.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.members)
}

// Size returns the group's size: the number of live members while this
// member leads, else what the leader last wrote in its Lease (0 while that
// is not known).
func (m *Membership) Size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.size
}

// Known returns every member whose Lease this member has seen, live or not,
// sorted by identity: those listed as it started, each leader, and, while it
// leads, every member. A member cut off from the API server, to whom every
// Lease looks expired, can still ask them who leads.
func (m *Membership) Known() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	byName := maps.Clone(m.peers)
	maps.Copy(byName, m.roster)
	return roster(byName).known()
}

// Joined reports whether this member's Lease was renewed within its renew
// deadline.
func (m *Membership) Joined() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return joined(m.renewed, m.cfg.Clock.Now(), m.deadline)
}

// Lead watches every member Lease of the group until ctx is done, then the
// leader's alone again (Follow). It returns once the first list is in (the
// group's members known), or with ctx's error. Run must be running.
func (m *Membership) Lead(ctx context.Context) error {
	m.mu.Lock()
	m.leading++
	m.mu.Unlock()
	wake(m.rescope)
	go func() {
		<-ctx.Done()
		m.mu.Lock()
		m.leading--
		m.mu.Unlock()
		wake(m.rescope)
	}()
	for {
		m.mu.Lock()
		scope, synced, scoped := m.scope, m.synced, m.scoped
		m.mu.Unlock()
		if scope == scopeAll {
			select {
			case <-synced:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-scoped:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Follow names the leader: a member that does not lead watches its member
// Lease alone; "" watches none.
func (m *Membership) Follow(leader string) {
	m.mu.Lock()
	m.leader = leader
	m.mu.Unlock()
	wake(m.rescope)
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run publishes and renews this member's Lease and watches the group's
// Leases (Lead, Follow) until ctx is done; then it deletes the Lease, so
// that the group drops this member at once. It returns when its goroutines
// have.
func (m *Membership) Run(ctx context.Context) {
	var listing sync.WaitGroup
	defer listing.Wait()
	listing.Go(func() { m.listPeers(ctx) }) // not in the way of the first renewal
	var w watchRun
	defer w.stop()
	m.rewatch(ctx, &w)

	m.renew(ctx)
	renew := m.cfg.Clock.NewTimer(m.nextRenewal())
	defer renew.Stop()
	expiry := m.cfg.Clock.NewTimer(m.cfg.LeaseDuration)
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			w.stop()
			m.leave()
			return
		case <-renew.C():
			m.renew(ctx)
			renew.Reset(m.nextRenewal())
		case after := <-m.resize:
			renew.Reset(after) // no stale tick after Reset (Go 1.23 timers)
		case <-m.rescope:
			m.rewatch(ctx, &w)
		case <-m.changed:
		case <-expiry.C():
		}
		if next, ok := m.refresh(); ok {
			expiry.Reset(next)
		}
	}
}

// watchRun is a watch under way.
type watchRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// stop stops the watch, if any, and waits for its goroutines.
func (w *watchRun) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done
		*w = watchRun{}
	}
}

// rewatch brings what is watched in line with Lead and Follow: every
// member Lease while leading, else the leader's.
func (m *Membership) rewatch(ctx context.Context, w *watchRun) {
	var current string
	if m.cfg.Leader != nil {
		current = m.cfg.Leader()
	}
	m.mu.Lock()
	leader := m.leader
	if m.cfg.Leader != nil {
		leader = current
	}
	scope := scopeNone
	switch {
	case m.leading > 0:
		scope = scopeAll
	case leader != "" && leader != m.cfg.Self.Identity:
		scope = leader
	}
	if scope == m.scope {
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	w.stop() // its last events handled: the roster is the new watch's from here on
	m.mu.Lock()
	m.scope, m.listed = scope, scope == scopeNone
	if scope == scopeAll {
		m.attempted = time.Time{} // a new leader writes the group's size at once
	}
	// What was seen stays known by its renewal: a Lease seen again with
	// the same renewal keeps the date it was first seen, even across a
	// scope that watched nothing (a new leader before it leads).
	if m.prev == nil {
		m.prev = roster{}
	}
	maps.Copy(m.prev, m.roster)
	m.roster = roster{}
	synced := make(chan struct{})
	m.synced = synced
	close(m.scoped)
	m.scoped = make(chan struct{})
	m.mu.Unlock()
	wake(m.changed)
	if scope == scopeNone {
		return // refresh closes synced
	}
	onSynced := func() {
		m.mu.Lock()
		m.listed = true // refresh closes synced once Members holds the list
		m.mu.Unlock()
		wake(m.changed)
	}
	opts := Selector(m.cfg.Group)
	if scope != scopeAll {
		opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", scope).String()
	}
	watchCtx, cancel := context.WithCancel(ctx)
	*w = watchRun{cancel: cancel, done: make(chan struct{})}
	go func(done chan struct{}) {
		defer close(done)
		kube.WatchLeases(watchCtx, m.cfg.Client, m.cfg.Namespace, opts, m.observe,
			func(err error) { m.reportOp(OpWatch, err) }, onSynced)
	}(w.done)
}

// listPeers lists the group's member Leases once: the peers Known returns.
// A failure leaves them to the leaders this member sees.
func (m *Membership) listPeers(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RenewDeadline)
	defer cancel()
	list, err := m.cfg.Client.CoordinationV1().Leases(m.cfg.Namespace).List(ctx, Selector(m.cfg.Group))
	if err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range list.Items {
		m.peers[list.Items[i].Name] = fromLease(&list.Items[i])
	}
	m.listedSize = len(list.Items)
}

// observe feeds a member Lease, as the watch sees it, to the roster.
func (m *Membership) observe(lease *coordinationv1.Lease, deleted bool) {
	m.mu.Lock()
	if m.scope != scopeAll && lease.Name != m.scope {
		m.mu.Unlock()
		return // not the leader's (the watch selects it alone)
	}
	if deleted {
		m.roster.forget(lease.Name)
		m.prev.forget(lease.Name)
		delete(m.peers, lease.Name)
	} else {
		member := fromLease(lease)
		if old, ok := m.prev[lease.Name]; ok {
			if _, seen := m.roster[lease.Name]; !seen {
				m.roster[lease.Name] = old // the same renewal keeps its date
			}
		}
		m.roster.observe(lease.Name, member, m.cfg.Clock.Now())
		m.peers[lease.Name] = member
		if lease.Name == m.scope { // the leader's
			if n, err := strconv.Atoi(lease.Annotations[AnnotationMembers]); err == nil && n > 0 {
				m.size = n
			}
		}
	}
	m.mu.Unlock()
	wake(m.changed)
}

// refresh recomputes the live members, tells OnChange if they or the
// group's size changed, and returns when the next one expires.
func (m *Membership) refresh() (time.Duration, bool) {
	m.mu.Lock()
	if !m.listed {
		m.mu.Unlock()
		return 0, false // the members as they were until the new watch has listed
	}
	now := m.cfg.Clock.Now()
	live, next, ok := m.roster.live(now)
	if m.scope != scopeAll && joined(m.renewed, now, m.deadline) && !slices.ContainsFunc(live, func(o Member) bool { return o.Identity == m.cfg.Self.Identity }) {
		// A follower knows itself by its own writes.
		self := m.cfg.Self
		self.RenewTime, self.ObservedAt, self.LeaseDuration = m.renewed, m.renewed, m.duration
		live = append(live, self)
		slices.SortFunc(live, func(a, b Member) int { return strings.Compare(a.Identity, b.Identity) })
		if left := m.renewed.Add(m.deadline).Sub(now); !ok || left < next {
			next, ok = left, true
		}
	}
	if m.scope == scopeAll {
		m.size = len(live)
		if m.size != m.sizeWritten {
			// Written at once, at most one write a second; the regular
			// renewal carries it if it comes first.
			after := max(m.attempted.Add(time.Second).Sub(now), 0)
			if after < m.period {
				select {
				case m.resize <- after:
				default:
				}
			}
		}
	}
	changed := !sameMembers(live, m.members) || m.size != m.sizeTold
	m.members, m.sizeTold = live, m.size
	if !closed(m.synced) {
		close(m.synced) // Lead returns: Members holds the list
	}
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

// renew writes this member's Lease, creating it if needed, with the timing
// of the group's size.
func (m *Membership) renew(ctx context.Context) {
	m.mu.Lock()
	size := m.size
	if size == 0 {
		size = m.listedSize // a cold start of a large group renews as seldom
	}
	period, duration, deadline := Timing(m.cfg.LeaseDuration, m.cfg.RenewDeadline, m.cfg.RenewPeriod, size)
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RenewPeriod)
	defer cancel()
	sent := m.cfg.Clock.Now()
	m.mu.Lock()
	m.attempted = sent
	m.mu.Unlock()
	err := m.writeOwn(ctx, sent, duration)
	m.report(err)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.period = m.cfg.RenewPeriod // after a failure, try again soon
	if err == nil {
		m.renewed, m.deadline, m.duration, m.period = sent, deadline, duration, period
		m.sizeWritten = 0
		if m.scope == scopeAll {
			m.sizeWritten = m.size
		}
	}
}

// nextRenewal is how long until the next renewal.
func (m *Membership) nextRenewal() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.period
}

// writeOwn writes this member's Lease renewed at now. It reads the Lease
// first only when it holds no copy of its last write, and refuses to take
// over a Lease that is not a member Lease of its group.
func (m *Membership) writeOwn(ctx context.Context, now time.Time, duration time.Duration) error {
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
	m.mu.Lock()
	size := 0
	if m.scope == scopeAll {
		size = m.size
	}
	m.mu.Unlock()
	lease := m.leaseFrom(own, now, duration, size, create)
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

// leaseFrom is current, the own Lease as last read or written, renewed at
// now for duration; size is the group's while this member leads, else 0.
func (m *Membership) leaseFrom(current *coordinationv1.Lease, now time.Time, duration time.Duration, size int, create bool) *coordinationv1.Lease {
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
	if size > 0 {
		lease.Annotations[AnnotationMembers] = strconv.Itoa(size)
	} else {
		delete(lease.Annotations, AnnotationMembers)
	}
	renewed := metav1.NewMicroTime(now)
	lease.Spec.HolderIdentity = ptr.To(m.cfg.Self.Identity)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(duration / time.Second))
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

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
