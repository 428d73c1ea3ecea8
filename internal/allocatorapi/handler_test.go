package allocatorapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
	"github.com/embedded-ta/embedded-ta/internal/status"
)

// source is a member as the handler sees it.
type source struct {
	mu         sync.Mutex
	identity   string
	allocation *shares.Allocation
	leader     string
	epoch      int
	joined     bool
	members    []string // the members whose Leases it sees
}

func (s *source) Allocation() *shares.Allocation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allocation
}
func (s *source) View() status.View {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := status.View{Identity: s.identity, Group: "g", Leader: "c-0", LeaderEndpoint: s.leader, Epoch: s.epoch, Joined: s.joined}
	for _, m := range s.members {
		v.Members = append(v.Members, status.MemberView{Identity: m})
	}
	if s.leader != "" && s.identity == "c-0" {
		v.Leader = "elsewhere" // a test's leader is another handler
	}
	return v
}

// Job names the stock client must be able to round-trip.
var oddJobs = []string{"plain", "with/slash", "with+plus", "with space", "with%percent", "serviceMonitor/ns/name/0"}

// testAllocation is an allocation of three targets in each of the odd jobs,
// one of c-0's and two of c-1's, and the extra targets.
func testAllocation(t testing.TB, extra ...shares.Placed) *shares.Allocation {
	t.Helper()
	configs := map[string]*config.ScrapeConfig{}
	targets := extra
	for i, job := range oddJobs {
		sc := &config.ScrapeConfig{JobName: job, MetricsPath: "/metrics", Scheme: "http"}
		if job == "plain" {
			sc.HTTPClientConfig.BasicAuth = &commonconfig.BasicAuth{Username: "user", Password: "hunter2"}
		}
		configs[job] = sc
		for k, member := range []string{"c-0", "c-1", "c-1"} {
			targets = append(targets, sharestest.Target(job,
				labels.FromStrings("__address__", "127.0.0.1:"+string(rune('0'+i))+string(rune('0'+k)), "__meta_x", "y"),
				member, 0))
		}
	}
	a, err := sharestest.New(3, "c-0", []string{"c-1", "c-0", "c-2"}, configs, targets)
	require.NoError(t, err)
	return a
}

func get(t *testing.T, h http.Handler, target string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func leaderHandler(t *testing.T) *Handler {
	return NewHandler(&source{identity: "c-0", allocation: testAllocation(t)}, http.DefaultClient, "http", zap.NewNop())
}

func TestLeaderAnswersTheTAShapes(t *testing.T) {
	h := leaderHandler(t)

	resp, body := get(t, h, "/scrape_configs")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var configs map[string]map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &configs))
	assert.Len(t, configs, len(oddJobs))
	assert.Equal(t, "with+plus", configs["with+plus"]["job_name"])
	assert.Equal(t, "<secret>", configs["plain"]["basic_auth"].(map[string]any)["password"], "plain HTTP must not see secrets")
	assert.NotContains(t, body, "hunter2")

	_, body = get(t, h, "/jobs")
	var jobs map[string]map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &jobs))
	assert.Equal(t, "/jobs/with%2Fslash/targets", jobs["with/slash"]["_link"])

	for _, job := range oddJobs {
		t.Run(job, func(t *testing.T) {
			// Exactly as the stock client builds the URL.
			resp, body := get(t, h, "/jobs/"+url.QueryEscape(job)+"/targets?collector_id=c-1")
			require.Equal(t, http.StatusOK, resp.StatusCode, body)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var groups []httpsd.TargetGroup
			require.NoError(t, json.Unmarshal([]byte(body), &groups))
			require.Len(t, groups, 2)
			for _, g := range groups {
				assert.Len(t, g.Targets, 1)
				assert.Equal(t, g.Targets[0], g.Labels["__address__"])
				assert.Equal(t, "y", g.Labels["__meta_x"])
			}
		})
	}

	_, body = get(t, h, "/jobs/plain/targets?collector_id=c-2")
	assert.JSONEq(t, "[]", body, "a member without targets gets an empty list")

	_, body = get(t, h, "/jobs/plain/targets")
	var per map[string]memberTargets
	require.NoError(t, json.Unmarshal([]byte(body), &per))
	assert.Len(t, per, 3)
	assert.Len(t, per["c-1"].Targets, 2)
	assert.Equal(t, "/jobs/plain/targets?collector_id=c-1", per["c-1"].Link)
}

// What is no share gets the TA's answer, 200 and an empty list, never a
// 404 (Prometheus HTTP SD would keep the targets it had), with a header
// that says why; a member still gets its share.
func TestUnknownJobsAndCollectorsGetAnEmptyList(t *testing.T) {
	h := leaderHandler(t)
	tests := []struct {
		name, target    string
		noJob, noMember bool
		targets         int
	}{
		{"unknown job", "/jobs/nope/targets?collector_id=c-1", true, false, 0},
		{"not a member", "/jobs/plain/targets?collector_id=otcta2-0", false, true, 0},
		{"neither", "/jobs/nope/targets?collector_id=otcta2-0", true, true, 0},
		{"a member's share", "/jobs/plain/targets?collector_id=c-1", false, false, 2},
		{"a member without targets", "/jobs/plain/targets?collector_id=c-2", false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, h, tt.target)
			require.Equal(t, http.StatusOK, resp.StatusCode, body)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			var groups []httpsd.TargetGroup
			require.NoError(t, json.Unmarshal([]byte(body), &groups), body)
			assert.NotNil(t, groups, "a list, not null")
			assert.Len(t, groups, tt.targets)
			assert.Equal(t, tt.noJob, resp.Header.Get(JobHeader) == "false", JobHeader)
			assert.Equal(t, tt.noMember, resp.Header.Get(MemberHeader) == "false", MemberHeader)
			assert.Equal(t, "3", resp.Header.Get(EpochHeader), "an answer of the allocation")
		})
	}

	// Without collector_id, an unknown job has every member, with no targets.
	resp, body := get(t, h, "/jobs/nope/targets")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "false", resp.Header.Get(JobHeader))
	var per map[string]memberTargets
	require.NoError(t, json.Unmarshal([]byte(body), &per))
	assert.Len(t, per, 3)
	for m, mt := range per {
		assert.NotNil(t, mt.Targets, m)
		assert.Empty(t, mt.Targets, m)
	}
}

func TestMalformedRequests(t *testing.T) {
	h := leaderHandler(t)
	tests := []struct {
		name, target string
		status       int
	}{
		{"empty collector", "/jobs/plain/targets?collector_id=", http.StatusBadRequest},
		{"two collectors", "/jobs/plain/targets?collector_id=c-0&collector_id=c-1", http.StatusBadRequest},
		{"huge query", "/jobs/plain/targets?collector_id=" + strings.Repeat("a", 5000), http.StatusRequestURITooLong},
		{"huge path", "/jobs/" + strings.Repeat("a", 5000) + "/targets", http.StatusRequestURITooLong},
		{"no job", "/jobs//targets", http.StatusNotFound},
		{"unknown route", "/jobs/plain", http.StatusNotFound},
		{"unknown route 2", "/nope", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := get(t, h, tt.target)
			assert.Equal(t, tt.status, resp.StatusCode, body)
			assert.NotEmpty(t, strings.TrimSpace(body), "an error says why")
		})
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/scrape_configs", nil))
	assert.Equal(t, http.StatusMethodNotAllowed, rec.Code)
}

// Bad escapes never reach a handler alive: over a real listener they get 400.
func TestBadEscapesOverTheWire(t *testing.T) {
	srv := httptest.NewServer(leaderHandler(t))
	defer srv.Close()
	for _, target := range []string{"/jobs/bad%zzjob/targets?collector_id=c-0", "/jobs/plain/targets?collector_id=%zz"} {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		require.NoError(t, err)
		_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", target)
		require.NoError(t, err)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, target)
		resp.Body.Close()
		conn.Close()
	}
}

func TestStatusPage(t *testing.T) {
	h := leaderHandler(t)
	resp, body := get(t, h, "/")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	assert.Contains(t, body, "<th>Member (collector_id)</th><th>Endpoint</th><th>Node</th><th>Lease age</th><th>Job Count</th><th>Target Count</th>")
	// c-1 has 2 targets in each of the 6 jobs, c-2 none; the test's view
	// holds no member Leases.
	assert.Contains(t, body, "<tr><td>c-1</td><td></td><td></td><td>(no Lease seen)</td><td>6</td><td>12</td><td>0</td></tr>")
	assert.Contains(t, body, "<tr><td>c-2</td><td></td><td></td><td>(no Lease seen)</td><td>0</td><td>0</td><td>0</td></tr>")
	assert.Contains(t, body, "with/slash")

	_, body = get(t, h, "/targets")
	assert.Contains(t, body, `<code>__meta_x="y"</code>`)
	assert.Contains(t, body, "<td>c-1</td>")
}

// A follower relays to the leader, keeps its own share, and serves it from
// that copy while no leader answers.
// A follower shows the leader's status page; when no leader answers, its
// own, with a 503: why, and the members whose Leases it sees.
func TestFollowerStatusPage(t *testing.T) {
	leader := httptest.NewServer(leaderHandler(t))
	defer leader.Close()
	src := &source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3, members: []string{"c-0", "c-1"}}
	h := NewHandler(src, leader.Client(), "http", zap.NewNop())
	resp, body := get(t, h, "/")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, `id="last-allocation"`, "the leader's page")

	leader.Close()
	resp, body = get(t, h, "/")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/html")
	assert.Contains(t, body, "the leader, c-0, serves it and its recent allocations on its status page at <code>"+src.leader+"</code>")
	assert.Contains(t, body, "This page is not the leader's: no leader answers")
	assert.Contains(t, body, "<text x=\"0\" y=\"15\">c-0 (leader)</text>")
	assert.Contains(t, body, "<text x=\"0\" y=\"15\">c-1</text>")
	assert.NotContains(t, body, `id="last-allocation"`)
}

func TestFollowerRelaysAndKeepsItsShare(t *testing.T) {
	leader := httptest.NewServer(leaderHandler(t))
	defer leader.Close()
	src := &source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}
	h := NewHandler(src, leader.Client(), "http", zap.NewNop())

	// Before any leader answered: an empty share, so startup is not blocked.
	down := &source{identity: "c-1"}
	fresh := NewHandler(down, leader.Client(), "http", zap.NewNop())
	resp, body := get(t, fresh, "/scrape_configs")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, "{}", body)
	_, body = get(t, fresh, "/jobs/plain/targets?collector_id=c-1")
	assert.JSONEq(t, "[]", body)

	own := "/jobs/" + url.QueryEscape("with space") + "/targets?collector_id=c-1"
	_, fromLeader := get(t, leaderHandler(t), own)
	for _, target := range []string{"/scrape_configs", own, "/jobs", "/jobs/plain/targets?collector_id=c-0"} {
		resp, body := get(t, h, target)
		assert.Equal(t, http.StatusOK, resp.StatusCode, target)
		_, direct := get(t, leaderHandler(t), target)
		assert.Equal(t, direct, body, "a follower answers %s as the leader does", target)
	}
	resp, body = get(t, h, "/jobs/nope/targets?collector_id=c-1")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the leader's answer about an unknown job is relayed")
	assert.JSONEq(t, "[]", body)
	assert.Equal(t, "false", resp.Header.Get(JobHeader))
	assert.Len(t, h.relay.copies, 2, "and kept as no copy: the scrape configs and the share of %q only", "with space")

	leader.Close() // the leader is gone
	resp, body = get(t, h, own)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	assert.Equal(t, fromLeader, body, "the own share comes from the last copy")
	resp, body = get(t, h, "/scrape_configs")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, "with/slash", "never {} once real data was served")
	resp, body = get(t, h, "/jobs/plain/targets?collector_id=c-0")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, body, "no leader answers")

	src.mu.Lock()
	src.leader = ""
	src.mu.Unlock()
	resp, body = get(t, h, "/jobs")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, body, "no leader")
}

// A leader whose term ends with nobody to ask (an API-server outage) goes on
// answering its own share from its last answers.
func TestLeaderKeepsItsShareAfterItsTerm(t *testing.T) {
	src := &source{identity: "c-1", allocation: testAllocation(t)}
	h := NewHandler(src, http.DefaultClient, "http", zap.NewNop())
	own := "/jobs/plain/targets?collector_id=c-1"
	_, configs := get(t, h, "/scrape_configs")
	_, share := get(t, h, own)

	src.mu.Lock()
	src.allocation = nil
	src.mu.Unlock()
	resp, body := get(t, h, "/scrape_configs")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, configs, body)
	resp, body = get(t, h, own)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	assert.Equal(t, share, body)
}

// A leader that does not know every job yet (Prometheus Operator
// resources to come) serves neither scrape configs nor shares from its
// allocation: its own from its copies, others' not at all.
func TestPendingLeaderServesNoShare(t *testing.T) {
	src := &source{identity: "c-0", allocation: testAllocation(t)}
	h := NewHandler(src, http.DefaultClient, "http", zap.NewNop())
	_, configs := get(t, h, "/scrape_configs") // the copy of a term before
	src.mu.Lock()
	src.allocation = testAllocation(t)
	src.allocation.Pending = true
	src.mu.Unlock()

	resp, body := get(t, h, "/scrape_configs")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, configs, body, "the copy, not the allocation's incomplete jobs")
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	resp, _ = get(t, h, "/jobs")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp, body = get(t, h, "/jobs/plain/targets?collector_id=c-0")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, "[]", body, "its own share, before it ever had one, is empty")
	resp, body = get(t, h, "/jobs/serviceMonitor%2Fns%2Fnew%2F0/targets?collector_id=c-1")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "a job it may not know yet is no 404")
	assert.Contains(t, body, "does not know every job yet")
}

// A job whose discovery has not reported is answered from copies: the
// leader's own share from its copy, others' with 503 (a follower relaying
// falls back to its copy), while the other jobs are answered.
func TestUnreportedJobServesNoShare(t *testing.T) {
	src := &source{identity: "c-1", allocation: testAllocation(t)}
	h := NewHandler(src, http.DefaultClient, "http", zap.NewNop())
	own := "/jobs/plain/targets?collector_id=c-1"
	_, before := get(t, h, own)

	a := testAllocation(t)
	a.Unreported = map[string]bool{"plain": true}
	src.mu.Lock()
	src.allocation = a
	src.mu.Unlock()
	resp, body := get(t, h, own)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	assert.Equal(t, before, body, "the copy, never the unreported job's empty share")
	resp, body = get(t, h, "/jobs/plain/targets?collector_id=c-0")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, body, `job "plain" has not reported`)
	resp, _ = get(t, h, "/jobs/plain/targets")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	resp, body = get(t, h, "/jobs/with%2Bplus/targets?collector_id=c-1")
	assert.Equal(t, http.StatusOK, resp.StatusCode, "reported jobs are answered")
	assert.Empty(t, resp.Header.Get(StaleHeader))
	assert.Contains(t, body, "127.0.0.1:")
}

// A follower never relays an answer of an older epoch than the Lease shows:
// a leader frozen past its lease, answering again, cannot overwrite its
// successor's assignment; the follower serves its copy instead.
func TestFollowerRejectsStaleEpochs(t *testing.T) {
	leader := httptest.NewServer(NewHandler(&source{identity: "c-0", allocation: testAllocation(t)}, http.DefaultClient, "http", zap.NewNop())) // epoch 3
	defer leader.Close()
	follower := &source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}
	h := NewHandler(follower, leader.Client(), "http", zap.NewNop())

	own := "/jobs/plain/targets?collector_id=c-1"
	resp, current := get(t, h, own)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "3", resp.Header.Get(EpochHeader))

	// The Lease moves on to epoch 4; the old leader still answers with 3.
	follower.mu.Lock()
	follower.epoch = 4
	follower.mu.Unlock()
	resp, body := get(t, h, own)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(StaleHeader), "the follower serves its copy")
	assert.Equal(t, current, body)
	resp, _ = get(t, h, "/jobs")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// A follower whose view of the Lease lags behind an answer it relayed never
// A follower relays only answers of the group, leader and epoch its view of
// the Lease names: not another group's, not a deposed leader's (even one
// that took the Lease again under the same identity: a new epoch), not one
// that names none; it serves its copy instead.
func TestFollowerAcceptsOnlyTheLeaseLeader(t *testing.T) {
	var mu sync.Mutex
	group, leaderID, epoch, body := "g", "c-0", "3", `[{"targets":["10.0.0.1:80"],"labels":{}}]`
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		for k, v := range map[string]string{GroupHeader: group, LeaderHeader: leaderID, EpochHeader: epoch} {
			if v != "" {
				w.Header().Set(k, v)
			}
		}
		_, _ = w.Write([]byte(body))
	}))
	defer leader.Close()
	h := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}, leader.Client(), "http", zap.NewNop())
	own := "/jobs/plain/targets?collector_id=c-1"
	resp, kept := get(t, h, own)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, resp.Header.Get(StaleHeader))
	require.Contains(t, kept, "10.0.0.1:80")

	for _, tc := range []struct{ name, group, leader, epoch string }{
		{"another group", "h", "c-0", "3"},
		{"a deposed leader", "g", "c-2", "2"},
		{"the same leader, an older epoch", "g", "c-0", "2"},
		{"the same identity, a new term the Lease does not show yet", "g", "c-0", "4"},
		{"no group", "", "c-0", "3"},
		{"no epoch", "g", "c-0", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			group, leaderID, epoch, body = tc.group, tc.leader, tc.epoch, `[{"targets":["10.0.0.9:80"],"labels":{}}]`
			mu.Unlock()
			resp, got := get(t, h, own)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "true", resp.Header.Get(StaleHeader))
			assert.Equal(t, kept, got, "the copy, not the refused answer")
		})
	}
}

// Two members that each believe the other leads never relay in a loop.
func TestNoRelayLoop(t *testing.T) {
	a := &source{identity: "c-0"}
	b := &source{identity: "c-1"}
	srvA := httptest.NewServer(NewHandler(a, http.DefaultClient, "http", zap.NewNop()))
	defer srvA.Close()
	srvB := httptest.NewServer(NewHandler(b, http.DefaultClient, "http", zap.NewNop()))
	defer srvB.Close()
	a.leader = strings.TrimPrefix(srvB.URL, "http://")
	b.leader = strings.TrimPrefix(srvA.URL, "http://")
	resp, err := http.Get(srvA.URL + "/jobs")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// Requests leave no goroutine behind: relayed, refused, timed out at the
// leader, or abandoned by their client.
func TestNoGoroutineLeftPerRequest(t *testing.T) {
	before := goleak.IgnoreCurrent()

	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	leader := httptest.NewServer(NewHandler(&source{identity: "c-0", allocation: testAllocation(t)}, http.DefaultClient, "http", zap.NewNop()))
	src := &source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}
	relay := &http.Client{Timeout: 200 * time.Millisecond}
	follower := httptest.NewServer(NewHandler(src, relay, "http", zap.NewNop()))

	client := &http.Client{Timeout: 2 * time.Second}
	for range 50 {
		for _, target := range []string{"/jobs/plain/targets?collector_id=c-1", "/scrape_configs", "/jobs", "/jobs/a/targets?collector_id=", "/no/route"} {
			resp, err := client.Get(follower.URL + target)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	// The leader hangs: the follower's relay times out and it answers from its copy.
	src.mu.Lock()
	src.leader = strings.TrimPrefix(slow.URL, "http://")
	src.mu.Unlock()
	for range 5 {
		resp, err := client.Get(follower.URL + "/jobs/plain/targets?collector_id=c-1")
		require.NoError(t, err)
		assert.Equal(t, "true", resp.Header.Get(StaleHeader))
		resp.Body.Close()
	}
	// Clients that give up before the answer.
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, follower.URL+"/jobs", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}

	close(release)
	follower.Close()
	leader.Close()
	slow.Close()
	client.CloseIdleConnections()
	relay.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, before)
}
