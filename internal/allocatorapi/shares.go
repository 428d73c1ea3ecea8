package allocatorapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/status"
)

// A member learns of a change of its shares without a poll period:
//
//   - in the member, Shares hands its receiver its own shares, as its API
//     answers them, and a channel that is closed when they may have changed;
//   - between members, a follower's Follow waits at the leader for a change
//     of its shares (GET /shares?collector_id=<identity>&wait=<duration>,
//     with the last answer's ETag in If-None-Match), and relays each share
//     whose ETag changed at once, which replaces its copy.
//
// /shares answers {"<job>": "<ETag of the member's share of job>"} for the
// jobs whose shares the leader answers: one answer a member, however many
// jobs, so a follower holds one waiting request at its leader, not one a job.

// maxWait bounds how long the leader holds a request for /shares, and
// maxWaiting how many it holds at once (one a follower; past that, it
// answers 503 and the follower asks again after its retry period).
const (
	maxWait    = 30 * time.Second
	maxWaiting = 2048
)

// OwnShares are a member's own shares by job: its targets in each job, as
// its API answers them for its own collector_id.
type OwnShares map[string]OwnShare

// OwnShare is a member's own share of one job.
type OwnShare struct {
	// ETag is the answer's entity tag: two answers with the same ETag are
	// the same.
	ETag  string
	share *shares.Share // from the leader's allocation, or
	body  []byte        // from the member's copy
}

// OwnShareOf is the share of an answer about a member's own targets in a job.
func OwnShareOf(ans shares.Answer) OwnShare { return OwnShare{ETag: ans.ETag, body: ans.Body} }

// Targets decodes the share's targets, as HTTP SD target groups.
func (s OwnShare) Targets() ([]httpsd.TargetGroup, error) {
	body := s.body
	if s.share != nil {
		body = s.share.Answer().Body
	}
	var groups []httpsd.TargetGroup
	if err := json.Unmarshal(body, &groups); err != nil {
		return nil, fmt.Errorf("decode share: %w", err)
	}
	return groups, nil
}

// Shares returns this member's own shares, as its API answers them for its
// own collector_id now, and a channel that is closed when they may have
// changed. Whatever it answered its own receiver is in there, or something
// newer: the API keeps its answer (the copy) before it writes it. On the
// leader, a job's share comes from its allocation; otherwise, and for the
// jobs the allocation does not answer, from the copy.
func (h *Handler) Shares() (OwnShares, <-chan struct{}) {
	changed := h.relay.changed.wait()
	own := h.relay.ownCopies()
	identity := h.src.View().Identity
	if a := h.src.Allocation(); a != nil && !a.Pending && a.IsMember(identity) {
		for _, job := range a.Jobs() {
			if a.Reported(job) {
				s := a.ScrapeShare(job, identity)
				etag, _ := s.ETag()
				own[job] = OwnShare{ETag: etag, share: s}
			}
		}
	}
	return own, changed
}

// AllocationChanged tells the handler that the member's allocation, its
// leadership or its leader may have changed.
func (h *Handler) AllocationChanged() {
	h.allocationChanged.fire()
	h.relay.changed.fire()
}

func parseShares(query url.Values) (request, int, error) {
	ids := query["collector_id"]
	if len(ids) != 1 || ids[0] == "" {
		return request{}, http.StatusBadRequest, errors.New("collector_id must be given once and not be empty")
	}
	req := request{route: routeShares, member: ids[0]}
	if waits, ok := query["wait"]; ok {
		d, err := time.ParseDuration(waits[0])
		if len(waits) != 1 || err != nil || d < 0 || d > maxWait {
			return request{}, http.StatusBadRequest, fmt.Errorf("wait must be given once, a duration from 0s to %s", maxWait)
		}
		req.wait = d
	}
	return req, 0, nil
}

// answerShares answers /shares on the leader. With wait and an If-None-Match
// that names the current answer, it answers once the answer changes, or 304
// Not Modified once wait has passed.
func (h *Handler) answerShares(w http.ResponseWriter, r *http.Request, req request) {
	deadline := time.NewTimer(req.wait)
	defer deadline.Stop()
	waiting := false
	for {
		changed := h.allocationChanged.wait()
		a := h.src.Allocation()
		switch {
		case a == nil:
			httpError(w, http.StatusServiceUnavailable, "%s no longer leads", h.src.View().Identity)
			return
		case a.Pending:
			httpError(w, http.StatusServiceUnavailable, "the leader does not know every job yet")
			return
		case !a.IsMember(req.member):
			notMember(w, req.member)
			return
		}
		ans := shareIndex(a, req.member)
		if req.wait == 0 || !matches(r.Header.Get("If-None-Match"), ans.ETag) {
			w.Header().Set(LeaderHeader, a.Leader)
			w.Header().Set(EpochHeader, strconv.Itoa(a.Epoch))
			writeAnswer(w, r, ans)
			return
		}
		if !waiting {
			select {
			case h.waiting <- struct{}{}:
				defer func() { <-h.waiting }()
				waiting = true
			default:
				httpError(w, http.StatusServiceUnavailable, "too busy: %d requests wait for a change", maxWaiting)
				return
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			req.wait = 0 // answer as it is now: 304, or what changed meanwhile
		case <-r.Context().Done():
			return
		}
	}
}

// shareIndex is the /shares answer: the ETag of member's share of each job
// whose shares the allocation answers.
func shareIndex(a *shares.Allocation, member string) shares.Answer {
	index := make(map[string]string, len(a.Jobs()))
	for _, job := range a.Jobs() {
		if a.Reported(job) {
			index[job], _ = a.ScrapeShare(job, member).ETag()
		}
	}
	body, _ := json.Marshal(index) // map[string]string: no error
	body = append(body, '\n')
	return shares.Answer{Body: body, ETag: fmt.Sprintf(`"s%016x"`, xxhash.Sum64(body))}
}

// Follow runs while the member runs. While it follows, it waits at its
// leader for a change of its shares, for at most wait a request, and relays
// the request for each share whose ETag changed, as its receiver would, so
// that its copies (what Shares hands the receiver) follow the allocation
// within a round trip, not at the receiver's next poll. After a failure, or
// while it leads or knows no leader, it looks again after retry or when
// AllocationChanged is called.
func (h *Handler) Follow(ctx context.Context, wait, retry time.Duration) {
	client := *h.relay.o.Client
	if client.Timeout > 0 {
		client.Timeout += wait
	}
	var (
		tag    string // of the last /shares answer whose shares were all relayed
		leader string // leader and epoch tag is of
	)
	for ctx.Err() == nil {
		changed := h.allocationChanged.wait()
		view := h.src.View()
		if h.src.Allocation() != nil || view.LeaderEndpoint == "" || view.Leader == view.Identity {
			Pause(ctx, changed, retry)
			continue
		}
		if term := fmt.Sprintf("%s/%d", view.Leader, view.Epoch); term != leader {
			tag, leader = "", term
		}
		// A change of leader ends the wait at the old one.
		asking, stop := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
				stop()
			case <-asking.Done():
			}
		}()
		index, next, err := h.relay.askShares(asking, &client, view, tag, wait)
		stop()
		switch {
		case errors.Is(err, errNotMember):
			// Relaying its shares lets the relay decide whether it is out:
			// it is when its own Lease is not current either.
			if !view.Joined {
				for job := range h.relay.ownCopies() {
					h.relay.refresh(ctx, view, job)
				}
			}
			Pause(ctx, nil, retry)
		case err != nil:
			if asking.Err() == nil || ctx.Err() != nil {
				h.relay.logger.Debug("Cannot wait at the leader for a change of this member's shares", zap.Error(err))
				Pause(ctx, nil, retry)
			}
		case index != nil:
			if h.relay.refreshAll(ctx, view, index) {
				tag = next
			} else {
				Pause(ctx, nil, retry)
			}
		}
	}
}

// Pause waits for d, ctx or changed (nil: never), whichever comes first.
func Pause(ctx context.Context, changed <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-changed:
	case <-t.C:
	}
}

var errNotMember = errors.New("the leader says this member is none")

// askShares asks the leader for this member's /shares answer, waiting for
// at most wait for one that differs from tag. It returns a nil index when
// the answer is still tag.
func (l *Relay) askShares(ctx context.Context, client *http.Client, view status.View, tag string, wait time.Duration) (map[string]string, string, error) {
	u := url.URL{Path: "/shares", RawQuery: "collector_id=" + url.QueryEscape(view.Identity) + "&wait=" + wait.String()}
	code, header, body, err := l.ask(ctx, leaderTarget{client, l.o.Scheme, view.LeaderEndpoint}, view, u, tag)
	if err == nil {
		err = current(header, view)
	}
	switch {
	case err != nil:
		return nil, "", err
	case code == http.StatusNotModified:
		return nil, tag, nil
	case code == http.StatusNotFound && header.Get(MemberHeader) == "false":
		return nil, "", errNotMember
	case code != http.StatusOK:
		return nil, "", fmt.Errorf("the leader answered %d", code)
	}
	var index map[string]string
	if err := json.Unmarshal(body, &index); err != nil {
		return nil, "", fmt.Errorf("the leader's shares do not parse: %w", err)
	}
	if index == nil {
		index = map[string]string{}
	}
	return index, header.Get("ETag"), nil
}

// refreshAll relays the member's share of each job of index whose copy has
// another ETag, and reports whether every copy has the ETag of index then.
func (l *Relay) refreshAll(ctx context.Context, view status.View, index map[string]string) bool {
	copies := l.ownCopies()
	done := true
	for job, etag := range index {
		if copies[job].ETag == etag {
			continue
		}
		l.refresh(ctx, view, job)
		l.mu.Lock()
		kept := l.copies[copyKey{job: job}]
		l.mu.Unlock()
		done = done && kept.ETag == etag
	}
	return done
}

// refresh relays the request for the member's own share of job, as its
// receiver makes it, and leaves the answer in the copy.
func (l *Relay) refresh(ctx context.Context, view status.View, job string) {
	target := "/jobs/" + url.QueryEscape(job) + "/targets?collector_id=" + url.QueryEscape(view.Identity)
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, target, http.NoBody)
	if err != nil {
		return
	}
	l.serve(discarded{header: http.Header{}}, r, request{route: routeTargets, job: job, member: view.Identity}, view)
}

// discarded is a ResponseWriter that keeps nothing.
type discarded struct{ header http.Header }

func (d discarded) Header() http.Header       { return d.header }
func (discarded) Write(b []byte) (int, error) { return len(b), nil }
func (discarded) WriteHeader(int)             {}
