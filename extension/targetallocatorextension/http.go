package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
)

// defaultRelayTimeout bounds a follower's request to the leader (client::timeout).
const defaultRelayTimeout = 5 * time.Second

// routes serves the replica's own endpoints and the allocator API; relay
// asks the leader.
func (e *allocatorExtension) routes(relay *http.Client) http.Handler {
	scheme := "http"
	if e.cfg.TLS.HasValue() {
		scheme = "https"
	}
	api := allocatorapi.NewHandler(apiSource{e}, relay, scheme, e.set.Logger)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", e.readyz)
	mux.HandleFunc("GET /status", e.status)
	mux.Handle("/", api)
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

// statusDocument is /status: this replica's view of its group and, on the
// leader, a summary of the allocation (the status page's data).
type statusDocument struct {
	View
	Allocation *allocationSummary `json:"allocation,omitempty"`
}

type allocationSummary struct {
	Collectors []collectorSummary `json:"collectors"`
	Jobs       []jobSummary       `json:"jobs"`
	Unassigned int                `json:"unassigned"`
}

type collectorSummary struct {
	Name    string `json:"name"`
	Jobs    int    `json:"job_count"`
	Targets int    `json:"target_count"`
}

type jobSummary struct {
	Name    string `json:"name"`
	Targets int    `json:"target_count"`
}

func (e *allocatorExtension) status(w http.ResponseWriter, _ *http.Request) {
	doc := statusDocument{View: e.View()}
	if a := (apiSource{e}).Allocation(); a != nil {
		counts := a.Counts()
		sum := &allocationSummary{Unassigned: counts[""][1]}
		for _, m := range a.Members {
			sum.Collectors = append(sum.Collectors, collectorSummary{Name: m, Jobs: counts[m][0], Targets: counts[m][1]})
		}
		for _, j := range a.Jobs() {
			sum.Jobs = append(sum.Jobs, jobSummary{Name: j, Targets: a.TargetCount(j)})
		}
		doc.Allocation = sum
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
}

// apiSource is the extension as the allocator API sees it.
type apiSource struct{ e *allocatorExtension }

func (s apiSource) Identity() string { return s.e.s.identity }

func (s apiSource) Allocation() *allocatorapi.Allocation {
	if s.e.elector == nil || !s.e.elector.IsLeader() {
		return nil
	}
	return s.e.allocation.Load()
}

func (s apiSource) LeaderEndpoint() string {
	v := s.e.View()
	if v.Leader == v.Identity {
		return "" // leading, or the last record names this replica: nobody to ask
	}
	return v.LeaderEndpoint
}

func (s apiSource) Epoch() int { return s.e.View().Epoch }

func (s apiSource) Group() allocatorapi.GroupInfo {
	v := s.e.View()
	g := allocatorapi.GroupInfo{
		Identity:       v.Identity,
		Group:          v.Group,
		Namespace:      v.Namespace,
		Leader:         v.Leader,
		Epoch:          v.Epoch,
		LeaseRenewTime: v.LeaderLease.RenewTime,
		LeaseDuration:  v.LeaderLease.LeaseDuration,
	}
	for _, m := range v.Members {
		g.Members = append(g.Members, allocatorapi.MemberInfo{Identity: m.Identity, Endpoint: m.Endpoint, Node: m.Node, LeaseAge: m.LeaseAge})
	}
	return g
}
