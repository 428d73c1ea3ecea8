package allocatorapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/report"
)

// reportingSource is a leader that takes reports.
type reportingSource struct {
	source
	mu      sync.Mutex
	reports []report.Report
	refuse  error
}

func (s *reportingSource) TakeReport(_ context.Context, r report.Report) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse != nil {
		return s.refuse
	}
	s.reports = append(s.reports, r)
	return nil
}

func post(h http.Handler, method, target, body string) *http.Response {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, strings.NewReader(body)))
	return rec.Result()
}

// The leader takes a member's report: 204; a malformed one gets a 4xx that
// says why, and a non-leader 503.
func TestLeaderTakesReports(t *testing.T) {
	src := &reportingSource{source: source{identity: "c-0", allocation: testAllocation(t)}}
	h := NewHandler(src, http.DefaultClient, "http", zap.NewNop())

	good := `{"member":"c-1","fenced":true,"warm_within":"20s","warm":{"plain":["00000000000000ff"]}}`
	require.Equal(t, http.StatusNoContent, post(h, http.MethodPost, "/report", good).StatusCode)
	require.Len(t, src.reports, 1)
	assert.Equal(t, report.Report{Member: "c-1", Fenced: true, WarmWithin: report.Duration(20 * time.Second), Warm: map[string][]string{"plain": {"00000000000000ff"}}}, src.reports[0])

	for _, tc := range []struct {
		method, target, body string
		code                 int
	}{
		{http.MethodGet, "/report", "", http.StatusMethodNotAllowed},
		{http.MethodPost, "/report?x=1", good, http.StatusBadRequest},
		{http.MethodPost, "/report", `{"member":`, http.StatusBadRequest},
		{http.MethodPost, "/report", `{"member":""}`, http.StatusBadRequest},
		{http.MethodPost, "/report", `{"member":"c-1","warm":{"plain":["nothex"]}}`, http.StatusBadRequest},
		{http.MethodPost, "/report", `{"member":"c-1","warm_within":"forever"}`, http.StatusBadRequest},
		{http.MethodPost, "/report", `{"member":"c-9"}`, http.StatusNotFound},
		{http.MethodPost, "/report", `"` + strings.Repeat("a", report.MaxBytes) + `"`, http.StatusRequestEntityTooLarge},
	} {
		resp := post(h, tc.method, tc.target, tc.body)
		assert.Equal(t, tc.code, resp.StatusCode, "%s %s %.40s", tc.method, tc.target, tc.body)
	}
	assert.Len(t, src.reports, 1, "only the good report was taken")

	src.refuse = errors.New("the term has ended")
	assert.Equal(t, http.StatusServiceUnavailable, post(h, http.MethodPost, "/report", good).StatusCode)

	follower := NewHandler(&source{identity: "c-1"}, http.DefaultClient, "http", zap.NewNop())
	assert.Equal(t, http.StatusServiceUnavailable, post(follower, http.MethodPost, "/report", good).StatusCode)
}

// A follower sends its report to its leader's endpoint; the leader's own
// report goes in-process.
func TestSendReport(t *testing.T) {
	src := &reportingSource{source: source{identity: "c-0", allocation: testAllocation(t)}}
	leader := NewHandler(src, http.DefaultClient, "http", zap.NewNop())
	srv := httptest.NewServer(leader)
	defer srv.Close()
	ctx := context.Background()

	require.NoError(t, leader.SendReport(ctx, report.Report{Member: "c-0", Fenced: true}))
	follower := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(srv.URL, "http://")}, http.DefaultClient, "http", zap.NewNop())
	require.NoError(t, follower.SendReport(ctx, report.Report{Member: "c-1", Leaving: true}))
	assert.Equal(t, []report.Report{{Member: "c-0", Fenced: true}, {Member: "c-1", Leaving: true}}, src.reports)

	err := follower.SendReport(ctx, report.Report{Member: "c-9"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "404")
	assert.Error(t, follower.SendReport(ctx, report.Report{}), "an invalid report is not sent")
	lost := NewHandler(&source{identity: "c-1"}, http.DefaultClient, "http", zap.NewNop())
	assert.Error(t, lost.SendReport(ctx, report.Report{Member: "c-1"}), "no leader")
}

// A member whose share is too large for its series to fit in a report
// still reports the rest: a leaving member's hand-over never waits on its
// series.
func TestSendReportWithoutSeriesThatDoNotFit(t *testing.T) {
	src := &reportingSource{source: source{identity: "c-0", allocation: testAllocation(t)}}
	srv := httptest.NewServer(NewHandler(src, http.DefaultClient, "http", zap.NewNop()))
	defer srv.Close()
	follower := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(srv.URL, "http://")}, http.DefaultClient, "http", zap.NewNop())

	series := map[string]int64{}
	for i := 0; len(series)*20 <= report.MaxBytes; i++ { // 24 bytes a target
		series[fmt.Sprintf("%016x", i)] = 1000
	}
	require.NoError(t, follower.SendReport(context.Background(), report.Report{Member: "c-1", Leaving: true, Series: map[string]map[string]int64{"plain": series}}))
	require.Len(t, src.reports, 1)
	assert.Equal(t, report.Report{Member: "c-1", Leaving: true}, src.reports[0], "leaving reaches the leader, without the series")

	small := map[string]map[string]int64{"plain": {"0000000000000001": 7}}
	require.NoError(t, follower.SendReport(context.Background(), report.Report{Member: "c-1", Series: small}))
	assert.Equal(t, small, src.reports[1].Series, "series that fit are sent")
}
