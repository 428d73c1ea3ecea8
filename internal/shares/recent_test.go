package shares_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// The history keeps the last allocations, newest first, and forgets the
// oldest past its size; a history once returned does not change.
func TestRecentKeepsTheLastNewestFirst(t *testing.T) {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(i int) shares.RecentAllocation {
		changed := start.Add(time.Duration(i) * time.Second)
		return shares.RecentAllocation{Changed: changed, Made: changed.Add(time.Millisecond), Cause: shares.CauseTargets, Moved: i, Handoffs: i % 2}
	}
	h := shares.NewRecent(3)
	first := h.Add(at(1))
	assert.Equal(t, []shares.RecentAllocation{at(1)}, first)
	var list []shares.RecentAllocation
	for i := 2; i <= 5; i++ {
		list = h.Add(at(i))
	}
	assert.Equal(t, []shares.RecentAllocation{at(5), at(4), at(3)}, list, "the last 3, newest first")
	assert.Equal(t, []shares.RecentAllocation{at(1)}, first, "a published history does not change")

	h = shares.NewRecent(0)
	h.Add(at(1))
	require.Equal(t, []shares.RecentAllocation{at(2)}, h.Add(at(2)), "a history keeps at least the last allocation")
}
