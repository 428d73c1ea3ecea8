package status_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
	"github.com/embedded-ta/embedded-ta/internal/status"
)

// chromiumEnv names the Chromium that make test installs (bin/chromium).
// With it set, a Chromium that does not start fails the test; without it
// (a plain go test), the test looks for chromium on the PATH and skips
// when there is none.
const chromiumEnv = "EMBEDDED_TA_CHROMIUM"

func chromium(t *testing.T) string {
	t.Helper()
	if path := os.Getenv(chromiumEnv); path != "" {
		_, err := exec.LookPath(path)
		require.NoError(t, err, "%s=%s: make test installs it (make chromium)", chromiumEnv, path)
		return path
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skipf("no chromium on the PATH and %s unset: make test runs this test with Debian's chromium", chromiumEnv)
	}
	return path
}

// A group of three members in the middle of a term: the leader's page as a
// browser draws it.
func leaderDocument(t *testing.T) status.Document {
	t.Helper()
	now := time.Now()
	member := func(id, ip, age string) status.MemberView {
		return status.MemberView{Identity: id, Endpoint: ip + ":8080", Node: "node-" + id[len(id)-1:], LeaseAge: age, LeaseDuration: "15s"}
	}
	view := status.View{
		Identity: "otcta-collector-0", Group: "otcta-collector", Namespace: "observability",
		Endpoint: "10.0.0.11:8080", Leader: "otcta-collector-0", LeaderEndpoint: "10.0.0.11:8080",
		IsLeader: true, Joined: true, Epoch: 3,
		LeaderLease: status.LeaseView{Name: "otcta-collector", AcquireTime: now.Add(-time.Hour), RenewTime: now.Add(-time.Second), LeaseDuration: "15s"},
		Members: []status.MemberView{
			member("otcta-collector-0", "10.0.0.11", "1.1s"),
			member("otcta-collector-1", "10.0.0.12", "0.4s"),
			member("otcta-collector-2", "10.0.0.13", "1.9s"),
		},
	}
	members := []string{"otcta-collector-0", "otcta-collector-1", "otcta-collector-2"}
	var targets []shares.Placed
	for i := range 40 {
		job := []string{"kubernetes-pods", "node-exporter"}[i%2]
		addr := fmt.Sprintf("10.1.%d.%d:9100", i/250, i%250)
		targets = append(targets, sharestest.Target(job, labels.FromStrings("__address__", addr), members[i%5%3], uint64(i+1)))
	}
	a, err := sharestest.New(3, "otcta-collector-0", members, map[string]*config.ScrapeConfig{
		"kubernetes-pods": {JobName: "kubernetes-pods"}, "node-exporter": {JobName: "node-exporter"},
	}, targets)
	require.NoError(t, err)
	a.Changed, a.Cause, a.Moved = now.Add(-4*time.Second), shares.CauseMembers, 13
	a.Recent = []shares.RecentAllocation{
		{Changed: a.Changed, Made: a.Changed.Add(30 * time.Millisecond), Cause: a.Cause, Moved: a.Moved},
		{Changed: now.Add(-time.Minute), Made: now.Add(-time.Minute + 20*time.Millisecond), Cause: shares.CauseTargets, Moved: 2, Handoffs: 1},
	}
	return status.NewDocument(view, a)
}

// The status page in a real headless Chromium: it renders, draws a bar with
// the identity of every member, marks the leader, lists the recent
// allocations, and logs no error.
func TestPageInChromium(t *testing.T) {
	path := chromium(t)
	doc := leaderDocument(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r) // as the allocator API answers any other path
			return
		}
		status.WritePage(w, doc)
	}))
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.Flag("disable-dev-shm-usage", true))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx, cancel = chromedp.NewExecAllocator(ctx, opts...)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()

	var mu sync.Mutex
	var problems []string
	require.NoError(t, chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				problems = append(problems, fmt.Sprintf("console %s: %v", ev.Type, ev.Args))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, fmt.Sprintf("exception: %s %v", ev.ExceptionDetails.Text, ev.ExceptionDetails.Exception))
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				problems = append(problems, fmt.Sprintf("log %s (%s): %s %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
			}
		}
	}), "start %s", path)

	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("svg g.member")),
	))
	title := run(t, ctx, chromedp.Title())
	bars := run(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("svg g.member")).map(g => g.querySelector(":scope > text").textContent)`))
	leader := run(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("svg g.member.leader")).map(g => g.textContent)`))
	// Laid out, a bar is as long as its member's targets: the browser drew it.
	widths := run(t, ctx, chromedp.Evaluate[[]float64](`Array.from(document.querySelectorAll("svg rect.bar")).map(r => r.getBBox().width)`))
	rows := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("table tr").length`))
	recent := run(t, ctx, chromedp.Evaluate[[][]string](`Array.from(document.querySelectorAll("#recent-allocations tr")).map(tr => Array.from(tr.cells).map(c => c.textContent))`))
	// Let late events (a failed resource, an error) arrive.
	require.NoError(t, chromedp.Do(ctx, chromedp.Sleep(200*time.Millisecond)))

	assert.Equal(t, "embedded-ta: otcta-collector", title)
	assert.Equal(t, []string{"otcta-collector-0 (leader)", "otcta-collector-1", "otcta-collector-2"}, bars, "one bar a member, named by its identity")
	require.Len(t, leader, 1, "one leader")
	assert.Contains(t, leader[0], "otcta-collector-0 (leader)")
	require.Len(t, widths, 3)
	summary := doc.Allocation.Members
	most := max(summary[0].Targets, summary[1].Targets, summary[2].Targets)
	for i, w := range widths {
		assert.InDelta(t, float64(summary[i].Targets*320/most), w, 1, "the bar of %s", summary[i].Identity)
	}
	assert.Greater(t, rows, 3, "the members' table is there for a reader without SVG")
	require.Len(t, recent, 3, "the recent allocations' table: a header and a row an allocation")
	assert.Equal(t, []string{"Change arrived", "Made", "Cause", "Targets moved", "Hand-offs under way"}, recent[0])
	assert.Equal(t, []string{"members", "13", "0"}, recent[1][2:], "the last allocation first")
	assert.Equal(t, []string{"targets", "2", "1"}, recent[2][2:])
	mu.Lock()
	defer mu.Unlock()
	assert.Empty(t, problems, "the page logs no error or warning:\n%s", strings.Join(problems, "\n"))
}

func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}
