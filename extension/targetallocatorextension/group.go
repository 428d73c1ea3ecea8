package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/component"

	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/membership"
	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/status"
)

// Group is what other components, such as the prometheus_allocated receiver,
// see of a target_allocator extension: who this member is, who leads its
// group and where, who the members are, and this member's shares.
type Group interface {
	component.Component
	// View returns the member's current view of its group.
	View() View
	// Shares returns this member's shares by job, as its allocator API
	// answers them for its own collector_id now (the leader's allocation on
	// the leader, the copy of the last answer on a follower, which follows
	// the leader's allocation within a round trip), and a channel that is
	// closed when they may have changed. Whatever the API has answered this
	// member's receiver is in there, or something newer.
	Shares() (Shares, <-chan struct{})
	// Fenced tells the leader that this member's receiver fences its data
	// per target, and may take about warmWithin to scrape a target that
	// entered its share: the leader may then hand it warming targets
	// (make before break). A member whose receiver never calls it gets
	// its targets without warming. With hotStandby, the member also warms
	// the targets it would take if their member died.
	Fenced(warmWithin time.Duration, hotStandby bool)
	// Warmed tells the leader that the receiver has seen data of a warming
	// target: its job, its hash (the value of its WarmingLabel) and when
	// the scrape began (zero if not known).
	Warmed(job, hash string, scraped time.Time)
	// Leave tells the leader that this member is stopping, and waits until
	// its share is empty (its targets handed over, each after its new
	// member's first scrape), ctx is done, or a bound has passed.
	Leave(ctx context.Context) error
	// Measured tells the extension the series one scrape of a target of
	// this member's share gave: the share's job, the target's key
	// (report.TargetKey of its labels in the share) and the series. The
	// extension reports the last of each target to the leader, which
	// weighs targets by them (allocation_strategy series-weighted,
	// max_series_per_collector).
	Measured(job, target string, series int64)
}

// WarmingLabel marks a warming target in a share: scraped, its data dropped.
const WarmingLabel = shares.WarmingLabel

// View is one member's view of its group; it is also the /status document.
type View = status.View

// Shares are a member's shares by job; Share is one of them, with its ETag
// and its targets.
type (
	Shares = allocatorapi.OwnShares
	Share  = allocatorapi.OwnShare
)

// Shares implements Group.
func (e *allocatorExtension) Shares() (Shares, <-chan struct{}) {
	if e.api == nil { // not started: ask again
		closed := make(chan struct{})
		close(closed)
		return Shares{}, closed
	}
	return e.api.Shares()
}

// View implements Group.
func (e *allocatorExtension) View() View {
	v := View{
		Identity:  e.s.identity,
		Group:     e.s.group,
		Namespace: e.s.namespace,
		Endpoint:  e.s.advertise,
		// The advertised host, with the https port every member listens on.
		HTTPSEndpoint: e.s.httpsAdvertise,
		Members:       []status.MemberView{},
	}
	if e.elector == nil {
		return v
	}
	l := e.elector.Leader()
	v.Leader, v.Epoch, v.IsLeader = l.Identity, l.Transitions, e.elector.IsLeader()
	v.LeaderLease = status.LeaseView{Name: e.s.group, AcquireTime: l.AcquireTime, RenewTime: l.RenewTime, LeaseDuration: l.LeaseDuration.String()}
	v.Joined, v.GroupSize = e.members.Joined(), e.members.Size()
	if p := e.peerLeader.Load(); p != nil && e.cutOff() {
		v.Leader, v.Epoch, v.LeaderFromPeers = p.Identity, p.Epoch, true
		v.LeaderEndpoint = p.Endpoint
	}
	now := time.Now()
	for _, m := range e.members.Members() {
		v.Members = append(v.Members, memberView(m, now))
		if m.Identity == v.Leader && !v.LeaderFromPeers {
			v.LeaderEndpoint = m.Endpoint
		}
	}
	if v.LeaderEndpoint == "" && v.Leader != "" && !v.LeaderFromPeers {
		// A follower that has not seen the new leader's member Lease yet,
		// or a leaving member that no longer watches: the Lease as last
		// seen (its endpoint changes only with a new pod).
		for _, m := range e.members.Known() {
			if m.Identity == v.Leader {
				v.LeaderEndpoint = m.Endpoint
			}
		}
	}
	return v
}

func memberView(m membership.Member, now time.Time) status.MemberView {
	return status.MemberView{
		Identity:      m.Identity,
		Endpoint:      m.Endpoint,
		Node:          m.Node,
		RenewTime:     m.RenewTime,
		LeaseAge:      now.Sub(m.ObservedAt).Round(time.Millisecond).String(),
		LeaseDuration: m.LeaseDuration.String(),
	}
}
