package allocatorapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/prometheus/prometheus/config"
	"go.uber.org/zap"
)

// Source is what the handler needs of its replica.
type Source interface {
	// Identity is this replica's name in the group: its collector_id.
	Identity() string
	// Allocation is the allocation to answer from while this replica leads, else nil.
	Allocation() *Allocation
	// LeaderEndpoint is host:port of the leader's API while another replica leads, else "".
	LeaderEndpoint() string
	// Epoch is the leadership epoch as this replica last saw the leader Lease.
	Epoch() int
	// Group describes the group for the status page.
	Group() GroupInfo
}

// Limits bound what a request may ask and what an answer may carry.
const (
	maxQuery        = 2048     // bytes of query string
	maxPath         = 2048     // bytes of escaped path
	maxForwardedLen = 64 << 20 // bytes of a leader's answer relayed by a follower
)

// forwardedHeader marks a request a follower relays, so that it is never
// relayed twice (two replicas that each believe the other leads).
const forwardedHeader = "X-Embedded-Ta-Forwarded"

// StaleHeader marks an answer a follower serves from its last copy because
// no leader answered.
const StaleHeader = "X-Embedded-Ta-Stale"

// EpochHeader carries the leadership epoch (the leader Lease's transition
// count) of the allocation an answer comes from. A follower never relays an
// answer of an older epoch than the Lease shows: a leader that was frozen
// past its lease cannot overwrite its successor's assignment.
const EpochHeader = "X-Embedded-Ta-Epoch"

// Handler serves the allocator API and the status page.
//
// Answers about shares and scrape configs carry an ETag, a hash of the body,
// and a request whose If-None-Match names it gets 304 Not Modified without a
// body. The stock client does not send it; a follower relaying to the leader
// does, for the answers it keeps a copy of, and serves that copy on a 304.
//
// The leader answers from its Allocation. A follower relays each request to
// the leader and remembers the last successful answers about its own share
// (/scrape_configs and its own targets per job). While no leader answers, it
// serves those from that copy and 503 with a reason for everything else, so
// a stock client keeps its jobs and targets; before it ever had a copy, it
// answers an empty share, so that a stock client's startup is not blocked.
type Handler struct {
	src    Source
	client *http.Client
	scheme string
	logger *zap.Logger

	mu      sync.Mutex
	last    map[string]answer // request URI → answer, own share only
	applied int               // the newest epoch relayed
	lease   int               // the Lease's epoch when last checked
}

// NewHandler returns a handler for src; client relays requests to the leader
// over scheme ("http" or "https").
func NewHandler(src Source, client *http.Client, scheme string, logger *zap.Logger) *Handler {
	return &Handler{src: src, client: client, scheme: scheme, logger: logger, last: map[string]answer{}}
}

// request is a parsed, validated API request.
type request struct {
	route     string // "scrape_configs", "jobs", "targets", "page", "targets_page"
	job       string
	collector string
	all       bool // targets of every collector
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		httpError(w, http.StatusMethodNotAllowed, "method %s not allowed", r.Method)
		return
	}
	req, status, err := parse(r)
	if err != nil {
		httpError(w, status, "%v", err)
		return
	}
	if a := h.src.Allocation(); a != nil {
		w.Header().Set(EpochHeader, strconv.Itoa(a.Epoch))
		h.answer(w, r, req, a)
		return
	}
	// Not the leader, or a leader between two terms: ask the leader.
	if r.Header.Get(forwardedHeader) != "" {
		httpError(w, http.StatusServiceUnavailable, "%s does not lead its group", h.src.Identity())
		return
	}
	h.relay(w, r, req)
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
	switch path {
	case "/", "":
		return request{route: "page"}, 0, nil
	case "/targets":
		return request{route: "targets_page"}, 0, nil
	case "/scrape_configs":
		return request{route: "scrape_configs"}, 0, nil
	case "/jobs":
		return request{route: "jobs"}, 0, nil
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
	req := request{route: "targets", job: name}
	ids, has := query["collector_id"]
	switch {
	case !has:
		req.all = true
	case len(ids) != 1 || ids[0] == "":
		return request{}, http.StatusBadRequest, errors.New("collector_id must be given once and not be empty")
	default:
		req.collector = ids[0]
	}
	return req, 0, nil
}

// answer serves req from the leader's allocation.
func (h *Handler) answer(w http.ResponseWriter, r *http.Request, req request, a *Allocation) {
	switch req.route {
	case "page":
		h.page(w, a)
	case "targets_page":
		h.targetsPage(w, a)
	case "scrape_configs":
		ans := a.scrapeConfigs(verified(r)) // a verified client certificate sees secrets
		h.keep(r, req, ans)
		writeAnswer(w, r, ans)
	case "jobs":
		links := make(map[string]map[string]string, len(a.Jobs()))
		for _, name := range a.Jobs() {
			links[name] = map[string]string{"_link": jobLink(name)}
		}
		writeValue(w, links)
	case "targets":
		switch {
		case a.Pending:
			h.fallback(w, r, req, errors.New("the leader has not discovered its targets yet"))
		case !a.HasJob(req.job):
			httpError(w, http.StatusNotFound, "unknown job %q", req.job)
		case req.all:
			out := make(map[string]any, len(a.Members))
			for _, m := range a.Members {
				out[m] = collectorTargets{Link: jobLink(req.job) + "?collector_id=" + url.QueryEscape(m), Targets: groups(a.Targets(req.job, m))}
			}
			writeValue(w, out)
		case !a.IsMember(req.collector):
			httpError(w, http.StatusNotFound, "unknown collector_id %q: not a member of the group", req.collector)
		default:
			h.writeShare(w, r, req, a.shareOf(req.job, req.collector))
		}
	}
}

// chunk is the size of the pieces an answer is written in: an answer is
// written from its targets' elements through a pooled buffer of this size,
// never assembled whole (at 1M targets × 100 members, 100 members asking at
// once would hold 480 MB of assembled answers).
// 256 KB: 19 writes for an answer of 10k targets.
const chunk = 256 << 10

var chunks = sync.Pool{New: func() any { b := make([]byte, 0, chunk); return &b }}

// writeShare answers with a share: 304 if the client holds it, else the
// answer written in chunks. This replica's own share is kept.
func (h *Handler) writeShare(w http.ResponseWriter, r *http.Request, req request, s *Share) {
	etag, size := s.tag()
	if h.ownShare(req) {
		if kept, ok := h.kept(r, req); !ok || kept.etag != etag {
			h.keep(r, req, answer{body: s.body(), etag: etag})
		}
	}
	w.Header().Set("ETag", etag)
	if matches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(size))
	w.Header().Set("Content-Type", "application/json")
	buf := chunks.Get().(*[]byte)
	b := (*buf)[:0]
	s.pieces(func(p string) {
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

type collectorTargets struct {
	Link    string            `json:"_link"`
	Targets []json.RawMessage `json:"targets"`
}

func jobLink(name string) string { return "/jobs/" + url.QueryEscape(name) + "/targets" }

// ownShare reports whether req asks for this replica's own share, which a
// follower keeps a copy of.
func (h *Handler) ownShare(req request) bool {
	return req.route == "scrape_configs" || (req.route == "targets" && req.collector == h.src.Identity())
}

// keep remembers an answer about this replica's own share, whoever gave it:
// a leader that loses its term (an API-server outage) serves from it too.
func (h *Handler) keep(r *http.Request, req request, ans answer) {
	if !h.ownShare(req) {
		return
	}
	h.mu.Lock()
	h.last[copyKey(r)] = ans
	h.mu.Unlock()
}

// kept returns the last copy of an answer about this replica's own share.
func (h *Handler) kept(r *http.Request, req request) (answer, bool) {
	if !h.ownShare(req) {
		return answer{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ans, ok := h.last[copyKey(r)]
	return ans, ok
}

// copyKey keys the last copy by request and by whether the client may see
// secrets, so that a copy with secret values never reaches a plain client.
func copyKey(r *http.Request) string {
	if verified(r) {
		return r.URL.RequestURI() + "\x00secret"
	}
	return r.URL.RequestURI()
}

// verified reports whether the client presented a verified TLS certificate.
func verified(r *http.Request) bool { return r.TLS != nil && len(r.TLS.VerifiedChains) > 0 }

// relay forwards req to the leader, falling back to the last copy.
func (h *Handler) relay(w http.ResponseWriter, r *http.Request, req request) {
	leader := h.src.LeaderEndpoint()
	if leader == "" {
		h.fallback(w, r, req, errors.New("the group has no leader"))
		return
	}
	// Ask for the answer only if it differs from the copy this replica
	// holds; without a copy, pass the client's condition on.
	copied, haveCopy := h.kept(r, req)
	condition := r.Header.Get("If-None-Match")
	if haveCopy && copied.etag != "" {
		condition = copied.etag
	}
	status, header, body, err := h.forward(r, leader, condition)
	if err == nil {
		err = h.current(header)
	}
	if err == nil && status == http.StatusOK && h.ownShare(req) {
		// A copy is only ever replaced by an answer the receiver can read.
		err = readable(req, body)
	}
	if err != nil {
		h.fallback(w, r, req, err)
		return
	}
	for _, k := range []string{"Content-Type", "Allow", EpochHeader} {
		if v := header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	switch {
	case status == http.StatusNotModified && haveCopy && copied.etag != "":
		writeAnswer(w, r, copied) // the leader confirmed the copy
	case status == http.StatusOK && h.ownShare(req):
		ans := answer{body: body, etag: header.Get("ETag")}
		h.keep(r, req, ans)
		writeAnswer(w, r, ans)
	default:
		if v := header.Get("ETag"); v != "" {
			w.Header().Set("ETag", v)
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}
}

// readable checks that an answer about the own share reads as the stock
// prometheus receiver reads it: scrape configs as YAML (JSON is YAML) into
// Prometheus scrape configs, targets as HTTP SD target groups.
func readable(req request, body []byte) error {
	if req.route == "scrape_configs" {
		var configs map[string]*config.ScrapeConfig
		if err := yaml.Unmarshal(body, &configs); err != nil {
			return fmt.Errorf("the leader's scrape configs do not parse: %w", err)
		}
		for job, sc := range configs {
			if sc == nil {
				return fmt.Errorf("the leader's scrape configs have none for job %q", job)
			}
		}
		return nil
	}
	var groups []TargetGroup
	if err := json.Unmarshal(body, &groups); err != nil {
		return fmt.Errorf("the leader's targets do not parse: %w", err)
	}
	return nil
}

// current checks that an answer is of the epoch the Lease shows, or newer,
// and not older than an answer this replica already relayed: a follower
// whose view of the Lease lags never goes back to a deposed leader's
// assignment. Epochs only grow, unless the Lease is deleted and made anew.
func (h *Handler) current(header http.Header) error {
	v := header.Get(EpochHeader)
	if v == "" {
		return nil // not from an allocation: an error page, say
	}
	epoch, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("bad %s %q from the leader", EpochHeader, v)
	}
	lease := h.src.Epoch()
	if epoch < lease {
		return fmt.Errorf("stale leader: its answer is of epoch %d, the Lease is at %d", epoch, lease)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if lease < h.lease {
		h.applied = lease // the Lease was deleted and made anew: epochs count again
	}
	h.lease = lease
	if epoch < h.applied {
		return fmt.Errorf("stale leader: its answer is of epoch %d, this replica already relayed epoch %d", epoch, h.applied)
	}
	h.applied = max(h.applied, epoch)
	return nil
}

func (h *Handler) forward(r *http.Request, leader, ifNoneMatch string) (int, http.Header, []byte, error) {
	u := url.URL{Scheme: h.scheme, Host: leader, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	out, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, nil, nil, err
	}
	out.Header.Set(forwardedHeader, h.src.Identity())
	if ifNoneMatch != "" {
		out.Header.Set("If-None-Match", ifNoneMatch)
	}
	resp, err := h.client.Do(out)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("ask leader at %s: %w", leader, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardedLen+1))
	switch {
	case err != nil:
		return 0, nil, nil, fmt.Errorf("read leader's answer from %s: %w", leader, err)
	case len(body) > maxForwardedLen:
		return 0, nil, nil, fmt.Errorf("leader's answer from %s exceeds %d bytes", leader, maxForwardedLen)
	case resp.StatusCode >= 500:
		return 0, nil, nil, fmt.Errorf("leader at %s answered %s: %s", leader, resp.Status, bytes.TrimSpace(body))
	}
	return resp.StatusCode, resp.Header, body, nil
}

// fallback answers when no leader does: the own share from the last copy,
// an empty own share before there ever was one, 503 for anything else.
func (h *Handler) fallback(w http.ResponseWriter, r *http.Request, req request, cause error) {
	if !h.ownShare(req) {
		httpError(w, http.StatusServiceUnavailable, "no leader answers: %v", cause)
		return
	}
	if ans, ok := h.kept(r, req); ok {
		w.Header().Set(StaleHeader, "true")
		writeAnswer(w, r, ans)
		return
	}
	h.logger.Debug("No leader answers and no copy yet: answering an empty share", zap.Error(cause))
	if req.route == "scrape_configs" {
		writeJSON(w, []byte("{}\n"))
	} else {
		writeJSON(w, []byte("[]\n"))
	}
}

// writeAnswer writes an encoded answer with its ETag, or 304 Not Modified
// when the request's If-None-Match names that tag.
func writeAnswer(w http.ResponseWriter, r *http.Request, ans answer) {
	if ans.etag != "" {
		w.Header().Set("ETag", ans.etag)
		if matches(r.Header.Get("If-None-Match"), ans.etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	writeJSON(w, ans.body)
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

func httpError(w http.ResponseWriter, status int, format string, args ...any) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, format+"\n", args...)
}

// GroupInfo describes the group on the status page.
type GroupInfo struct {
	Identity       string
	Group          string
	Namespace      string
	Leader         string
	Epoch          int
	LeaseRenewTime time.Time
	LeaseDuration  string
	Members        []MemberInfo
}

// MemberInfo is one member on the status page.
type MemberInfo struct {
	Identity, Endpoint, Node, LeaseAge string
}
