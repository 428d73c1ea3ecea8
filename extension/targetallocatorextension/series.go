package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"maps"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/leader"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// What a member measures of its targets reaches its leader this way: the
// receiver's fence hands each scrape's series to Measured; every
// seriesReportInterval, when they changed, the member's report
// (internal/report, sent by sendReports in report.go) carries the last
// series of each target of its share; every report carries all of them.
// The leader (TakeReport) keeps the last report of each member and hands
// them all to its term (leader.Config.Series) after each change.

// seriesReportInterval is how often a member reports its series while they
// change.
const seriesReportInterval = 10 * time.Second

// seriesInterval is how often this member reports: seriesReportInterval,
// or its Lease duration if shorter.
func (e *allocatorExtension) seriesInterval() time.Duration {
	return min(seriesReportInterval, e.cfg.Lease.Duration)
}

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
	// A later term starts from its own members' reports, not this term's.
	clear(s.series)
}

// shareKeys are the keys of a share's targets (report.TargetKey), of the
// labels the stock receiver's HTTP SD gives each: its group's labels and
// its address, without the leader's marks (shares.TakeMarks), as the receiver's
// fence computes them (and the leader, of the discovered labels).
func shareKeys(groups []httpsd.TargetGroup) []string {
	return keysOf(groups, func(shares.Marks) bool { return true })
}

// keysOf are the keys of the targets of groups whose marks keep says to.
func keysOf(groups []httpsd.TargetGroup, keep func(shares.Marks) bool) []string {
	var out []string
	for _, t := range ShareTargets(groups) {
		if keep(t.Marks) {
			out = append(out, t.Key)
		}
	}
	return out
}

// ShareTarget is a target of what a member scrapes of a job, with the
// labels the stock receiver's HTTP SD gives it: its group's labels and its
// address, without the leader's marks, which are apart.
type ShareTarget struct {
	Labels labels.Labels
	Marks  shares.Marks
	// Key is the target's key in reports (report.TargetKey of Labels),
	// which the leader computes from its discovered labels.
	Key string
}

// ShareTargets are the targets of groups, what a member scrapes of a job,
// one each: the receiver's fence and this member's reports read its share
// by them.
func ShareTargets(groups []httpsd.TargetGroup) []ShareTarget {
	var out []ShareTarget
	for _, g := range groups {
		for _, address := range g.Targets {
			ls := maps.Clone(g.Labels)
			if ls == nil {
				ls = map[string]string{}
			}
			ls[model.AddressLabel] = address
			marks := shares.TakeMarks(ls)
			l := labels.FromMap(ls)
			out = append(out, ShareTarget{Labels: l, Marks: marks, Key: report.TargetKey(l)})
		}
	}
	return out
}

// held are, by job, the keys of the targets of own that this member
// exports (report.Report.Held): neither warming nor releasing ones.
func held(own Shares) map[string][]string {
	out := map[string][]string{}
	for job, s := range own {
		groups, err := s.Targets()
		if err != nil {
			continue // the leader places them as a fresh allocation would
		}
		if keys := keysOf(groups, func(m shares.Marks) bool { return m.Warming == "" && !m.Releasing }); len(keys) > 0 {
			out[job] = keys
		}
	}
	return out
}
