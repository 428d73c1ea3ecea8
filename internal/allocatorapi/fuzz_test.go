package allocatorapi

import (
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// Any request a client can send (method, request line, one header) gets an
// answer, never a panic, and never a 5xx from a leader: a malformed request
// is the client's fault.
func FuzzServeHTTP(f *testing.F) {
	for _, seed := range []string{
		"/scrape_configs", "/jobs", "/jobs/plain/targets?collector_id=c-1", "/jobs/with%2Fslash/targets",
		"/jobs/with+space/targets?collector_id=c-0&collector_id=c-1", "/jobs//targets", "/targets", "/",
		"/jobs/%25/targets?collector_id=", "/jobs/a/b/targets?x=%zz",
		"/debug/jobs", "/debug/job?job_id=with%2Fslash", "/debug/collector?collector_id=c-1", "/debug/targets",
		"/debug/target?target_hash=18446744073709551616", "/debug/scrape_configs", "/debug/job?job_id=a&job_id=b",
	} {
		f.Add(http.MethodGet, seed, "Accept", "application/json")
	}
	for _, seed := range []string{`"t0000000000000000"`, "*", `W/"x", "y"`, ",,", `"`} {
		f.Add(http.MethodGet, "/jobs/plain/targets?collector_id=c-0", "If-None-Match", seed)
		f.Add(http.MethodGet, "/scrape_configs", "If-None-Match", seed)
	}
	f.Add(http.MethodHead, "/jobs", forwardedHeader, "c-1")
	f.Add(http.MethodPost, "/scrape_configs", "Content-Type", "application/json")
	f.Add(http.MethodGet, "/jobs/plain/targets?collector_id=c-0", "If-None-Match", `"abc"`)
	f.Add(http.MethodGet, "/scrape_configs", EpochHeader, "-1")
	h := NewHandler(&source{identity: "c-0", allocation: testAllocation(f)}, http.DefaultClient, "http", zap.NewNop())
	f.Fuzz(func(t *testing.T, method, target, name, value string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Host != "" || u.Scheme != "" {
			return // net/http answers 400 before any handler sees it
		}
		if !validMethod(method) || !validHeader(name, value) {
			return // net/http refuses these too
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Method = method
		req.URL = u
		req.RequestURI = target
		req.Header.Set(name, value)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q (%s: %q): %d %s", method, target, name, value, rec.Code, rec.Body.String())
		}
		if rec.Code == http.StatusNotModified && rec.Body.Len() != 0 {
			t.Fatalf("%s %q: 304 with a body", method, target)
		}
		if rec.Code != http.StatusOK && rec.Code != http.StatusNotModified && rec.Body.Len() == 0 && method != http.MethodHead {
			t.Fatalf("%s %q: %d without a reason", method, target, rec.Code)
		}
	})
}

func validMethod(m string) bool {
	return m != "" && strings.IndexFunc(m, func(r rune) bool { return r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) }) < 0
}

func validHeader(name, value string) bool {
	return name != "" && textproto.TrimString(name) == name &&
		strings.IndexFunc(name, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == ':' }) < 0 &&
		strings.IndexFunc(value, func(r rune) bool { return r == '\r' || r == '\n' || r == 0 }) < 0
}

// Whatever a leader answers (status, epoch, body), a follower never fails
// its own receiver: it relays only what the receiver can read, and else
// serves its copy or an empty share, never a 5xx.
func FuzzRelayedAnswer(f *testing.F) {
	good := testAllocation(f)
	for _, seed := range []struct {
		route  string
		status int
		epoch  string
		body   string
	}{
		{"/scrape_configs", 200, "3", string(good.ScrapeConfigs(false).Body)},
		{"/scrape_configs", 200, "3", `{"plain": null}`},
		{"/scrape_configs", 200, "3", `{"plain": {"job_name": "plain", "scrape_interval": "forever"}}`},
		{"/scrape_configs", 200, "", "not json"},
		{"/jobs/plain/targets?collector_id=c-1", 200, "3", `[{"targets": ["127.0.0.1:9090"], "labels": {"a": "b"}}]`},
		{"/jobs/plain/targets?collector_id=c-1", 200, "3", `[{"targets": [1]}]`},
		{"/jobs/plain/targets?collector_id=c-1", 404, "3", "no such job"},
		{"/jobs/plain/targets?collector_id=c-1", 503, "2", ""},
		{"/jobs/plain/targets?collector_id=c-1", 200, "x", "[]"},
	} {
		f.Add(seed.route == "/scrape_configs", seed.status, seed.epoch, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, scrapeConfigs bool, status int, epoch string, body []byte) {
		if status < 200 || status > 599 || status == http.StatusNotModified || !validHeader(EpochHeader, epoch) {
			return
		}
		leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			// The group and leader the follower sees: an answer of epoch 3
			// is current, and reaches the check of what the receiver reads.
			w.Header().Set(GroupHeader, "g")
			w.Header().Set(LeaderHeader, "c-0")
			if epoch != "" {
				w.Header().Set(EpochHeader, epoch)
			}
			w.WriteHeader(status)
			_, _ = w.Write(body)
		}))
		defer leader.Close()
		h := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(leader.URL, "http://"), epoch: 3}, leader.Client(), "http", zap.NewNop())
		route, req := "/jobs/plain/targets?collector_id=c-1", request{route: routeTargets}
		if scrapeConfigs {
			route, req = "/scrape_configs", request{route: routeScrapeConfigs}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, route, nil))
		switch {
		case rec.Code >= 500:
			t.Fatalf("the follower answered its own share with %d: %s", rec.Code, rec.Body.String())
		case rec.Code == http.StatusOK:
			if _, err := readable(req, rec.Body.Bytes()); err != nil {
				t.Fatalf("the follower served what its receiver cannot read: %v\n%s", err, rec.Body.String())
			}
		}
	})
}
