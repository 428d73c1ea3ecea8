package allocatorapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
)

// A parameter other than collector_id, on the targets route only, is
// refused: two requests for one answer never differ.
func TestUnknownParametersAreRefused(t *testing.T) {
	h := leaderHandler(t)
	for _, target := range []string{
		"/scrape_configs?x=1", "/jobs?collector_id=c-0", "/jobs/plain/targets?collector_id=c-0&x=1", "/?refresh=1",
	} {
		resp, body := get(t, h, target)
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, target)
		assert.Contains(t, body, "unknown query parameter", target)
	}
}

// Whatever a client asks, a member keeps at most one copy a job (and one of
// the scrape configs) for each kind of client, and forgets the copies of
// jobs the scrape configs no longer have.
func TestCopiesAreBoundedByJobs(t *testing.T) {
	leaderSrc := &source{identity: "c-0", allocation: testAllocation(t)}
	leader := httptest.NewServer(NewHandler(leaderSrc, http.DefaultClient, "http", zap.NewNop()))
	defer leader.Close()
	h := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}, leader.Client(), "http", zap.NewNop())

	get(t, h, "/scrape_configs")
	for i := range 1000 {
		get(t, h, fmt.Sprintf("/scrape_configs?x=%d", i))
		get(t, h, fmt.Sprintf("/jobs/plain/targets?collector_id=c-1&x=%d", i))
		get(t, h, fmt.Sprintf("/jobs/nope-%d/targets?collector_id=c-1", i))
		get(t, h, "/jobs/plain/targets?collector_id=c-1")
	}
	assert.Len(t, h.relay.copies, 2, "the scrape configs and the share of plain")

	// The next scrape configs lack "plain": its copy goes.
	next, err := sharestest.New(3, "c-0", []string{"c-0", "c-1"}, map[string]*config.ScrapeConfig{"other": {JobName: "other"}}, nil)
	require.NoError(t, err)
	leaderSrc.mu.Lock()
	leaderSrc.allocation = next
	leaderSrc.mu.Unlock()
	get(t, h, "/scrape_configs")
	assert.Len(t, h.relay.copies, 1, "the copy of a job that is gone is forgotten")
}

// A follower relays at most maxRelaying requests at once; past that, it
// answers from its copies, as when no leader answers.
func TestRelaysAreBounded(t *testing.T) {
	release := make(chan struct{})
	var asked sync.WaitGroup
	asked.Add(maxRelaying)
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Done()
		<-release
		w.WriteHeader(http.StatusNotFound)
	}))
	defer leader.Close()
	h := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}, leader.Client(), "http", zap.NewNop())

	var relayed sync.WaitGroup
	for range maxRelaying {
		relayed.Add(1)
		go func() {
			defer relayed.Done()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/jobs", nil))
		}()
	}
	asked.Wait() // every slot is taken
	resp, body := get(t, h, "/jobs/plain/targets?collector_id=c-1")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, "[]", body, "its own share from its copy (none yet: empty)")
	resp, body = get(t, h, "/jobs")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, body, "too busy")
	close(release)
	relayed.Wait()
}

// A member that could not renew its Lease, and whose leader says it is no
// member (its targets went to the others), answers its shares empty until
// it rejoins, each of them, also while no leader answers; it says so once.
// A member whose Lease is current answers from its copy (it is joining, or
// the leader has not seen its renewal yet) and keeps the copy.
func TestMemberOutOfTheGroupStopsItsShare(t *testing.T) {
	var mu sync.Mutex
	out := false
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(GroupHeader, "g")
		w.Header().Set(LeaderHeader, "c-0")
		w.Header().Set(EpochHeader, "3")
		mu.Lock()
		defer mu.Unlock()
		if out {
			// The leader's answer to a collector that is no member.
			w.Header().Set(MemberHeader, "false")
			_, _ = w.Write([]byte("[]\n"))
			return
		}
		_, _ = w.Write([]byte(`[{"targets":["10.0.0.1:80"],"labels":{}}]`))
	}))
	defer leader.Close()
	src := &source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3, joined: true}
	core, logs := observer.New(zap.InfoLevel)
	h := NewHandler(src, leader.Client(), "http", zap.New(core))
	own, other := "/jobs/plain/targets?collector_id=c-1", "/jobs/other/targets?collector_id=c-1"
	_, kept := get(t, h, own)
	require.Contains(t, kept, "10.0.0.1:80")
	_, body := get(t, h, other)
	require.Contains(t, body, "10.0.0.1:80")

	mu.Lock()
	out = true
	mu.Unlock()
	resp, body := get(t, h, own)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, kept, body, "a member whose Lease is current is joining: its copy")
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	assert.Empty(t, resp.Header.Get(MemberHeader))
	assert.Zero(t, logs.Len(), "nothing to say yet")

	src.mu.Lock()
	src.joined = false
	src.mu.Unlock()
	for range 3 {
		resp, body = get(t, h, own)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.JSONEq(t, "[]", body, "no member: an empty share")
		assert.Equal(t, "false", resp.Header.Get(MemberHeader))
		get(t, h, "/scrape_configs") // answered to anyone: no sign of membership
	}
	assert.Equal(t, 1, logs.FilterMessageSnippet("Lease expired").Len(), "said once")
	assert.Zero(t, logs.FilterMessageSnippet("member again").Len())
	leader.Close()
	_, body = get(t, h, own)
	assert.JSONEq(t, "[]", body, "nor its old copy when nobody answers")
	_, body = get(t, h, other)
	assert.JSONEq(t, "[]", body, "nor that of a job it was not asked about since")
}

// A leader that does not know every job yet and has no copy of the scrape
// configs (it has just started) answers a follower's relayed request with
// 503, never with its empty fallback: the follower keeps its own copy.
func TestPendingLeaderGivesFollowersNoFallback(t *testing.T) {
	a := testAllocation(t)
	a.Pending = true
	leader := httptest.NewServer(NewHandler(&source{identity: "c-0", allocation: a}, http.DefaultClient, "http", zap.NewNop()))
	defer leader.Close()
	follower := &source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3, allocation: testAllocation(t)}
	h := NewHandler(follower, leader.Client(), "http", zap.NewNop())
	_, kept := get(t, h, "/scrape_configs") // a copy of its own term as leader
	require.Contains(t, kept, "with/slash")
	follower.mu.Lock()
	follower.allocation = nil
	follower.mu.Unlock()

	resp, body := get(t, h, "/scrape_configs")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	assert.Equal(t, kept, body, "the follower's copy, not the new leader's {}")
}
