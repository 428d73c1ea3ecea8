package targetallocatorextension

import (
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// A leaving member counts as its own the targets it exports: not those it
// warms, nor those it releases once their cut-over (and cutoverSettle) has
// passed; it wakes when the next one passes. What it holds for a new
// leader are the targets of its share: neither warming nor releasing ones.
func TestExportingAndHeld(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	soon, past := now.Add(time.Second), now.Add(-2*time.Second)
	elements := []httpsd.Element{
		element("__address__", "10.0.0.1:80"),
		element("__address__", "10.0.0.2:80", shares.CutoverLabel, shares.FormatCutover(past)), // arriving
		element("__address__", "10.0.0.3:80", shares.WarmingLabel, "0000000000000003"),
		element("__address__", "10.0.0.4:80", shares.ReleasingLabel, "0000000000000004", shares.CutoverLabel, shares.FormatCutover(soon)),
		element("__address__", "10.0.0.5:80", shares.ReleasingLabel, "0000000000000005", shares.CutoverLabel, shares.FormatCutover(past)),
		element("__address__", "10.0.0.6:80", shares.ReleasingLabel, "0000000000000006"), // no cut-over: one interval more
	}
	var targets []shares.Target
	for i, e := range elements {
		targets = append(targets, shares.Target{Hash: uint64(i + 1), Element: e})
	}
	own := Shares{"pods": allocatorapi.OwnShareOf(shares.NewShare(targets).Answer())}

	n, next, err := exporting(own, now)
	require.NoError(t, err)
	assert.Equal(t, 4, n, "its own, the arriving one, the one releasing until a cut-over to come, the one releasing without one")
	assert.Equal(t, soon.Add(cutoverSettle), next)
	n, next, err = exporting(own, soon.Add(cutoverSettle))
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	assert.True(t, next.IsZero())

	keys := func(es ...httpsd.Element) []string {
		var out []string
		for _, e := range es {
			ls := map[string]string{}
			e.Labels().Range(func(l labels.Label) { ls[l.Name] = l.Value })
			shares.TakeMarks(ls)
			out = append(out, report.TargetKey(labels.FromMap(ls)))
		}
		return out
	}
	assert.ElementsMatch(t, keys(elements[0], elements[1]), held(own)["pods"])
}

// A warming target's first scrape goes to the leader with when it began
// (warm_at, Unix milliseconds); one seen while a report is under way goes
// with the next report rather than being taken for sent; one reported is
// not reported again within resendAfter.
func TestReporterWarm(t *testing.T) {
	e := &allocatorExtension{reporter: newReporter()}
	r := e.reporter
	e.Fenced(20*time.Second, false)
	at := time.UnixMilli(1_795_981_234_500)
	e.Warmed("pods", "00000000000000aa", at)
	e.Warmed("pods", "00000000000000aa", at.Add(2*time.Second)) // not reported yet: the first counts
	rep, send, newTerm := r.next("m", "leader/1", true, false)
	require.True(t, send)
	require.True(t, newTerm)
	assert.Equal(t, map[string][]string{"pods": {"00000000000000aa"}}, rep.Warm)
	assert.Equal(t, map[string]int64{"00000000000000aa": 1_795_981_234_500}, rep.WarmAt)
	require.NoError(t, rep.Validate())

	e.Warmed("pods", "00000000000000bb", at.Add(time.Second)) // while rep is sent
	r.sent(rep, "leader/1", newTerm, time.Now())
	rep, send, newTerm = r.next("m", "leader/1", true, false)
	require.True(t, send, "the scrape seen while the last report was sent")
	assert.False(t, newTerm)
	assert.Equal(t, map[string][]string{"pods": {"00000000000000bb"}}, rep.Warm)
	assert.Equal(t, map[string]int64{"00000000000000bb": 1_795_981_235_500}, rep.WarmAt)
	r.sent(rep, "leader/1", newTerm, time.Now())

	e.Warmed("pods", "00000000000000aa", at.Add(4*time.Second))
	rep, send, _ = r.next("m", "leader/1", true, false)
	assert.False(t, send, "reported again within resendAfter: %v", rep.Warm)
	assert.Empty(t, rep.Warm)
}
