package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"encoding/json"
	"net/http"
)

// routes serves the replica's own endpoints.
func (e *allocatorExtension) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", e.readyz)
	mux.HandleFunc("GET /status", e.status)
	return mux
}

// readyz answers 200 once this replica is a member of its group and knows
// its leader.
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

func (e *allocatorExtension) status(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(e.View())
}
