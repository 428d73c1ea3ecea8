package allocatorapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
)

// setAllocation replaces a source's allocation and tells its handler.
func setAllocation(src *source, h *Handler, a *shares.Allocation) {
	src.mu.Lock()
	src.allocation = a
	src.mu.Unlock()
	h.AllocationChanged()
}

// moved is the test allocation with one more target in c-1's share of "plain".
func moved(t *testing.T) *shares.Allocation {
	return testAllocation(t, sharestest.Target("plain", labels.FromStrings("__address__", "10.0.0.1:80"), "c-1", 0))
}

func shareETags(a *shares.Allocation, member string) map[string]string {
	out := map[string]string{}
	for _, job := range a.Jobs() {
		out[job] = shareETag(a, job, member)
	}
	return out
}

// /shares names the ETag of each of a member's shares; it honours
// If-None-Match and refuses what it does not take.
func TestSharesAnswer(t *testing.T) {
	a := testAllocation(t)
	h := NewHandler(&source{identity: "c-0", allocation: a}, http.DefaultClient, "http", zap.NewNop())

	resp, body := get(t, h, "/shares?collector_id=c-1")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var index map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &index))
	assert.Equal(t, shareETags(a, "c-1"), index)
	assert.Equal(t, "3", resp.Header.Get(EpochHeader))
	etag := resp.Header.Get("ETag")
	require.NotEmpty(t, etag)

	resp, body = serve(h, conditional("/shares?collector_id=c-1", etag))
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)
	assert.Empty(t, body)

	for target, code := range map[string]int{
		"/shares":                                      http.StatusBadRequest,
		"/shares?collector_id=c-1&wait=1h":             http.StatusBadRequest,
		"/shares?collector_id=c-1&wait=soon":           http.StatusBadRequest,
		"/shares?collector_id=c-1&other=1":             http.StatusBadRequest,
		"/jobs?wait=1s":                                http.StatusBadRequest,
		"/jobs/plain/targets?collector_id=c-1&wait=1s": http.StatusBadRequest,
		"/shares?collector_id=stranger":                http.StatusNotFound,
	} {
		resp, body := get(t, h, target)
		assert.Equal(t, code, resp.StatusCode, "%s: %s", target, body)
	}
	resp, _ = get(t, h, "/shares?collector_id=stranger")
	assert.Equal(t, "false", resp.Header.Get(MemberHeader))
}

// With wait, the leader answers as soon as the member's shares change, and
// 304 when they have not changed within wait.
func TestSharesWaitForAChange(t *testing.T) {
	src := &source{identity: "c-0", allocation: testAllocation(t)}
	h := NewHandler(src, http.DefaultClient, "http", zap.NewNop())
	resp, _ := get(t, h, "/shares?collector_id=c-1")
	etag := resp.Header.Get("ETag")

	start := time.Now()
	resp, _ = serve(h, conditional("/shares?collector_id=c-1&wait=300ms", etag))
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)

	// A change of another member's share only wakes the wait up.
	go func() {
		time.Sleep(100 * time.Millisecond)
		next := testAllocation(t, sharestest.Target("plain", labels.FromStrings("__address__", "10.0.0.2:80"), "c-2", 0))
		setAllocation(src, h, next)
		time.Sleep(200 * time.Millisecond)
		setAllocation(src, h, moved(t))
	}()
	start = time.Now()
	resp, body := serve(h, conditional("/shares?collector_id=c-1&wait=10s", etag))
	took := time.Since(start)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.GreaterOrEqual(t, took, 300*time.Millisecond, "answered before c-1's share changed")
	assert.Less(t, took, 2*time.Second)
	var index map[string]string
	require.NoError(t, json.Unmarshal([]byte(body), &index))
	assert.Equal(t, shareETags(moved(t), "c-1"), index)

	// The leader steps down: the wait ends.
	go func() {
		time.Sleep(100 * time.Millisecond)
		setAllocation(src, h, nil)
	}()
	resp, _ = serve(h, conditional("/shares?collector_id=c-1&wait=10s", resp.Header.Get("ETag")))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// The leader hands its receiver its shares from its allocation, and tells
// it when they change.
func TestSharesOfTheLeader(t *testing.T) {
	src := &source{identity: "c-0", allocation: testAllocation(t)}
	h := NewHandler(src, http.DefaultClient, "http", zap.NewNop())
	own, changed := h.Shares()
	assert.Len(t, own, len(oddJobs))
	groups, err := own["plain"].Targets()
	require.NoError(t, err)
	require.Len(t, groups, 1)
	assert.Equal(t, "y", groups[0].Labels["__meta_x"])

	setAllocation(src, h, testAllocation(t, sharestest.Target("plain", labels.FromStrings("__address__", "10.0.0.1:80"), "c-0", 0)))
	select {
	case <-changed:
	default:
		t.Fatal("a new allocation does not close the channel")
	}
	own, _ = h.Shares()
	groups, err = own["plain"].Targets()
	require.NoError(t, err)
	assert.Len(t, groups, 2)
}

// A follower hands its receiver the copies of its shares: none before any
// answer; the answer its receiver got, once it got one.
func TestSharesOfAFollowerAreItsCopies(t *testing.T) {
	leader := httptest.NewServer(leaderHandler(t))
	defer leader.Close()
	h := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}, leader.Client(), "http", zap.NewNop())
	own, changed := h.Shares()
	assert.Empty(t, own)

	resp, body := get(t, h, "/jobs/plain/targets?collector_id=c-1")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	select {
	case <-changed:
	default:
		t.Fatal("a new copy does not close the channel")
	}
	own, changed = h.Shares()
	require.Contains(t, own, "plain")
	assert.Equal(t, resp.Header.Get("ETag"), own["plain"].ETag)
	groups, err := own["plain"].Targets()
	require.NoError(t, err)
	var served []map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &served))
	assert.Len(t, groups, len(served))

	get(t, h, "/jobs/plain/targets?collector_id=c-1") // the same answer
	select {
	case <-changed:
		t.Fatal("an unchanged copy closes the channel")
	default:
	}
}

// Follow keeps a follower's copies as the leader's allocation changes,
// without its receiver asking: the change reaches its Shares within a round
// trip, not a poll period.
func TestFollowBringsChangesAtOnce(t *testing.T) {
	leaderSrc := &source{identity: "c-0", allocation: testAllocation(t)}
	lh := NewHandler(leaderSrc, http.DefaultClient, "http", zap.NewNop())
	rec := &recorder{h: lh}
	leader := httptest.NewServer(rec)
	defer leader.Close()
	h := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}, leader.Client(), "http", zap.NewNop())

	ctx, cancel := context.WithCancel(context.Background())
	var followed sync.WaitGroup
	followed.Go(func() { h.Follow(ctx, 5*time.Second, 50*time.Millisecond) })
	defer func() {
		cancel()
		followed.Wait()
	}()

	etags := func(own OwnShares) map[string]string {
		out := map[string]string{}
		for job, s := range own {
			out[job] = s.ETag
		}
		return out
	}
	require.Eventually(t, func() bool {
		own, _ := h.Shares()
		return assert.ObjectsAreEqual(shareETags(leaderSrc.Allocation(), "c-1"), etags(own))
	}, 5*time.Second, 10*time.Millisecond, "the follower copies its shares")
	_, changed := h.Shares()

	rec.mu.Lock()
	before := len(rec.statuses)
	rec.mu.Unlock()
	start := time.Now()
	setAllocation(leaderSrc, lh, moved(t))
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the follower did not learn of the change")
	}
	t.Logf("measured: a follower learned of a change of its share %s after the leader's allocation", time.Since(start).Round(time.Microsecond))
	own, _ := h.Shares()
	assert.Equal(t, shareETags(moved(t), "c-1"), etags(own))
	groups, err := own["plain"].Targets()
	require.NoError(t, err)
	var addresses []string
	for _, g := range groups {
		addresses = append(addresses, g.Targets...)
	}
	assert.Contains(t, addresses, "10.0.0.1:80")
	rec.mu.Lock()
	asked := len(rec.statuses) - before
	rec.mu.Unlock()
	assert.LessOrEqual(t, asked, 3, "one answer to the wait, one share relayed, and the next wait")
}

// A follower whose Lease expired and whom the leader dropped learns it from
// its wait at the leader, and its shares go empty without its receiver
// asking.
func TestFollowEmptiesTheSharesOfADroppedMember(t *testing.T) {
	leaderSrc := &source{identity: "c-0", allocation: testAllocation(t)}
	lh := NewHandler(leaderSrc, http.DefaultClient, "http", zap.NewNop())
	leader := httptest.NewServer(lh)
	defer leader.Close()
	follower := &source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}
	h := NewHandler(follower, leader.Client(), "http", zap.NewNop())
	get(t, h, "/jobs/plain/targets?collector_id=c-1")

	ctx, cancel := context.WithCancel(context.Background())
	var followed sync.WaitGroup
	followed.Go(func() { h.Follow(ctx, 5*time.Second, 50*time.Millisecond) })
	defer func() {
		cancel()
		followed.Wait()
	}()

	without, err := sharestest.New(3, "c-0", []string{"c-0", "c-2"}, map[string]*config.ScrapeConfig{"plain": {JobName: "plain"}}, nil)
	require.NoError(t, err)
	setAllocation(leaderSrc, lh, without)
	require.Eventually(t, func() bool {
		own, _ := h.Shares()
		groups, err := own["plain"].Targets()
		return err == nil && len(groups) == 0
	}, 5*time.Second, 10*time.Millisecond)
}
