// Package status describes a member's view of its group, the one projection
// of group state that /status, the status page, the allocator API's relay
// and the prometheus_allocated receiver read.
package status

import (
	"time"

	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// View is one member's view of its group.
type View struct {
	// Identity is this member's name in its group: its collector_id.
	Identity  string `json:"identity"`
	Group     string `json:"group"`
	Namespace string `json:"namespace"`
	// Endpoint is where this member serves the allocator API, as advertised.
	Endpoint string `json:"endpoint"`
	// HTTPSEndpoint is where it serves the allocator API with mutual TLS
	// too (https::enabled): the advertised host with the https port.
	HTTPSEndpoint string `json:"https_endpoint,omitempty"`
	// Leader is the identity of the leader, "" when there is none.
	Leader string `json:"leader"`
	// LeaderEndpoint is where the leader serves the allocator API, from its
	// member Lease; "" while unknown.
	LeaderEndpoint string `json:"leader_endpoint"`
	IsLeader       bool   `json:"is_leader"`
	// Epoch counts the group's leader changes (the leader Lease's leaderTransitions).
	Epoch int `json:"epoch"`
	// LeaderLease is the leader Lease as this member last saw it.
	LeaderLease LeaseView `json:"leader_lease"`
	// LeaderFromPeers is true while this member cannot read the leader
	// Lease and names the leader its peers found leading (see LeaderAmong).
	LeaderFromPeers bool `json:"leader_from_peers,omitempty"`
	// Joined reports whether this member's own member Lease is current.
	Joined bool `json:"joined"`
	// Members are the live members this member knows, sorted by identity:
	// every member on the leader, which alone watches their Leases; the
	// leader and itself on a follower.
	Members []MemberView `json:"members"`
	// GroupSize is the number of members: on a follower, as the leader last
	// wrote it in its member Lease (0 while not known).
	GroupSize int `json:"group_size"`
}

// LeaderAmong returns, of the views that members of group gave of
// themselves, the one of the member that leads: it says it leads and its
// own member Lease is current; the latest epoch wins. A member that can no
// longer read the Lease (cut off from the API server, it stepped down or
// sees the leader's lease run out) asks its peers and relays to that one,
// so that it hears from the group's leader whether it is still a member.
// Only the leader's word counts: a peer's own idea of who leads may be as
// stale as the asker's.
func LeaderAmong(group string, views []View) (View, bool) {
	var leader View
	found := false
	for _, v := range views {
		if v.Group != group || !v.IsLeader || !v.Joined || v.Identity == "" || v.Endpoint == "" {
			continue
		}
		if !found || v.Epoch > leader.Epoch {
			leader, found = v, true
		}
	}
	return leader, found
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
	// LeaseAge is how long ago this member saw that renewal.
	LeaseAge string `json:"lease_age"`
	// LeaseDuration is how long the member lasts without renewing.
	LeaseDuration string `json:"lease_duration"`
}

// Document is /status: the view and, on the leader, the summary of its
// allocation. The status page shows the same document.
type Document struct {
	View
	Allocation *AllocationView `json:"allocation,omitempty"`
}

// AllocationView is the leader's allocation: its counts, and the change it
// follows.
type AllocationView struct {
	shares.Summary
	Epoch  int    `json:"epoch"`
	Leader string `json:"leader"`
	// Pending is true while the jobs are not all known: no share is
	// answered from it.
	Pending bool `json:"pending,omitempty"`
	// Changed is when the change that led to it arrived, Cause what that
	// change was, Moved of how many targets it changed the member.
	Changed time.Time    `json:"changed,omitzero"`
	Cause   shares.Cause `json:"cause,omitempty"`
	Moved   int          `json:"moved"`
	// Handoffs counts the targets whose move, made before it is broken,
	// is under way.
	Handoffs int `json:"handoffs"`
	// Recent are the last allocations of the leader's term, this one
	// first, in the same words.
	Recent []shares.RecentAllocation `json:"recent,omitempty"`
}

// NewDocument returns the document of view and allocation a (nil on a
// follower).
func NewDocument(view View, a *shares.Allocation) Document {
	d := Document{View: view}
	if a != nil {
		d.Allocation = &AllocationView{Summary: a.Summary(), Epoch: a.Epoch, Leader: a.Leader, Pending: a.Pending,
			Changed: a.Changed, Cause: a.Cause, Moved: a.Moved, Handoffs: a.Handoffs, Recent: a.Recent}
	}
	return d
}
