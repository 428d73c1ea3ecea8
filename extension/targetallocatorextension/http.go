package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/status"
)

// defaultRelayTimeout bounds a follower's request to the leader (client::timeout).
const defaultRelayTimeout = 5 * time.Second

// maxSharesWait bounds how long a follower's request waits at its leader for
// a change of its shares (allocatorapi.Handler.Follow).
const maxSharesWait = 25 * time.Second

// sharesWait is how long a follower's request waits at its leader for a
// change of its shares: the leader must answer it within its write_timeout,
// with time to spare for the answer itself (client::timeout).
func (e *allocatorExtension) sharesWait() time.Duration {
	wait := maxSharesWait
	if wt := e.cfg.WriteTimeout; wt > 0 {
		wait = min(wait, wt-e.cfg.Client.Timeout)
	}
	return max(wait, time.Second)
}

// scheme is how members reach one another's allocator API.
func (e *allocatorExtension) scheme() string {
	if e.cfg.TLS.HasValue() {
		return "https"
	}
	return "http"
}

// routes serves the member's own endpoints and the allocator API; relay
// asks the leader at its endpoint, httpsRelay (when https is enabled) at its
// https listener.
func (e *allocatorExtension) routes(relay, httpsRelay *http.Client) http.Handler {
	scheme := e.scheme()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", e.readyz)
	mux.HandleFunc("GET /status", e.status)
	mux.Handle("GET /metrics", e.metrics.Handler())
	mux.HandleFunc("POST "+reportPath, e.answerReport)
	api := allocatorapi.New(e, allocatorapi.Options{
		Client: relay, Scheme: scheme, EndpointShowsSecrets: e.cfg.showsSecrets(),
		HTTPSClient: httpsRelay, HTTPSPort: e.httpsPort(),
		InsecureSecrets: e.cfg.AllowInsecureAuthSecrets,
		Logger:          e.set.Logger,
	})
	e.api = api
	mux.Handle("/", api)
	return e.metrics.Instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux answers a path with a "." or ".." segment with a redirect
		// to its clean form, which the stock client does not follow: the
		// targets of jobs named "." and ".." go to the API as they are.
		if strings.HasPrefix(r.URL.Path, "/jobs/") {
			api.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
}

// readyz answers 200 once this member's Lease is written and it knows its
// leader.
func (e *allocatorExtension) readyz(w http.ResponseWriter, _ *http.Request) {
	v := e.View()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch {
	case !v.Joined:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not a member of group " + v.Group + " yet: its member Lease is not written\n"))
	case v.Leader == "":
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("group " + v.Group + " has no leader\n"))
	default:
		_, _ = w.Write([]byte("ok\n"))
	}
}

// status serves /status: this member's view of its group and, on the
// leader, the summary of its allocation, as the status page shows them.
func (e *allocatorExtension) status(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(status.NewDocument(e.View(), e.Allocation()))
}
