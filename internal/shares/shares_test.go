package shares_test

import (
	"testing"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
)

// Two jobs: "a" with two targets of m-0 and one of m-1, "b" with one target
// no member may take; m-2 has none.
func testAllocation(t *testing.T) *shares.Allocation {
	t.Helper()
	target := func(job, addr, member string, hash uint64) shares.Placed {
		return sharestest.Target(job, labels.FromStrings("__address__", addr), member, hash)
	}
	a, err := sharestest.New(2, "m-0", []string{"m-2", "m-1", "m-0"},
		map[string]*config.ScrapeConfig{"a": {JobName: "a"}, "b": {JobName: "b"}, "empty": {JobName: "empty"}},
		[]shares.Placed{target("a", "10.0.0.1:80", "m-0", 1), target("a", "10.0.0.2:80", "m-0", 2),
			target("a", "10.0.0.3:80", "m-1", 3), target("b", "10.0.0.4:80", "", 4)})
	require.NoError(t, err)
	return a
}

// A share that did not change between two allocations is shared, not
// encoded again; a changed one has a new ETag.
func TestUnchangedSharesAreEncodedOnce(t *testing.T) {
	a := testAllocation(t)
	before := a.Share("a", "m-1").Answer()
	changed := shares.NewShare([]shares.Target{sharestest.Target("a", labels.FromStrings("__address__", "10.0.0.9:80"), "m-0", 9).Target})
	configs, err := shares.NewScrapeConfigs(nil)
	require.NoError(t, err)
	b := shares.New(3, "m-0", a.Members, configs, map[string]*shares.Job{
		"a": a.Job("a").With(map[string]*shares.Share{"m-0": changed}),
		"b": a.Job("b"),
	})

	assert.Same(t, a.Share("a", "m-1"), b.Share("a", "m-1"), "the unchanged share is not encoded again")
	assert.Equal(t, before, b.Share("a", "m-1").Answer())
	etagA, _ := a.Share("a", "m-0").ETag()
	etagB, _ := b.Share("a", "m-0").ETag()
	assert.NotEqual(t, etagA, etagB)
	assert.Len(t, b.Share("a", "m-0").Targets(), 1)
	assert.Equal(t, 2, b.Summary().Jobs[0].Targets)
}

// The summary counts each member's jobs and targets once, in member order,
// members without targets included, and the unassigned apart.
func TestSummary(t *testing.T) {
	a := testAllocation(t)
	assert.Equal(t, shares.Summary{
		Members: []shares.MemberCount{{Identity: "m-0", Jobs: 1, Targets: 2}, {Identity: "m-1", Jobs: 1, Targets: 1}, {Identity: "m-2"}},
		Jobs:    []shares.JobCount{{Name: "a", Targets: 3}, {Name: "b", Targets: 1}, {Name: "empty"}},
		Targets: 4, Unassigned: 1,
	}, a.Summary())
}

// A member, job or share that does not exist answers an empty share, not nil.
func TestMissingSharesAreEmpty(t *testing.T) {
	a := testAllocation(t)
	for _, s := range []*shares.Share{a.Share("a", "m-2"), a.Share("nope", "m-0"), a.Share("empty", "m-0")} {
		assert.Equal(t, "[]\n", string(s.Answer().Body))
		assert.Empty(t, s.Targets())
	}
	assert.Nil(t, a.Job("nope"))
	assert.True(t, a.IsMember("m-2"))
	assert.False(t, a.IsMember(""))
	assert.Equal(t, []string{"a", "b", "empty"}, a.Jobs())
	assert.Len(t, a.Targets("a"), 3)
}

// Secret and redacted scrape configs never share an ETag, even when their
// bodies are equal.
func TestSecretAndRedactedTagsDiffer(t *testing.T) {
	configs, err := shares.NewScrapeConfigs(nil)
	require.NoError(t, err)
	a := shares.New(1, "m-0", []string{"m-0"}, configs, nil)
	assert.Equal(t, a.ScrapeConfigs(false).Body, a.ScrapeConfigs(true).Body)
	assert.NotEqual(t, a.ScrapeConfigs(false).ETag, a.ScrapeConfigs(true).ETag)
}
