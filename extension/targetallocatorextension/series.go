package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/leader"
	"github.com/embedded-ta/embedded-ta/internal/report"
)

// What a member measures of its targets reaches its leader this way: the
// receiver's fence hands each scrape's series to Measured; every
// seriesReportInterval, the member sends its leader a report
// (internal/report) of the last series of each target of its share, as
// POST /report at the leader's endpoint, or in-process when it leads; the
// leader keeps the last report of each member and hands them all to its
// term (leader.Config.Series) after each change.

// seriesReportInterval is how often a member reports its series while they
// change.
const seriesReportInterval = 10 * time.Second

// seriesInterval is how often this member reports: seriesReportInterval,
// or its Lease duration if shorter.
func (e *allocatorExtension) seriesInterval() time.Duration {
	return min(seriesReportInterval, e.cfg.Lease.Duration)
}

// reportPath is where a member posts its report to its leader.
const reportPath = "/report"

// seriesBook is what a member measured: the last series of each target,
// by job and target key.
type seriesBook struct {
	mu     sync.Mutex
	series map[string]map[string]int64
	dirty  bool
}

// Measured implements Group.
func (e *allocatorExtension) Measured(job, target string, series int64) {
	b := &e.measured
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.series == nil {
		b.series = map[string]map[string]int64{}
	}
	byKey := b.series[job]
	if byKey == nil {
		byKey = map[string]int64{}
		b.series[job] = byKey
	}
	if was, ok := byKey[target]; !ok || was != series {
		byKey[target] = series
		b.dirty = true
	}
}

// take returns a copy of what the book holds of the targets of own
// share, forgetting the others, and whether it changed since the last take.
func (b *seriesBook) take(own Shares) (map[string]map[string]int64, bool) {
	held := map[string]map[string]bool{}
	for job, s := range own {
		groups, err := s.Targets()
		if err != nil {
			continue
		}
		held[job] = map[string]bool{}
		for _, key := range shareKeys(groups) {
			held[job][key] = true
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]map[string]int64, len(b.series))
	for job, byKey := range b.series {
		for key := range byKey {
			if !held[job][key] {
				delete(byKey, key)
				b.dirty = true
			}
		}
		if len(byKey) == 0 {
			delete(b.series, job)
			continue
		}
		out[job] = maps.Clone(byKey)
	}
	dirty := b.dirty
	b.dirty = false
	return out, dirty
}

// reportSeries runs while the member runs: it reports its series to its
// leader when they changed, and to each new leader.
func (e *allocatorExtension) reportSeries(ctx context.Context, client *http.Client, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var sentTo string // the leader and epoch the last report went to
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if e.api == nil {
			continue
		}
		own, _ := e.Shares()
		series, changed := e.measured.take(own)
		view := e.View()
		term := fmt.Sprintf("%s/%d", view.Leader, view.Epoch)
		if view.Leader == "" || !changed && term == sentTo {
			continue
		}
		rep := report.Report{Member: e.s.identity, Series: series}
		var err error
		if view.IsLeader {
			e.takeSeries(rep)
		} else {
			err = e.postReport(ctx, client, view.LeaderEndpoint, rep)
		}
		if err != nil {
			e.set.Logger.Debug("Cannot report series to the leader", zap.Error(err))
			e.measured.mu.Lock()
			e.measured.dirty = true // again at the next tick
			e.measured.mu.Unlock()
			continue
		}
		sentTo = term
	}
}

func (e *allocatorExtension) postReport(ctx context.Context, client *http.Client, endpoint string, rep report.Report) error {
	if endpoint == "" {
		return fmt.Errorf("the leader's endpoint is not known")
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Client.Timeout+time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.scheme()+"://"+endpoint+reportPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("POST %s: %s: %s", reportPath, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// answerReport takes a member's report on the leader: 204; 400 to one that
// does not parse or whose values are wrong; 404 to a member the allocation
// does not have; 503 when this member does not lead.
func (e *allocatorExtension) answerReport(w http.ResponseWriter, r *http.Request) {
	rep, err := report.Decode(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a := e.Allocation()
	switch {
	case a == nil:
		http.Error(w, e.s.identity+" does not lead", http.StatusServiceUnavailable)
		return
	case !a.IsMember(rep.Member):
		http.Error(w, fmt.Sprintf("%q is no member", rep.Member), http.StatusNotFound)
		return
	}
	e.takeSeries(rep)
	w.WriteHeader(http.StatusNoContent)
}

// seriesReports are the last reports of the members, on the leader.
type seriesReports struct {
	mu     sync.Mutex
	series leader.Series
	// term takes them while this member leads: one pending delivery at
	// most, the latest.
	term chan leader.Series
}

// takeSeries keeps a member's report and hands all of them to the term.
func (e *allocatorExtension) takeSeries(rep report.Report) {
	s := &e.seriesReports
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.series == nil {
		s.series = leader.Series{}
	}
	s.series[rep.Member] = rep.Series
	if s.series[rep.Member] == nil {
		s.series[rep.Member] = map[string]map[string]int64{}
	}
	s.deliver()
}

// deliver hands the term the reports of the current members, replacing
// any delivery it has not taken yet. The caller holds mu.
func (s *seriesReports) deliver() {
	if s.term == nil {
		return
	}
	select {
	case <-s.term:
	default:
	}
	s.term <- maps.Clone(s.series)
}

// forget drops the reports of those that are no members.
func (s *seriesReports) forget(isMember func(string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.DeleteFunc(s.series, func(m string, _ map[string]map[string]int64) bool { return !isMember(m) })
}

// startTerm returns the channel a term reads the reports from, holding
// those kept so far.
func (s *seriesReports) startTerm() <-chan leader.Series {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.term = make(chan leader.Series, 1)
	if len(s.series) > 0 {
		s.deliver()
	}
	return s.term
}

func (s *seriesReports) endTerm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.term = nil
}

// shareKeys are the keys of a share's targets (report.TargetKey), of the
// labels the stock receiver's HTTP SD gives each: its group's labels and
// its address, as the receiver's fence computes them.
func shareKeys(groups []httpsd.TargetGroup) []string {
	var out []string
	for _, g := range groups {
		for _, address := range g.Targets {
			ls := maps.Clone(g.Labels)
			if ls == nil {
				ls = map[string]string{}
			}
			ls[model.AddressLabel] = address
			out = append(out, report.TargetKey(labels.FromMap(ls)))
		}
	}
	return out
}
