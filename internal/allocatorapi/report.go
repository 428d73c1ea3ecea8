package allocatorapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/report"
)

// Reporter is what a Source may also be: a leader that takes its members'
// reports (internal/report).
type Reporter interface {
	// TakeReport hands a member's report to the leader's term; an error
	// means the term cannot take it now.
	TakeReport(ctx context.Context, r report.Report) error
}

// ReportPath is where a follower sends its report to its leader:
// POST /report, a report.Report as JSON. The leader answers 204; 400 to a
// report that does not parse or whose values are wrong, 413 to one larger
// than report.MaxBytes, 404 to a member it does not know, 503 when it does
// not lead.
const ReportPath = "/report"

// answerReport takes a member's report on the leader.
func (h *Handler) answerReport(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		httpError(w, http.StatusMethodNotAllowed, "method %s not allowed: POST a report", r.Method)
		return
	}
	if r.URL.RawQuery != "" {
		httpError(w, http.StatusBadRequest, "%s takes no query parameter", ReportPath)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, report.MaxBytes+1))
	switch {
	case err != nil:
		httpError(w, http.StatusBadRequest, "read report: %v", err)
		return
	case len(body) > report.MaxBytes:
		httpError(w, http.StatusRequestEntityTooLarge, "report larger than %d bytes", report.MaxBytes)
		return
	}
	rep, err := report.Decode(bytes.NewReader(body))
	if err != nil {
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	a := h.src.Allocation()
	reporter, ok := h.src.(Reporter)
	switch {
	case a == nil || !ok:
		httpError(w, http.StatusServiceUnavailable, "%s does not lead", h.src.View().Identity)
		return
	case !a.IsMember(rep.Member):
		notMember(w, rep.Member)
		return
	}
	if err := reporter.TakeReport(r.Context(), rep); err != nil {
		httpError(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// SendReport hands this member's report to its leader: in-process when it
// leads, else as POST /report at the leader's endpoint.
func (h *Handler) SendReport(ctx context.Context, rep report.Report) error {
	if err := rep.Validate(); err != nil {
		return err
	}
	view := h.src.View()
	if h.src.Allocation() != nil {
		reporter, ok := h.src.(Reporter)
		if !ok {
			return errors.New("this member takes no reports")
		}
		return reporter.TakeReport(ctx, rep)
	}
	if view.LeaderEndpoint == "" || view.Leader == view.Identity {
		return errors.New("no leader to report to")
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if len(body) > report.MaxBytes && rep.Series != nil {
		// The series of a share this large do not fit in a report; the
		// rest of it (first scrapes, leaving) must reach the leader, which
		// weighs this member's targets as the average then.
		if !h.seriesOmitted.Swap(true) {
			h.relay.logger.Warn("This member's series do not fit in a report: it reports without them, and the leader weighs its targets as the average",
				zap.Int("bytes", len(body)), zap.Int("max_bytes", report.MaxBytes))
		}
		rep.Series = nil
		if body, err = json.Marshal(rep); err != nil {
			return err
		}
	}
	if len(body) > report.MaxBytes && rep.Held != nil {
		// Nor do the targets it holds: a new leader then places them as a
		// fresh allocation would, moving some at once.
		if !h.heldOmitted.Swap(true) {
			h.relay.logger.Warn("The targets this member holds do not fit in a report: a new leader places them without it",
				zap.Int("bytes", len(body)), zap.Int("max_bytes", report.MaxBytes))
		}
		rep.Held = nil
		if body, err = json.Marshal(rep); err != nil {
			return err
		}
	}
	u := h.relay.o.Scheme + "://" + view.LeaderEndpoint + ReportPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forwardedHeader, view.Identity)
	resp, err := h.relay.o.Client.Do(req)
	if err != nil {
		return fmt.Errorf("report to the leader at %s: %w", view.LeaderEndpoint, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("report to the leader at %s: %s: %s", view.LeaderEndpoint, strconv.Itoa(resp.StatusCode), strings.TrimSpace(string(msg)))
	}
	return nil
}
