package allocatorapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/goccy/go-yaml"
	"github.com/prometheus/prometheus/config"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/status"
)

// maxRelayed bounds a leader's answer that a follower relays, in bytes, and
// maxRelaying the requests it relays at once: a follower holds at most
// maxRelaying × maxRelayed bytes of answers. Past that, it answers from its
// copies, as when no leader answers.
const (
	maxRelayed  = 64 << 20
	maxRelaying = 8
)

// forwardedHeader marks a request a follower relays, so that it is never
// relayed twice (two members that each believe the other leads).
const forwardedHeader = "X-Embedded-Ta-Forwarded"

// StaleHeader marks an answer a member serves from its copy because no
// leader answered.
const StaleHeader = "X-Embedded-Ta-Stale"

// Relay is a follower's side of the API. It relays each request to the
// leader and keeps a copy of the last answers about its member's own share
// (/scrape_configs and its targets per job), replaced only by an answer the
// receiver can read and of a current epoch. While no leader answers, it
// serves those from the copy and 503 with a reason for everything else, so a
// stock client keeps its jobs and targets; before it ever had a copy, it
// answers an empty share, so that a stock client's startup is not blocked.
type Relay struct {
	o      Options
	logger *zap.Logger

	relaying chan struct{} // a slot per request being relayed
	// out is true while the leader says this member is none.
	out atomic.Bool
	// refreshing orders the relays of the member's own shares: one relay of
	// a job's share at a time (a stripe of jobs), so that a copy is only ever
	// replaced by an answer the leader gave later, never by the answer of a
	// request that was overtaken.
	refreshing [64]sync.Mutex
	// changed fires when the copy of a share changes.
	changed signal

	mu     sync.Mutex
	copies map[copyKey]shares.Answer
}

func newRelay(o Options) *Relay {
	return &Relay{o: o, logger: o.Logger, relaying: make(chan struct{}, maxRelaying), copies: map[copyKey]shares.Answer{}}
}

// maySee reports whether the client of r may see secret values: it
// presented a verified TLS certificate, or everyone may.
func (l *Relay) maySee(r *http.Request) bool { return l.o.InsecureSecrets || verified(r) }

// leaderTarget is where a follower asks its leader, and with which client.
type leaderTarget struct {
	client       *http.Client
	scheme, host string
}

// target is where to ask the leader what r asks: its https listener when
// the client of r may see secret values and the endpoint would not show
// them to this member, else its endpoint.
func (l *Relay) target(r *http.Request, view status.View) (leaderTarget, error) {
	if l.o.HTTPSClient == nil || l.o.EndpointShowsSecrets || !l.maySee(r) {
		return leaderTarget{l.o.Client, l.o.Scheme, view.LeaderEndpoint}, nil
	}
	host, _, err := net.SplitHostPort(view.LeaderEndpoint)
	if err != nil {
		return leaderTarget{}, fmt.Errorf("the leader's endpoint %q: %w", view.LeaderEndpoint, err)
	}
	return leaderTarget{l.o.HTTPSClient, "https", net.JoinHostPort(host, l.o.HTTPSPort)}, nil
}

// copyKey names a copy: the scrape configs (job "") or the member's share of
// a job, and, for the scrape configs, whether the client may see secrets, so
// that a copy with secret values never reaches a client that may not. A
// share's answer is the same for every client: there is one copy a job at
// most.
type copyKey struct {
	job    string
	secret bool
}

func (l *Relay) keyOf(r *http.Request, req request) copyKey {
	return copyKey{job: req.job, secret: req.route == routeScrapeConfigs && l.maySee(r)}
}

// keep remembers an answer about the member's own share, whoever gave it.
func (l *Relay) keep(r *http.Request, req request, ans shares.Answer) {
	key := l.keyOf(r, req)
	l.mu.Lock()
	kept, had := l.copies[key]
	l.copies[key] = ans
	l.mu.Unlock()
	if key.job != "" && (!had || kept.ETag != ans.ETag || ans.ETag == "") {
		l.changed.fire()
	}
}

// lockShare holds the relays of the member's own share of job until the
// returned function is called.
func (l *Relay) lockShare(job string) func() {
	mu := &l.refreshing[xxhash.Sum64String(job)%uint64(len(l.refreshing))]
	mu.Lock()
	return mu.Unlock
}

// ownCopies returns the copies of the member's own shares.
func (l *Relay) ownCopies() OwnShares {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(OwnShares, len(l.copies))
	for k, ans := range l.copies {
		if k.job != "" {
			out[k.job] = OwnShareOf(ans)
		}
	}
	return out
}

// keepScrapeConfigs keeps the scrape configs of jobs, and forgets the copies
// of the member's shares of jobs that are gone.
// The leader calls it on every request for its scrape configs: an answer the
// copy holds already changes nothing.
func (l *Relay) keepScrapeConfigs(r *http.Request, req request, ans shares.Answer, jobs []string) {
	key := l.keyOf(r, req)
	l.mu.Lock()
	defer l.mu.Unlock()
	if kept, ok := l.copies[key]; ok && kept.ETag != "" && kept.ETag == ans.ETag {
		return
	}
	l.copies[key] = ans
	configured := make(map[string]bool, len(jobs))
	for _, job := range jobs {
		configured[job] = true
	}
	forgot := false
	for k := range l.copies {
		if k.job != "" && !configured[k.job] {
			delete(l.copies, k)
			forgot = true
		}
	}
	if forgot {
		l.changed.fire()
	}
}

// keepShare keeps a share's answer unless the copy already holds it.
func (l *Relay) keepShare(r *http.Request, req request, s *shares.Share) {
	etag, _ := s.ETag()
	if kept, ok := l.copy(r, req); !ok || kept.ETag != etag {
		l.keep(r, req, s.Answer())
	}
}

// forget drops the copy of an answer about the member's own share.
func (l *Relay) forget(r *http.Request, req request) {
	l.mu.Lock()
	delete(l.copies, l.keyOf(r, req))
	l.mu.Unlock()
}

// forgetShares drops the copies of the member's shares; those of the scrape
// configs stay.
func (l *Relay) forgetShares() {
	l.mu.Lock()
	for k := range l.copies {
		if k.job != "" {
			delete(l.copies, k)
		}
	}
	l.mu.Unlock()
}

// copy returns the copy of an answer about the member's own share.
func (l *Relay) copy(r *http.Request, req request) (shares.Answer, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ans, ok := l.copies[l.keyOf(r, req)]
	return ans, ok
}

// serve forwards req to the leader, falling back to the copy.
func (l *Relay) serve(w http.ResponseWriter, r *http.Request, req request, view status.View) {
	if r.Header.Get(forwardedHeader) != "" {
		httpError(w, http.StatusServiceUnavailable, "%s does not lead its group", view.Identity)
		return
	}
	if view.LeaderEndpoint == "" || view.Leader == view.Identity {
		// No leader, or the last record names this member: nobody to ask.
		l.fallback(w, r, req, view, "no leader answers: the group has no leader")
		return
	}
	own := req.ownShare(view.Identity)
	if own && req.route == routeTargets {
		defer l.lockShare(req.job)()
	}
	select {
	case l.relaying <- struct{}{}:
		defer func() { <-l.relaying }()
	default:
		l.fallback(w, r, req, view, fmt.Sprintf("too busy: %d requests are being relayed to the leader", maxRelaying))
		return
	}
	// Ask for the answer only if it differs from the copy; without a copy,
	// pass the client's condition on.
	copied, haveCopy := l.copy(r, req)
	haveCopy = own && haveCopy && copied.ETag != ""
	condition := r.Header.Get("If-None-Match")
	if haveCopy {
		condition = copied.ETag
	}
	to, err := l.target(r, view)
	if err != nil {
		l.fallback(w, r, req, view, "no leader answers: "+err.Error())
		return
	}
	query := r.URL.RawQuery
	if req.route == routeShares {
		query = "collector_id=" + url.QueryEscape(req.member) // only a leader waits
	}
	code, header, body, err := l.forward(r, to, view, condition, query)
	if err == nil {
		err = current(header, view)
	}
	var jobs []string
	if err == nil && code == http.StatusOK && own {
		jobs, err = readable(req, body) // a copy is only ever replaced by an answer the receiver can read
	}
	if err != nil {
		l.fallback(w, r, req, view, "no leader answers: "+err.Error())
		return
	}
	ok := code == http.StatusOK && own && req.route == routeTargets
	noJob, noMember := ok && header.Get(JobHeader) == "false", ok && header.Get(MemberHeader) == "false"
	if noMember && !noJob && view.Joined {
		// The leader does not count this member, whose Lease is current: it
		// is joining, or the leader has not seen its renewal yet. Its share
		// is what it was, as Prometheus HTTP SD keeps its targets when an
		// answer fails.
		l.fallback(w, r, req, view, "the leader does not count this member yet")
		return
	}
	for _, k := range []string{"Content-Type", "Allow", GroupHeader, LeaderHeader, EpochHeader, MemberHeader, JobHeader} {
		if v := header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	switch {
	case noJob:
		// No such job: no share to keep, and the copy of a job that is gone
		// goes.
		l.forget(r, req)
		writeJSON(w, body)
	case noMember:
		// This member could not renew its Lease, and the leader has given
		// its targets to the others: it is no member, and stops its shares
		// as theirs start, every one of them, also while no leader answers.
		// It answers them again once it has rejoined.
		ans := shares.Answer{Body: []byte("[]\n"), ETag: `"not-a-member"`}
		if !l.out.Swap(true) {
			l.forgetShares()
			l.logger.Warn("This member's Lease expired and the leader gave its targets to the others: its shares are empty until it rejoins")
		}
		l.keep(r, req, ans)
		writeAnswer(w, r, ans)
	case code == http.StatusNotModified && haveCopy:
		writeAnswer(w, r, copied) // the leader confirmed the copy
	case code == http.StatusOK && own:
		// The leader answers anyone its scrape configs: only a share says
		// that this member is one again.
		if req.route == routeTargets && l.out.Swap(false) {
			l.logger.Info("This member is a member again: it answers its shares")
		}
		ans := shares.Answer{Body: body, ETag: header.Get("ETag")}
		if req.route == routeScrapeConfigs {
			l.keepScrapeConfigs(r, req, ans, jobs)
		} else {
			l.keep(r, req, ans)
		}
		writeAnswer(w, r, ans)
	default:
		if v := header.Get("ETag"); v != "" {
			w.Header().Set("ETag", v)
		}
		w.WriteHeader(code)
		_, _ = w.Write(body)
	}
}

// readable checks that an answer about the own share reads as the stock
// prometheus receiver reads it: scrape configs as YAML (JSON is YAML) into
// Prometheus scrape configs, targets as HTTP SD target groups. It returns the
// jobs of scrape configs.
func readable(req request, body []byte) ([]string, error) {
	if req.route == routeScrapeConfigs {
		var configs map[string]*config.ScrapeConfig
		if err := yaml.Unmarshal(body, &configs); err != nil {
			return nil, fmt.Errorf("the leader's scrape configs do not parse: %w", err)
		}
		for job, sc := range configs {
			if sc == nil {
				return nil, fmt.Errorf("the leader's scrape configs have none for job %q", job)
			}
		}
		return slices.Collect(maps.Keys(configs)), nil
	}
	var groups []httpsd.TargetGroup
	if err := json.Unmarshal(body, &groups); err != nil {
		return nil, fmt.Errorf("the leader's targets do not parse: %w", err)
	}
	return nil, nil
}

// current checks that an answer comes from the group, leader and epoch the
// Lease shows, as this member last saw it. Anything else (no such headers:
// not a leader's answer; another group; a deposed leader, even one that took
// the Lease again under the same identity, which is a new epoch) is refused.
func current(header http.Header, view status.View) error {
	group, leader, epoch := header.Get(GroupHeader), header.Get(LeaderHeader), header.Get(EpochHeader)
	switch {
	case group == "" || leader == "" || epoch == "":
		return errors.New("the answer names no group, leader and epoch: it is not a leader's")
	case group != view.Group:
		return fmt.Errorf("the answer is of group %q, not %q", group, view.Group)
	case leader != view.Leader || epoch != strconv.Itoa(view.Epoch):
		return fmt.Errorf("stale leader: the answer is of %s at epoch %s, the Lease names %s at epoch %d", leader, epoch, view.Leader, view.Epoch)
	}
	return nil
}

func (l *Relay) forward(r *http.Request, to leaderTarget, view status.View, ifNoneMatch, query string) (int, http.Header, []byte, error) {
	u := url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: query}
	return l.ask(r.Context(), to, view, u, ifNoneMatch)
}

// ask sends the leader a request for u (path and query) on behalf of this
// member, to the target to.
func (l *Relay) ask(ctx context.Context, to leaderTarget, view status.View, u url.URL, ifNoneMatch string) (int, http.Header, []byte, error) {
	leader := to.host
	u.Scheme, u.Host = to.scheme, leader
	out, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, nil, nil, err
	}
	out.Header.Set(forwardedHeader, view.Identity)
	if ifNoneMatch != "" {
		out.Header.Set("If-None-Match", ifNoneMatch)
	}
	resp, err := to.client.Do(out)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("ask leader at %s: %w", leader, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRelayed+1))
	switch {
	case err != nil:
		return 0, nil, nil, fmt.Errorf("read leader's answer from %s: %w", leader, err)
	case len(body) > maxRelayed:
		return 0, nil, nil, fmt.Errorf("leader's answer from %s exceeds %d bytes", leader, maxRelayed)
	case resp.StatusCode >= 500:
		return 0, nil, nil, fmt.Errorf("leader at %s answered %s: %s", leader, resp.Status, bytes.TrimSpace(body))
	}
	return resp.StatusCode, resp.Header, body, nil
}

// fallback answers when no leader can, for reason: the own share from the
// copy, an empty own share before there ever was one, 503 for anything else.
func (l *Relay) fallback(w http.ResponseWriter, r *http.Request, req request, view status.View, reason string) {
	// A copy is this member's own: a follower relaying its request gets none
	// (it would take an empty answer for its leader's), and falls back to its own.
	if req.route == routePage && r.Header.Get(forwardedHeader) == "" {
		// A person looks at the page: this member's view, and why.
		status.WriteFollowerPage(w, view, reason)
		return
	}
	if !req.ownShare(view.Identity) || r.Header.Get(forwardedHeader) != "" {
		httpError(w, http.StatusServiceUnavailable, "%s", reason)
		return
	}
	if ans, ok := l.copy(r, req); ok {
		w.Header().Set(StaleHeader, "true")
		writeAnswer(w, r, ans)
		return
	}
	l.logger.Debug("No copy yet: answering an empty share", zap.String("reason", reason))
	if req.route == routeScrapeConfigs {
		writeJSON(w, []byte("{}\n"))
	} else {
		writeJSON(w, []byte("[]\n"))
	}
}
