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
	// Joined reports whether this member's own member Lease is current.
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
	// LeaseAge is how long ago this member saw that renewal.
	LeaseAge string `json:"lease_age"`
	// LeaseDuration is how long the member lasts without renewing.
	LeaseDuration string `json:"lease_duration"`
}

// Document is /status: the view and, on the leader, the summary of its
// allocation. The status page shows the same document.
type Document struct {
	View
	Allocation *shares.Summary `json:"allocation,omitempty"`
}

// NewDocument returns the document of view and allocation a (nil on a
// follower).
func NewDocument(view View, a *shares.Allocation) Document {
	d := Document{View: view}
	if a != nil {
		s := a.Summary()
		d.Allocation = &s
	}
	return d
}
