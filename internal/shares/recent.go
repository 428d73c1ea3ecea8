package shares

import "time"

// RecentAllocation summarises one allocation for the history of a leader's
// term: when the change that led to it arrived (Changed) and when the
// allocation was made (Made, zero if not known), what that change was, of
// how many targets it changed the member, and how many hand-offs were
// under way.
type RecentAllocation struct {
	Changed  time.Time `json:"changed,omitzero"`
	Made     time.Time `json:"made,omitzero"`
	Cause    Cause     `json:"cause,omitempty"`
	Moved    int       `json:"moved"`
	Handoffs int       `json:"handoffs"`
}

// Recent keeps the summaries of the last allocations, at most its size,
// newest first. It reads no clock: the times come with each allocation.
type Recent struct {
	size int
	list []RecentAllocation
}

// NewRecent returns a history that keeps the last size allocations (at
// least one).
func NewRecent(size int) *Recent { return &Recent{size: max(size, 1)} }

// Add records r as the newest allocation, forgetting the oldest past the
// size, and returns the history, newest first, which later calls do not
// modify: it can be published with the allocation.
func (h *Recent) Add(r RecentAllocation) []RecentAllocation {
	n := min(len(h.list)+1, h.size)
	list := make([]RecentAllocation, n)
	list[0] = r
	copy(list[1:], h.list)
	h.list = list
	return list
}
