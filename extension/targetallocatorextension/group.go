package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"time"

	"go.opentelemetry.io/collector/component"

	"github.com/embedded-ta/embedded-ta/internal/membership"
)

// Group is what other components, such as the prometheus_allocated receiver,
// see of a target_allocator extension: who this replica is, who leads its
// group and where, and who the members are.
type Group interface {
	component.Component
	// View returns the replica's current view of its group.
	View() View
	// Subscribe returns a channel that receives a value after each change of
	// the view (coalesced: a slow reader sees the latest view on its next
	// read) and a function that ends the subscription.
	Subscribe() (<-chan struct{}, func())
}

// View is one replica's view of its group. It is also the /status document.
type View struct {
	Identity  string `json:"identity"`
	Group     string `json:"group"`
	Namespace string `json:"namespace"`
	// Endpoint is where this replica serves the allocator API, as advertised.
	Endpoint string `json:"endpoint"`
	// Leader is the identity of the leader, "" when there is none.
	Leader string `json:"leader"`
	// LeaderEndpoint is where the leader serves the allocator API, from its
	// member Lease; "" while unknown.
	LeaderEndpoint string `json:"leader_endpoint"`
	IsLeader       bool   `json:"is_leader"`
	// Epoch counts the group's leader changes (the Lease's leaderTransitions).
	Epoch int `json:"epoch"`
	// LeaderLease is the leader Lease as this replica last saw it.
	LeaderLease LeaseView `json:"leader_lease"`
	// Joined reports whether this replica's own member Lease is current.
	Joined bool `json:"joined"`
	// Members are the live members, sorted by identity.
	Members []MemberView `json:"members"`
}

// LeaseView describes the leader Lease.
type LeaseView struct {
	Name          string    `json:"name"`
	AcquireTime   time.Time `json:"acquire_time"`
	RenewTime     time.Time `json:"renew_time"`
	LeaseDuration string    `json:"lease_duration"`
}

// MemberView is one member of the group.
type MemberView struct {
	Identity string `json:"identity"`
	Endpoint string `json:"endpoint"`
	Node     string `json:"node,omitempty"`
	// RenewTime is the member's last renewal, by its own clock.
	RenewTime time.Time `json:"renew_time"`
	// LeaseAge is how long ago this replica saw that renewal.
	LeaseAge string `json:"lease_age"`
	// LeaseDuration is how long the member lasts without renewing.
	LeaseDuration string `json:"lease_duration"`
}

func memberView(m membership.Member, now time.Time) MemberView {
	return MemberView{
		Identity:      m.Identity,
		Endpoint:      m.Endpoint,
		Node:          m.Node,
		RenewTime:     m.RenewTime,
		LeaseAge:      now.Sub(m.ObservedAt).Round(time.Millisecond).String(),
		LeaseDuration: m.LeaseDuration.String(),
	}
}
