// Package allocatorapi serves a group's allocation over HTTP with the routes
// and shapes of the OpenTelemetry Operator's Target Allocator, so that the
// stock prometheus receiver (target_allocator settings) and TA tooling work
// unchanged, and the status page.
//
// The leader answers from its allocation (internal/shares); a follower
// relays to the leader and keeps the last answers about its own share, so
// that it can go on answering them while no leader is reachable (Relay).
package allocatorapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/status"
)

// Source is what the handler needs of its member.
type Source interface {
	// View is the member's view of its group: its identity, its leader and
	// the leader's endpoint and epoch.
	View() status.View
	// Allocation is the allocation to answer from while this member leads, else nil.
	Allocation() *shares.Allocation
}

// Limits bound what a request may ask.
const (
	maxQuery = 2048 // bytes of query string
	maxPath  = 2048 // bytes of escaped path
)

// Every answer a leader makes from an allocation names the group, the leader
// and the leadership epoch (the leader Lease's transition count) it comes
// from. A follower relays only an answer of the group, leader and epoch the
// Lease shows: a leader that was frozen past its lease, or a member of
// another group at a reused address, cannot overwrite the assignment.
const (
	GroupHeader  = "X-Embedded-Ta-Group"
	LeaderHeader = "X-Embedded-Ta-Leader"
	EpochHeader  = "X-Embedded-Ta-Epoch"
)

// MemberHeader is "false" on the leader's answer to a collector_id that is
// not a member of its allocation, and JobHeader on its answer about a job it
// does not have. Either answer is the TA's, 200 with an empty list (a 404
// would make Prometheus HTTP SD keep the targets it had); the headers tell a
// follower that it is no share to keep a copy of.
const (
	MemberHeader = "X-Embedded-Ta-Member"
	JobHeader    = "X-Embedded-Ta-Job"
)

// Handler serves the allocator API and the status page.
//
// Answers about shares and scrape configs carry an ETag, a hash of the body,
// and a request whose If-None-Match names it gets 304 Not Modified without a
// body. The stock client does not send it; a follower relaying to the leader
// does, for the answers it keeps a copy of.
//
// The leader answers from its allocation; anyone else relays (see Relay).
type Handler struct {
	src   Source
	relay *Relay
	// seriesOmitted is set once this member has reported without its
	// series, which did not fit (SendReport): it says so once.
	seriesOmitted atomic.Bool
	// heldOmitted, likewise, once it has reported without the targets it
	// holds.
	heldOmitted atomic.Bool
	// allocationChanged fires when the member's allocation or its leader may
	// have changed (AllocationChanged).
	allocationChanged signal
	// waiting holds a slot per request for /shares waiting for a change.
	waiting chan struct{}
}

// Options are how a handler answers, besides its source.
type Options struct {
	// Client asks the leader at its endpoint, over Scheme ("http" or "https").
	Client *http.Client
	Scheme string
	// EndpointShowsSecrets is set when the leader's endpoint shows this
	// member secret values: to everyone (allow_insecure_auth_secrets), or
	// to the verified client that Client is.
	EndpointShowsSecrets bool
	// HTTPSClient, when set, asks the leader's https listener, at the host
	// of its endpoint and HTTPSPort, which shows secret values to the
	// verified client that HTTPSClient is. A follower asks it what a client
	// that may see secret values asks, unless the endpoint shows them.
	HTTPSClient *http.Client
	HTTPSPort   string
	// InsecureSecrets shows secret values to every client, verified or
	// not (allow_insecure_auth_secrets).
	InsecureSecrets bool
	Logger          *zap.Logger
}

// New returns a handler for src.
func New(src Source, o Options) *Handler {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return &Handler{src: src, relay: newRelay(o), waiting: make(chan struct{}, maxWaiting)}
}

// NewHandler returns a handler for src that shows secret values to verified
// clients only; client relays requests to the leader over scheme ("http" or
// "https").
func NewHandler(src Source, client *http.Client, scheme string, logger *zap.Logger) *Handler {
	return New(src, Options{Client: client, Scheme: scheme, Logger: logger})
}

// route names what a request asks for.
type route int

const (
	routePage route = iota
	routeTargetsPage
	routeScrapeConfigs
	routeJobs
	routeTargets
	routeDebugJobs
	routeDebugJob
	routeDebugTargets
	routeDebugTarget
	routeDebugCollector
	routeDebugScrapeConfigs
	routeShares
)

// The TA's debug pages.
const (
	debugJobs          = "/debug/jobs"
	debugJob           = "/debug/job"
	debugTargets       = "/debug/targets"
	debugTarget        = "/debug/target"
	debugCollector     = "/debug/collector"
	debugScrapeConfigs = "/debug/scrape_configs"
)

// pathRoutes are the routes of fixed paths, and the one query parameter
// each takes, if any.
var pathRoutes = map[string]struct {
	route route
	param string
}{
	"/": {route: routePage}, "": {route: routePage}, "/targets": {route: routeTargetsPage},
	"/scrape_configs": {route: routeScrapeConfigs}, "/jobs": {route: routeJobs},
	debugJobs: {route: routeDebugJobs}, debugJob: {routeDebugJob, "job_id"},
	debugTargets: {route: routeDebugTargets}, debugTarget: {routeDebugTarget, "target_hash"},
	debugCollector: {routeDebugCollector, "collector_id"}, debugScrapeConfigs: {route: routeDebugScrapeConfigs},
}

// request is a parsed, validated API request.
type request struct {
	route  route
	job    string
	member string        // collector_id
	all    bool          // targets of every member
	target uint64        // target_hash
	wait   time.Duration // how long the leader may wait for a change (/shares)
}

// ownShare reports whether req asks for identity's own share, which every
// member keeps a copy of: its scrape configs and its targets of a job.
func (req request) ownShare(identity string) bool {
	return req.route == routeScrapeConfigs || (req.route == routeTargets && req.member == identity)
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == ReportPath {
		h.answerReport(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpError(w, http.StatusMethodNotAllowed, "method %s not allowed", r.Method)
		return
	}
	req, code, err := parse(r)
	if err != nil {
		httpError(w, code, "%v", err)
		return
	}
	view := h.src.View()
	if a := h.src.Allocation(); a != nil {
		w.Header().Set(GroupHeader, view.Group)
		w.Header().Set(LeaderHeader, a.Leader)
		w.Header().Set(EpochHeader, strconv.Itoa(a.Epoch))
		h.answer(w, r, req, view, a)
		return
	}
	// Not the leader, or a leader between two terms: ask the leader.
	h.relay.serve(w, r, req, view)
}

func parse(r *http.Request) (request, int, error) {
	if len(r.URL.RawQuery) > maxQuery {
		return request{}, http.StatusRequestURITooLong, fmt.Errorf("query longer than %d bytes", maxQuery)
	}
	path := r.URL.EscapedPath()
	if len(path) > maxPath {
		return request{}, http.StatusRequestURITooLong, fmt.Errorf("path longer than %d bytes", maxPath)
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return request{}, http.StatusBadRequest, fmt.Errorf("bad query: %w", err)
	}
	// /shares takes collector_id and wait; every other route at most one
	// parameter (the targets route collector_id): anything else is refused,
	// not ignored, so that no two requests for one answer differ.
	if path == "/shares" {
		for name := range query {
			if name != "collector_id" && name != "wait" {
				return request{}, http.StatusBadRequest, fmt.Errorf("unknown query parameter %q", name)
			}
		}
		return parseShares(query)
	}
	// A route takes at most one parameter (the targets route collector_id):
	// anything else is refused, not ignored, so that no two requests for
	// one answer differ.
	fixed, isFixed := pathRoutes[path]
	param := fixed.param
	if !isFixed && strings.HasPrefix(path, "/jobs/") {
		param = "collector_id"
	}
	for name := range query {
		if name != param {
			return request{}, http.StatusBadRequest, fmt.Errorf("unknown query parameter %q", name)
		}
	}
	if isFixed {
		return parseFixed(fixed.route, param, query[param])
	}
	raw, ok := strings.CutPrefix(path, "/jobs/")
	if ok {
		raw, ok = strings.CutSuffix(raw, "/targets")
	}
	if !ok || raw == "" {
		return request{}, http.StatusNotFound, fmt.Errorf("no route %s", path)
	}
	// The stock client escapes job names with url.QueryEscape ('+' for ' ').
	name, err := url.QueryUnescape(raw)
	if err != nil {
		return request{}, http.StatusBadRequest, fmt.Errorf("bad job name %q: %w", raw, err)
	}
	req := request{route: routeTargets, job: name}
	ids, has := query["collector_id"]
	switch {
	case !has:
		req.all = true
	case len(ids) != 1 || ids[0] == "":
		return request{}, http.StatusBadRequest, errors.New("collector_id must be given once and not be empty")
	default:
		req.member = ids[0]
	}
	return req, 0, nil
}

// parseFixed reads the parameter of a route of a fixed path: a debug page's
// must be given once, as in the TA.
func parseFixed(rt route, param string, values []string) (request, int, error) {
	req := request{route: rt}
	if param == "" {
		return req, 0, nil
	}
	if len(values) != 1 || values[0] == "" {
		return request{}, http.StatusBadRequest, fmt.Errorf("%s must be given once and not be empty", param)
	}
	switch rt {
	case routeDebugJob:
		req.job = values[0]
	case routeDebugCollector:
		req.member = values[0]
	case routeDebugTarget:
		hash, err := strconv.ParseUint(values[0], 10, 64)
		if err != nil {
			return request{}, http.StatusBadRequest, fmt.Errorf("target_hash %q is not a number", values[0])
		}
		req.target = hash
	}
	return req, 0, nil
}

// answer serves req from the leader's allocation. The leader keeps its own
// share too: if its term ends (an API-server outage), it answers from that
// copy like any follower.
func (h *Handler) answer(w http.ResponseWriter, r *http.Request, req request, view status.View, a *shares.Allocation) {
	switch req.route {
	case routePage:
		status.WritePage(w, status.NewDocument(view, a))
	case routeTargetsPage:
		status.WriteTargetsPage(w, view, a)
	case routeDebugJobs:
		status.WriteDebugJobs(w, view, a)
	case routeDebugJob:
		status.WriteDebugJob(w, view, a, req.job)
	case routeDebugTargets:
		status.WriteDebugTargets(w, view, a)
	case routeDebugCollector:
		if !a.IsMember(req.member) {
			httpError(w, http.StatusNotFound, "collector_id %q is no member of group %s", req.member, view.Group)
			return
		}
		status.WriteDebugCollector(w, view, a, req.member)
	case routeDebugTarget:
		t, ok := status.FindTarget(a, req.target)
		if !ok {
			httpError(w, http.StatusNotFound, "no target has target_hash %d", req.target)
			return
		}
		status.WriteDebugTarget(w, view, t)
	case routeDebugScrapeConfigs:
		// Redacted whoever asks, as in the TA.
		status.WriteDebugScrapeConfigs(w, view, a.ScrapeConfigs(false).Body)
	case routeScrapeConfigs:
		if a.Pending {
			h.relay.fallback(w, r, req, view, "the leader does not know every job yet")
			return
		}
		ans := a.ScrapeConfigs(h.relay.maySee(r))
		h.relay.keepScrapeConfigs(r, req, ans, a.Jobs())
		writeAnswer(w, r, ans)
	case routeJobs:
		links := make(map[string]map[string]string, len(a.Jobs()))
		for _, name := range a.Jobs() {
			links[name] = map[string]string{"_link": status.JobLink(name)}
		}
		writeValue(w, links)
	case routeTargets:
		switch {
		case a.Pending:
			h.relay.fallback(w, r, req, view, "the leader does not know every job yet")
		case !a.Reported(req.job) && a.HasJob(req.job):
			h.relay.fallback(w, r, req, view, fmt.Sprintf("the leader's discovery of job %q has not reported yet", req.job))
		case req.all:
			if !a.HasJob(req.job) {
				w.Header().Set(JobHeader, "false")
			}
			out := make(map[string]memberTargets, len(a.Members))
			for _, m := range a.Members {
				out[m] = memberTargets{
					Link:    status.JobLink(req.job) + "?collector_id=" + url.QueryEscape(m),
					Targets: elements(a.Share(req.job, m).Targets()),
				}
			}
			writeValue(w, out)
		case !a.HasJob(req.job) || !a.IsMember(req.member):
			// The TA's answer, with what makes it no share.
			if !a.HasJob(req.job) {
				w.Header().Set(JobHeader, "false")
			}
			if !a.IsMember(req.member) {
				w.Header().Set(MemberHeader, "false")
			}
			writeJSON(w, []byte("[]\n"))
		default:
			// What the member scrapes: its share and the targets it warms.
			s := a.ScrapeShare(req.job, req.member)
			if req.ownShare(view.Identity) {
				h.relay.keepShare(r, req, s)
			}
			writeShare(w, r, s)
		}
	case routeShares:
		h.answerShares(w, r, req)
	}
}

// notMember answers a request about the shares of a collector_id that is no
// member of the allocation.
func notMember(w http.ResponseWriter, member string) {
	w.Header().Set(MemberHeader, "false")
	httpError(w, http.StatusNotFound, "unknown collector_id %q: not a member of the group", member)
}

// memberTargets is one member's entry in the answer about every member's
// targets of a job.
type memberTargets struct {
	Link    string            `json:"_link"`
	Targets []json.RawMessage `json:"targets"`
}

// elements is the HTTP SD form of targets, one group per target, for
// encoding/json: their elements as they are, which encoding/json writes
// unchanged (they are compact, with HTML characters escaped).
func elements(targets []shares.Target) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(targets))
	for _, t := range targets {
		out = append(out, json.RawMessage(t.Element))
	}
	return out
}

// chunk is the size of the pieces an answer is written in: an answer is
// written from its targets' elements through a pooled buffer of this size,
// never assembled whole (at 1M targets × 100 members, 100 members asking at
// once would hold 480 MB of assembled answers).
// 256 KB: 19 writes for an answer of 10k targets.
const chunk = 256 << 10

var chunks = sync.Pool{New: func() any { b := make([]byte, 0, chunk); return &b }}

// writeShare answers with a share: 304 if the client holds it, else the
// answer written in chunks.
func writeShare(w http.ResponseWriter, r *http.Request, s *shares.Share) {
	etag, size := s.ETag()
	w.Header().Set("ETag", etag)
	if matches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(size))
	w.Header().Set("Content-Type", "application/json")
	buf := chunks.Get().(*[]byte)
	b := (*buf)[:0]
	s.Pieces(func(p string) {
		if len(b)+len(p) > chunk && len(b) > 0 {
			_, _ = w.Write(b)
			b = b[:0]
		}
		b = append(b, p...)
	})
	_, _ = w.Write(b)
	if cap(b) > chunk {
		b = make([]byte, 0, chunk) // grown by an element larger than a chunk
	}
	*buf = b[:0]
	chunks.Put(buf)
}

// verified reports whether the client presented a verified TLS certificate.
func verified(r *http.Request) bool { return r.TLS != nil && len(r.TLS.VerifiedChains) > 0 }

// writeAnswer writes an encoded answer with its ETag, or 304 Not Modified
// when the request's If-None-Match names that tag.
func writeAnswer(w http.ResponseWriter, r *http.Request, ans shares.Answer) {
	if ans.ETag != "" {
		w.Header().Set("ETag", ans.ETag)
		if matches(r.Header.Get("If-None-Match"), ans.ETag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	writeJSON(w, ans.Body)
}

// matches reports whether an If-None-Match header names etag (weak
// comparison, as RFC 9110 asks for If-None-Match) or is "*".
func matches(ifNoneMatch, etag string) bool {
	for ifNoneMatch != "" {
		var tag string
		tag, ifNoneMatch, _ = strings.Cut(ifNoneMatch, ",")
		tag = strings.TrimSpace(tag)
		if tag == "*" || strings.TrimPrefix(tag, "W/") == strings.TrimPrefix(etag, "W/") {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

func writeValue(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		httpError(w, http.StatusInternalServerError, "encode: %v", err)
		return
	}
	writeJSON(w, buf.Bytes())
}

func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = fmt.Fprintf(w, format+"\n", args...)
}
