package allocatorapi

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/embedded-ta/embedded-ta/internal/shares"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
)

// The hand-written encoder writes what encoding/json writes for the same
// groups, for label values that need escaping too.
func TestAnswersAreEncodedAsEncodingJSON(t *testing.T) {
	values := []string{"", "plain", `quote " backslash \`, "<html> & co", "tab\tnew\nline\rcr\bbs\fff",
		"\x00\x01\x1f\x7f", "ünïcödé ✓ 🙂", "bad \xff utf8 \xc3", "sep \u2028 \u2029", "/jobs/a+b%2F"}
	var ls []labels.Labels
	for i, v := range values {
		ls = append(ls, labels.FromStrings("__address__", v, "__meta_"+string(rune('a'+i)), v, "z", "1"))
	}
	for n := range len(ls) + 1 {
		// encoding/json's form of the labels, not of the elements.
		tgs := make([]httpsd.TargetGroup, 0, n)
		for _, l := range ls[:n] {
			tgs = append(tgs, httpsd.TargetGroup{Targets: []string{l.Get("__address__")}, Labels: l.Map()})
		}
		var want bytes.Buffer
		require.NoError(t, json.NewEncoder(&want).Encode(tgs))
		encoded := make([]shares.Target, n)
		for i, l := range ls[:n] {
			encoded[i] = sharestest.Target("j", l, "c-0", uint64(i)).Target
		}
		s := shares.NewShare(encoded)
		assert.Equal(t, want.String(), string(s.Answer().Body), "%d targets, assembled", n)
		_, size := s.ETag()
		assert.Equal(t, want.Len(), size)
		// The all-collectors route hands the elements to encoding/json.
		var all bytes.Buffer
		require.NoError(t, json.NewEncoder(&all).Encode(elements(encoded)))
		assert.Equal(t, want.String(), all.String(), "%d targets, through encoding/json", n)
		// The labels decode from the elements, invalid UTF-8 as U+FFFD.
		for i, l := range ls[:n] {
			assert.Equal(t, validUTF8(l), encoded[i].Labels(), "target %d", i)
		}
	}
}

// validUTF8 returns ls with each invalid byte of UTF-8 replaced by U+FFFD,
// as encoding/json replaces it.
func validUTF8(ls labels.Labels) labels.Labels {
	fix := func(s string) string { return string([]rune(s)) }
	var sb labels.ScratchBuilder
	ls.Range(func(l labels.Label) { sb.Add(fix(l.Name), fix(l.Value)) })
	sb.Sort()
	return sb.Labels()
}

func verifiedRequest(target string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	return r
}

func serve(h http.Handler, r *http.Request) (*http.Response, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func conditional(target, ifNoneMatch string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Header.Set("If-None-Match", ifNoneMatch)
	return r
}

// An answer names its version in an ETag; a client that already holds it
// gets 304 and no body.
func TestLeaderAnswersConditionalRequests(t *testing.T) {
	h := leaderHandler(t)
	for _, target := range []string{"/scrape_configs", "/jobs/plain/targets?collector_id=c-1", "/jobs/plain/targets?collector_id=c-2"} {
		t.Run(target, func(t *testing.T) {
			resp, body := get(t, h, target)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			etag := resp.Header.Get("ETag")
			require.NotEmpty(t, etag)
			for _, header := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
				resp, got := serve(h, conditional(target, header))
				assert.Equal(t, http.StatusNotModified, resp.StatusCode, header)
				assert.Empty(t, got)
				assert.Equal(t, etag, resp.Header.Get("ETag"))
				assert.Equal(t, "3", resp.Header.Get(EpochHeader))
			}
			resp, got := serve(h, conditional(target, `"other"`))
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, body, got)
		})
	}
	resp, body := serve(h, conditional("/jobs/plain/targets?collector_id=c-9", "*"))
	assert.Equal(t, http.StatusOK, resp.StatusCode, "no 304 for what is no share")
	assert.JSONEq(t, "[]", body)
	assert.Empty(t, resp.Header.Get("ETag"))
}

// The scrape configs with secret values and without them have different
// ETags, so that neither stands in for the other, even where both are the
// same bytes.
func TestSecretAndRedactedTagsDiffer(t *testing.T) {
	h := leaderHandler(t)
	plain, redacted := serve(h, httptest.NewRequest(http.MethodGet, "/scrape_configs", nil))
	verified, secret := serve(h, verifiedRequest("/scrape_configs"))
	require.Contains(t, secret, "hunter2")
	require.NotContains(t, redacted, "hunter2")
	assert.NotEqual(t, plain.Header.Get("ETag"), verified.Header.Get("ETag"))

	r := verifiedRequest("/scrape_configs")
	r.Header.Set("If-None-Match", plain.Header.Get("ETag"))
	resp, body := serve(h, r)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a redacted copy is not the secret answer")
	assert.Contains(t, body, "hunter2")
}

// recorder counts what a leader sends.
type recorder struct {
	h http.Handler

	mu       sync.Mutex
	statuses []int
	bytes    int
	asked    []string // If-None-Match of each request
}

func (c *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	c.h.ServeHTTP(rec, r)
	c.mu.Lock()
	c.statuses = append(c.statuses, rec.Code)
	c.bytes += rec.Body.Len()
	c.asked = append(c.asked, r.Header.Get("If-None-Match"))
	c.mu.Unlock()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (c *recorder) last() (status int, ifNoneMatch string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statuses[len(c.statuses)-1], c.asked[len(c.asked)-1]
}

// A follower that holds the current answer about its own share asks the
// leader conditionally, gets 304 and serves its copy; the stock client,
// which never sends If-None-Match, sees the same 200 and body as before.
func TestFollowerRelaysConditionally(t *testing.T) {
	leaderSrc := &source{identity: "c-0", allocation: testAllocation(t)}
	rec := &recorder{h: NewHandler(leaderSrc, http.DefaultClient, "http", zap.NewNop())}
	leader := httptest.NewServer(rec)
	defer leader.Close()
	h := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}, leader.Client(), "http", zap.NewNop())

	for _, own := range []string{"/jobs/plain/targets?collector_id=c-1", "/scrape_configs"} {
		t.Run(own, func(t *testing.T) {
			resp, first := get(t, h, own)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			etag := resp.Header.Get("ETag")
			require.NotEmpty(t, etag)
			status, asked := rec.last()
			assert.Equal(t, http.StatusOK, status)
			assert.Empty(t, asked, "no copy yet: an unconditional request")

			resp, again := get(t, h, own)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, first, again)
			assert.Equal(t, etag, resp.Header.Get("ETag"))
			assert.Equal(t, "3", resp.Header.Get(EpochHeader))
			assert.Empty(t, resp.Header.Get(StaleHeader))
			status, asked = rec.last()
			assert.Equal(t, http.StatusNotModified, status, "the leader sends no body for an answer the follower holds")
			assert.Equal(t, etag, asked)

			resp, body := serve(h, conditional(own, etag))
			assert.Equal(t, http.StatusNotModified, resp.StatusCode, "a conditional client of the follower gets 304 too")
			assert.Empty(t, body)
		})
	}

	// Another member's share is not kept: the client's condition goes through.
	other := "/jobs/plain/targets?collector_id=c-0"
	resp, _ := get(t, h, other)
	etag := resp.Header.Get("ETag")
	resp, body := serve(h, conditional(other, etag))
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)
	assert.Empty(t, body)
	assert.Equal(t, etag, resp.Header.Get("ETag"))

	// A new allocation: the follower's copy is out of date and replaced.
	own := "/jobs/plain/targets?collector_id=c-1"
	_, old := get(t, h, own)
	next := testAllocation(t, sharestest.Target("plain", labels.FromStrings("__address__", "10.0.0.1:80"), "c-1", 0))
	leaderSrc.mu.Lock()
	leaderSrc.allocation = next
	leaderSrc.mu.Unlock()
	resp, body = get(t, h, own)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.NotEqual(t, old, body)
	assert.Contains(t, body, "10.0.0.1:80")
	status, _ := rec.last()
	assert.Equal(t, http.StatusOK, status)

	// The leader is gone: the copy is served, and still honours If-None-Match.
	leader.Close()
	resp, body = serve(h, conditional(own, resp.Header.Get("ETag")))
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	assert.Empty(t, body)
	resp, body = get(t, h, own)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, "10.0.0.1:80")
}

// A 304 from a leader of an older epoch than the Lease shows is not taken
// as a confirmation of anything: the follower serves its copy as stale.
func TestFollowerRejectsStaleNotModified(t *testing.T) {
	rec := &recorder{h: leaderHandler(t)} // epoch 3
	leader := httptest.NewServer(rec)
	defer leader.Close()
	follower := &source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}
	h := NewHandler(follower, leader.Client(), "http", zap.NewNop())
	own := "/jobs/plain/targets?collector_id=c-1"
	_, current := get(t, h, own)

	follower.mu.Lock()
	follower.epoch = 4
	follower.mu.Unlock()
	resp, body := get(t, h, own)
	status, _ := rec.last()
	assert.Equal(t, http.StatusNotModified, status)
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	assert.Equal(t, current, body)
}

// An answer larger than a chunk is written in pieces: the same bytes as the
// assembled answer, with its length and ETag.
func TestLargeAnswerWrittenInChunks(t *testing.T) {
	a := benchAllocation(3000)
	h := NewHandler(&source{identity: "c-1", allocation: a}, http.DefaultClient, "http", zap.NewNop())
	resp, body := serve(h, httptest.NewRequest(http.MethodGet, "/jobs/pods/targets?collector_id=c-0", nil))
	want := a.Share("pods", "c-0").Answer()
	require.Greater(t, len(want.Body), 4*chunk)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, string(want.Body), body)
	assert.Equal(t, strconv.Itoa(len(want.Body)), resp.Header.Get("Content-Length"))
	assert.Equal(t, want.ETag, resp.Header.Get("ETag"))
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var groups []httpsd.TargetGroup
	require.NoError(t, json.Unmarshal([]byte(body), &groups))
	assert.Len(t, groups, 3000)
}
