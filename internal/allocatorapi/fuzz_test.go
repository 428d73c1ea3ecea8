package allocatorapi

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"go.uber.org/zap"
)

// Any request line a client can send gets an answer, never a panic, and
// never a 5xx from a leader: a malformed request is the client's fault.
func FuzzServeHTTP(f *testing.F) {
	for _, seed := range []string{
		"/scrape_configs", "/jobs", "/jobs/plain/targets?collector_id=c-1", "/jobs/with%2Fslash/targets",
		"/jobs/with+space/targets?collector_id=c-0&collector_id=c-1", "/jobs//targets", "/targets", "/",
		"/jobs/%25/targets?collector_id=", "/jobs/a/b/targets?x=%zz",
	} {
		f.Add(seed, "")
	}
	for _, seed := range []string{`"t0000000000000000"`, "*", `W/"x", "y"`, ",,", `"`} {
		f.Add("/jobs/plain/targets?collector_id=c-0", seed)
		f.Add("/scrape_configs", seed)
	}
	h := NewHandler(&source{identity: "c-0", allocation: testAllocation(f)}, http.DefaultClient, "http", zap.NewNop())
	f.Fuzz(func(t *testing.T, target, ifNoneMatch string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || u.Host != "" || u.Scheme != "" {
			return // net/http answers 400 before any handler sees it
		}
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL = u
		req.RequestURI = target
		if ifNoneMatch != "" {
			req.Header.Set("If-None-Match", ifNoneMatch)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("GET %q: %d %s", target, rec.Code, rec.Body.String())
		}
		if rec.Code == http.StatusNotModified && rec.Body.Len() != 0 {
			t.Fatalf("GET %q: 304 with a body", target)
		}
		if rec.Code != http.StatusOK && rec.Code != http.StatusNotModified && rec.Body.Len() == 0 {
			t.Fatalf("GET %q: %d without a reason", target, rec.Code)
		}
	})
}
