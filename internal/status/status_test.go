package status_test

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"

	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
	"github.com/embedded-ta/embedded-ta/internal/status"
)

func testDocument(t *testing.T) (status.View, *shares.Allocation) {
	t.Helper()
	view := status.View{
		Identity: "g-1", Group: "g", Namespace: "ns", Leader: "g-0",
		Members: []status.MemberView{
			{Identity: "g-0", Endpoint: "10.0.0.1:8080", Node: "n-0", LeaseAge: "1s"},
			{Identity: "g-1", Endpoint: "10.0.0.2:8080", LeaseAge: "2s"},
		},
	}
	target := func(job, addr, member string, hash uint64) shares.Placed {
		return sharestest.Target(job, labels.FromStrings("__address__", addr, "__meta_x", "<y>"), member, hash)
	}
	a, err := sharestest.New(1, "g-0", []string{"g-0", "g-1", "g-2"},
		map[string]*config.ScrapeConfig{"a/b": {JobName: "a/b"}, "c": {JobName: "c"}},
		[]shares.Placed{target("a/b", "10.0.0.1:80", "g-0", 1), target("a/b", "10.0.0.2:80", "g-1", 2),
			target("c", "10.0.0.3:80", "g-1", 3), target("c", "10.0.0.4:80", "", 4)})
	require.NoError(t, err)
	a.Changed, a.Cause, a.Moved = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), shares.CauseMembers, 3
	a.Series = map[string]int64{"g-0": 1200, "g-1": 345}
	a.Recent = []shares.RecentAllocation{
		{Changed: a.Changed, Made: a.Changed.Add(25 * time.Millisecond), Cause: a.Cause, Moved: a.Moved},
		{Changed: a.Changed.Add(-time.Minute), Cause: shares.CauseHandoff, Moved: 1, Handoffs: 2},
	}
	return view, a
}

// The page shows one row a member: its Lease as this member sees it, and its
// part of the allocation; a member the allocation has but no Lease was seen
// of says so; the unassigned targets have a row of their own. The last
// allocation says when it was made and how many targets it moved.
func TestPageShowsOneRowAMember(t *testing.T) {
	view, a := testDocument(t)
	rec := httptest.NewRecorder()
	status.WritePage(rec, status.NewDocument(view, a))
	body := rec.Body.String()
	assert.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
	for _, row := range []string{
		"<tr><td>g-0</td><td>10.0.0.1:8080</td><td>n-0</td><td>1s</td><td>1</td><td>1</td><td>1200</td></tr>",
		"<tr><td>g-1</td><td>10.0.0.2:8080</td><td></td><td>2s</td><td>2</td><td>2</td><td>345</td></tr>",
		"<tr><td>g-2</td><td></td><td></td><td>(no Lease seen)</td><td>0</td><td>0</td><td>0</td></tr>",
		"<tr><td>(unassigned)</td><td></td><td></td><td></td><td>0</td><td>1</td><td></td></tr>",
		`<a href="/jobs/a%2Fb/targets">`,
		`Made by g-0 in epoch 1 after a change of members that arrived at <time datetime="2026-05-01T12:00:00Z">2026-05-01T12:00:00Z</time>`,
		"it changed the member of 3 targets.",
		`<rect class="bar leader" x="220" y="2" width="160" height="16"/>`,
		`<rect class="bar" x="220" y="2" width="320" height="16"/>`,
		"<h2>Recent allocations</h2>",
		`<tr><td><time datetime="2026-05-01T12:00:00.000Z">2026-05-01T12:00:00.000Z</time></td><td><time datetime="2026-05-01T12:00:00.025Z">2026-05-01T12:00:00.025Z</time></td><td>members</td><td>3</td><td>0</td></tr>`,
		`<tr><td><time datetime="2026-05-01T11:59:00.000Z">2026-05-01T11:59:00.000Z</time></td><td></td><td>handoff</td><td>1</td><td>2</td></tr>`,
	} {
		assert.Contains(t, body, row)
	}
	assert.Equal(t, 1, strings.Count(body, "<h2>Members</h2>"), "one table of members")

	a.Pending = true
	rec = httptest.NewRecorder()
	status.WritePage(rec, status.NewDocument(view, a))
	assert.Contains(t, rec.Body.String(), "It is pending: the jobs are not all known yet")

	view, a = testDocument(t)
	a.OverLimit = 1 // the target no member may take is over max_targets_per_collector
	rec = httptest.NewRecorder()
	status.WritePage(rec, status.NewDocument(view, a))
	assert.Contains(t, rec.Body.String(), "(unassigned: 1 over max_targets_per_collector or max_series_per_collector)")
}

// A follower has no allocation: its page names the leader and where its page
// is, and still draws every member it sees with its Lease age.
func TestFollowerPage(t *testing.T) {
	view, _ := testDocument(t)
	view.LeaderEndpoint = "10.0.0.1:8080"
	rec := httptest.NewRecorder()
	status.WritePage(rec, status.NewDocument(view, nil))
	require.Equal(t, 200, rec.Code)
	doc, err := html.Parse(rec.Body)
	require.NoError(t, err)

	follower := byID(doc, "follower")
	require.NotNil(t, follower, "the page says it is a follower's")
	assert.Contains(t, text(follower), "the leader, g-0, serves it and its recent allocations on its status page at 10.0.0.1:8080")
	assert.Nil(t, byID(doc, "last-allocation"), "a follower has no allocation to show")
	assert.Nil(t, byID(doc, "recent-allocations"), "nor recent allocations")

	var bars []string
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "g" && strings.HasPrefix(attr(n, "class"), "member") {
			bars = append(bars, text(n))
		}
	})
	require.Len(t, bars, 2, "one line a member")
	assert.Contains(t, bars[0], "g-0 (leader)")
	assert.Contains(t, bars[0], "Lease age 1s")
	assert.Contains(t, bars[1], "Lease age 2s")
	assert.NotContains(t, rec.Body.String(), "<rect", "no target counts without an allocation")
}

func walk(n *html.Node, f func(*html.Node)) {
	f(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func byID(doc *html.Node, id string) (found *html.Node) {
	walk(doc, func(n *html.Node) {
		if found == nil && n.Type == html.ElementNode && attr(n, "id") == id {
			found = n
		}
	})
	return found
}

func attr(n *html.Node, name string) string {
	for _, a := range n.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

func text(n *html.Node) string {
	var b strings.Builder
	walk(n, func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
	})
	return b.String()
}

// The targets page lists each target with its member and escaped labels.
func TestTargetsPage(t *testing.T) {
	view, a := testDocument(t)
	rec := httptest.NewRecorder()
	status.WriteTargetsPage(rec, view, a)
	body := rec.Body.String()
	assert.Contains(t, body, `<code>__meta_x="&lt;y&gt;"</code>`)
	assert.Contains(t, body, "<td>c</td><td>10.0.0.4:80</td><td><i>unassigned</i></td>")
	assert.Equal(t, 4, strings.Count(body, "<tr><td>"), "one row a target")
}

// /status is the view with the allocation's summary beside it, in the
// words of the page.
func TestDocumentJSON(t *testing.T) {
	view, a := testDocument(t)
	b, err := json.Marshal(status.NewDocument(view, a))
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b, &doc))
	assert.Equal(t, "g-0", doc["leader"])
	alloc := doc["allocation"].(map[string]any)
	assert.Equal(t, 4.0, alloc["targets"])
	assert.Equal(t, 1.0, alloc["unassigned"])
	assert.Equal(t, "2026-05-01T12:00:00Z", alloc["changed"])
	assert.Equal(t, "members", alloc["cause"])
	assert.Equal(t, 3.0, alloc["moved"])
	assert.Equal(t, 0.0, alloc["over_limit"])
	assert.Equal(t, map[string]any{"identity": "g-1", "job_count": 2.0, "target_count": 2.0, "series": 345.0}, alloc["members"].([]any)[1])
	assert.Equal(t, []any{
		map[string]any{"changed": "2026-05-01T12:00:00Z", "made": "2026-05-01T12:00:00.025Z", "cause": "members", "moved": 3.0, "handoffs": 0.0},
		map[string]any{"changed": "2026-05-01T11:59:00Z", "cause": "handoff", "moved": 1.0, "handoffs": 2.0},
	}, alloc["recent"], "the last allocations, newest first, in the words of the last one")

	b, err = json.Marshal(status.NewDocument(view, nil))
	require.NoError(t, err)
	assert.NotContains(t, string(b), `"allocation"`, "a follower has no allocation to summarise")
}

// A member that cannot read the Lease relays to the member that says it
// leads and whose own Lease is current, of the latest epoch; nobody else's
// idea of who leads counts.
func TestLeaderAmong(t *testing.T) {
	leads := func(id string, epoch int, joined bool) status.View {
		return status.View{Identity: id, Group: "g", Endpoint: id + ":8080", Leader: id, IsLeader: true, Epoch: epoch, Joined: joined}
	}
	follows := func(id, leader string, epoch int) status.View {
		return status.View{Identity: id, Group: "g", Endpoint: id + ":8080", Leader: leader, LeaderEndpoint: leader + ":8080", Epoch: epoch, Joined: true}
	}
	tests := []struct {
		name  string
		views []status.View
		want  string // "" for none
	}{
		{"nobody answered", nil, ""},
		{"followers only, naming a leader", []status.View{follows("b", "c", 4), follows("d", "c", 4)}, ""},
		{"the leader", []status.View{follows("b", "c", 4), leads("c", 4, true)}, "c"},
		{"a leader cut off too", []status.View{leads("c", 4, false)}, ""},
		{"a deposed leader that has not noticed yet", []status.View{leads("c", 4, true), leads("d", 5, true)}, "d"},
		{"another group's leader", []status.View{{Identity: "x", Group: "h", Endpoint: "x:8080", IsLeader: true, Joined: true, Epoch: 9}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := status.LeaderAmong("g", tt.views)
			assert.Equal(t, tt.want != "", ok)
			assert.Equal(t, tt.want, got.Identity)
		})
	}
}
