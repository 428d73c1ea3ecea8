package targetallocatorextension

import (
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/leader"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

func element(pairs ...string) httpsd.Element {
	ls := labels.FromStrings(pairs...)
	return httpsd.EncodeSorted(slices.Collect(func(yield func(labels.Label) bool) {
		ls.Range(func(l labels.Label) { yield(l) })
	}))
}

// The book reports the last series of the targets of the member's share,
// by the key the leader computes from their discovered labels, and
// forgets a target that left the share.
func TestSeriesBook(t *testing.T) {
	a, b := element("__address__", "10.0.0.1:80", "__meta_pod", "a"), element("__address__", "10.0.0.2:80", "__meta_pod", "b")
	keyA, keyB := report.TargetKey(a.Labels()), report.TargetKey(b.Labels())
	both := Shares{"pods": allocatorapi.OwnShareOf(shares.NewShare([]shares.Target{{Hash: 1, Element: a}, {Hash: 2, Element: b}}).Answer())}
	groups, err := both["pods"].Targets()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{keyA, keyB}, shareKeys(groups))

	e := &allocatorExtension{}
	e.Measured("pods", keyA, 10)
	e.Measured("pods", keyA, 12)
	e.Measured("pods", keyB, 3)
	got, changed := e.measured.take(both)
	assert.True(t, changed)
	assert.Equal(t, map[string]map[string]int64{"pods": {keyA: 12, keyB: 3}}, got)
	_, changed = e.measured.take(both)
	assert.False(t, changed, "nothing new")

	onlyA := Shares{"pods": allocatorapi.OwnShareOf(shares.NewShare([]shares.Target{{Hash: 1, Element: a}}).Answer())}
	got, changed = e.measured.take(onlyA)
	assert.True(t, changed, "a target left the share")
	assert.Equal(t, map[string]map[string]int64{"pods": {keyA: 12}}, got)
}

// The leader keeps each member's last report and hands the term all of
// them, the latest delivery only; reports of members that left are
// dropped.
func TestSeriesReports(t *testing.T) {
	e := &allocatorExtension{}
	e.takeSeries(report.Report{Member: "a", Series: map[string]map[string]int64{"j": {"00000000000000ff": 1}}})
	term := e.seriesReports.startTerm()
	assert.Equal(t, leader.Series{"a": {"j": {"00000000000000ff": 1}}}, <-term, "the reports kept before the term")
	e.takeSeries(report.Report{Member: "b"})
	e.takeSeries(report.Report{Member: "a", Series: map[string]map[string]int64{"j": {"00000000000000ff": 2}}})
	assert.Equal(t, leader.Series{"a": {"j": {"00000000000000ff": 2}}, "b": {}}, <-term)
	select {
	case s := <-term:
		t.Fatalf("a second delivery %v", s)
	default:
	}
	e.seriesReports.forget(func(m string) bool { return m == "b" })
	e.takeSeries(report.Report{Member: "b"})
	assert.Equal(t, leader.Series{"b": {}}, <-term)
	e.seriesReports.endTerm()
}
