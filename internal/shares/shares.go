// Package shares holds what a leader publishes: the allocation of its
// group's targets to its members, as immutable snapshots. An allocation is
// made of jobs, each job of shares (one member's targets in that job), each
// share encoded once as the HTTP SD answer the allocator API serves, with its
// ETag; the scrape configs are encoded once per config set. The leader makes
// a new allocation after each change; everything that did not change is
// shared with the previous one, not copied or encoded again.
//
// Nothing here serves HTTP or knows of Kubernetes: the API (internal/allocatorapi)
// answers from an allocation, the status page and telemetry read its Summary.
package shares

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
)

// Target is one allocated target: its identity in allocation and its
// discovered labels, served as they are (the receiver relabels them itself)
// in their encoded form. Its job and member are those of the share that
// holds it: a share's targets are copied whole when a member joins, one
// pointer and 24 bytes each.
type Target struct {
	// Hash is the target's identity in allocation; each share is kept sorted
	// by it. It is not served.
	Hash uint64
	// Element is the target's element of an HTTP SD answer, its labels'
	// only form: a share's answer is a concatenation of elements, and a
	// target is encoded once, by discovery, not once per answer it is in.
	Element httpsd.Element
}

// Labels returns the target's discovered labels, decoded from its element.
func (t Target) Labels() labels.Labels { return t.Element.Labels() }

// Placed is a target with its job and the member it is assigned to (""
// when no member may take it: per-node, on a node no member runs on, or
// without a node and a fallback), for the pages that list targets.
type Placed struct {
	Job, Member string
	Target
}

// Answer is an encoded body and its strong entity tag.
type Answer struct {
	Body []byte
	ETag string
}

// newAnswer tags body with a hash of it, after a mark that tells apart
// answers of the same bytes that must not stand in for each other (secret
// and redacted scrape configs).
func newAnswer(mark string, body []byte) Answer {
	return Answer{Body: body, ETag: fmt.Sprintf(`"%s%016x"`, mark, xxhash.Sum64(body))}
}

// Share is one member's targets in one job, immutable. Its answer is the
// concatenation of its targets' elements, assembled on demand (a copy, not
// an encoding); its ETag is computed once, on first use.
type Share struct {
	targets []Target
	once    sync.Once
	etag    string
	size    int
}

// NewShare returns the share of targets, served in this order; it takes
// ownership of the slice.
func NewShare(targets []Target) *Share { return &Share{targets: targets} }

// empty answers a member without targets in a job.
var empty = NewShare(nil)

// Targets returns the share's targets; the caller must not modify them.
func (s *Share) Targets() []Target { return s.targets }

// ETag returns the answer's entity tag and its size in bytes.
func (s *Share) ETag() (string, int) {
	s.once.Do(func() {
		d := xxhash.New()
		s.Pieces(func(p string) {
			_, _ = d.WriteString(p)
			s.size += len(p)
		})
		s.etag = fmt.Sprintf(`"t%016x"`, d.Sum64())
	})
	return s.etag, s.size
}

// Pieces hands the pieces of the answer to put, in order: a writer can send
// them in chunks and never hold the whole answer.
func (s *Share) Pieces(put func(string)) {
	if len(s.targets) == 0 {
		put("[]\n")
		return
	}
	put("[")
	for i, t := range s.targets {
		if i > 0 {
			put(",")
		}
		put(string(t.Element))
	}
	put("]\n")
}

// Answer returns the answer, assembled, with its ETag.
func (s *Share) Answer() Answer {
	etag, size := s.ETag()
	b := make([]byte, 0, size)
	s.Pieces(func(p string) { b = append(b, p...) })
	return Answer{Body: b, ETag: etag}
}

// Job is one job's shares by member ("" for targets no member may take),
// immutable once built.
type Job struct {
	shares map[string]*Share
	// scrape holds, for the members that warm targets of the job, what they
	// scrape: their share and the targets they warm (see WarmingLabel).
	scrape map[string]*Share
	count  int
}

// WarmingLabel marks a warming target in what its new member scrapes: a
// target handed to it, make before break, whose data its receiver drops
// until the leader releases the target from its old member. Its value is
// the target's hash (report.FormatHash): the member reports the first
// scrape it sees of it by that hash. Like every label that starts with
// "__meta_", it is gone after relabeling, and no part of the target's
// identity in Prometheus (only __meta_ labels are not): the target's scrape
// loop, and its offset within the interval, go on unchanged when the label
// leaves. A relabeling rule that copies every __meta_ label
// (labelmap: __meta_(.+)) would copy it into the target's labels.
const WarmingLabel = "__meta_embedded_ta_warming"

// Standby is the WarmingLabel value of a target a member warms for hot
// standby: it would take the target if its member died. Its first scrape
// is not reported: it moves nothing.
const Standby = "standby"

// ReleasingLabel marks a releasing target in what its old member scrapes:
// a target moved away from it, make before break, that it still exports
// until the move's cut-over (CutoverLabel). Its value is the target's hash.
const ReleasingLabel = "__meta_embedded_ta_releasing"

// CutoverLabel carries a planned move's cut-over: the instant from which
// the moved target's data is its new member's to export. Both members
// scrape the target around it, and each one's receiver decides by the
// time of each scrape: the old member (the target marked ReleasingLabel in
// what it scrapes) exports the scrapes before the cut-over, the new member
// (the target in its share, with this label in what it scrapes) those
// from it on, so that the target's data is exported once, without a gap,
// at whatever offsets within the interval the two members scrape it. Its
// value is the instant in Unix milliseconds (FormatCutover); the members
// compare it with their own clocks' scrape times, so clocks out of step
// by d shift the cut-over by up to d (a scrape at most missing or doubled
// when d exceeds the two members' offset within the interval).
const CutoverLabel = "__meta_embedded_ta_cutover"

// FormatCutover writes a cut-over as CutoverLabel holds it.
func FormatCutover(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// Marks are what the leader's labels say of a target in what a member
// scrapes: whether it warms (WarmingLabel's value), whether it releases
// it, and the cut-over of its move, zero without one.
type Marks struct {
	Warming   string
	Releasing bool
	Cutover   time.Time
}

// TakeMarks removes the leader's marks from the labels of a target in what
// a member scrapes, leaving its labels in the share, and returns them. A
// cut-over that does not parse is none.
func TakeMarks(ls map[string]string) Marks {
	m := Marks{Warming: ls[WarmingLabel]}
	_, m.Releasing = ls[ReleasingLabel]
	if v, ok := ls[CutoverLabel]; ok {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
			m.Cutover = time.UnixMilli(ms)
		}
	}
	delete(ls, WarmingLabel)
	delete(ls, ReleasingLabel)
	delete(ls, CutoverLabel)
	return m
}

// Exports reports whether a member exports the data of a scrape at the
// given time of a target of its share with these marks: a releasing
// target's before its cut-over, an arriving one's from it on, any other
// always.
func (m Marks) Exports(scraped time.Time) bool {
	if m.Cutover.IsZero() {
		return true
	}
	return m.Releasing == scraped.Before(m.Cutover)
}

// NewJob returns a job of the given shares; it takes ownership of the map.
func NewJob(shares map[string]*Share) *Job {
	j := &Job{shares: shares}
	for _, s := range shares {
		j.count += len(s.targets)
	}
	return j
}

// Share returns member's share, an empty one when it has none.
func (j *Job) Share(member string) *Share {
	if s, ok := j.shares[member]; ok {
		return s
	}
	return empty
}

// ScrapeShare returns what member scrapes of the job: its share, the
// targets it warms, each marked with WarmingLabel, and those it releases,
// each marked with ReleasingLabel (see Marks).
func (j *Job) ScrapeShare(member string) *Share {
	if s, ok := j.scrape[member]; ok {
		return s
	}
	return j.Share(member)
}

// With returns a job whose shares are j's with those of changed replaced;
// an empty share removes the member's. It costs one map copy per member,
// not per target.
func (j *Job) With(changed map[string]*Share) *Job {
	shares := maps.Clone(j.shares)
	for m, s := range changed {
		if len(s.targets) == 0 {
			delete(shares, m)
		} else {
			shares[m] = s
		}
	}
	next := NewJob(shares)
	next.scrape = j.scrape
	return next
}

// WithScrape returns a job whose scrape shares (see ScrapeShare) are j's
// with those of changed replaced; nil removes a member's, which then
// scrapes its share.
func (j *Job) WithScrape(changed map[string]*Share) *Job {
	scrape := maps.Clone(j.scrape)
	if scrape == nil {
		scrape = map[string]*Share{}
	}
	for m, s := range changed {
		if s == nil {
			delete(scrape, m)
		} else {
			scrape[m] = s
		}
	}
	return &Job{shares: j.shares, scrape: scrape, count: j.count}
}

// Allocation is what a leader publishes, immutable: its jobs' shares and
// the group's scrape configs. The API serves it; the status page and
// telemetry read its Summary.
type Allocation struct {
	// Epoch is the leadership epoch the allocation was made in.
	Epoch int
	// Leader is the identity of the member that made it.
	Leader string
	// Members are the identities of the group's members, sorted.
	Members []string
	// Pending is true while the scrape configs are not all known (the jobs of
	// Prometheus Operator resources are still to come): neither they nor any
	// share are answered from this allocation, whose jobs would lack theirs.
	Pending bool
	// Unreported holds the jobs whose discovery has not reported since the
	// term began or their config changed: their targets are not known (an
	// empty list would make every member drop its targets), so their shares
	// are not answered from this allocation. Never modified once published.
	Unreported map[string]bool
	// Changed is when the change that led to this allocation arrived (zero
	// for a pending allocation), Cause what that change was, and Moved counts
	// the targets whose member it changed.
	Changed time.Time
	Cause   Cause
	Moved   int
	// Handoffs counts the targets whose move, made before it is broken, is
	// under way: waiting for its new member's report, warming, or
	// releasing (exported by its old member one interval more).
	Handoffs int
	// Recent summarises the term's last allocations, this one first
	// (Recent.Add). Never modified once published.
	Recent []RecentAllocation
	// OverLimit counts the unassigned targets that a member could take but
	// for max_targets_per_collector or max_series_per_collector
	// (allocation.Counts).
	OverLimit int
	// Series is each member's series load (allocation.SeriesLoads), nil
	// when not known.
	Series map[string]int64

	configs  *ScrapeConfigs
	jobs     map[string]*Job
	jobNames []string

	summary     Summary
	summaryOnce sync.Once
}

// Cause is the change an allocation follows.
type Cause string

const (
	// CauseMembers: the group's members changed, or a term began.
	CauseMembers Cause = "members"
	// CauseTargets: service discovery found other targets.
	CauseTargets Cause = "targets"
	// CauseJobs: the jobs changed (those of Prometheus Operator resources).
	CauseJobs Cause = "jobs"
	// CauseHandoff: a move made before it was broken was completed (its
	// new member reported the target's first scrape, or its deadline
	// passed) or began (its new member reported that it may warm it).
	CauseHandoff Cause = "handoff"
	// CauseMeasurements: the members measured other series per target.
	CauseMeasurements Cause = "measurements"
)

// New returns an allocation of encoded scrape configs and jobs; it takes
// ownership of the jobs map. Its cost is in the number of jobs: the jobs and
// their shares are shared, not copied.
func New(epoch int, leader string, members []string, configs *ScrapeConfigs, jobs map[string]*Job) *Allocation {
	return &Allocation{
		Epoch:    epoch,
		Leader:   leader,
		Members:  slices.Sorted(slices.Values(members)),
		configs:  configs,
		jobs:     jobs,
		jobNames: slices.Sorted(maps.Keys(jobs)),
	}
}

// Reported reports whether job's shares may be answered from the
// allocation: its discovery has reported and the allocation is not pending.
func (a *Allocation) Reported(job string) bool { return !a.Pending && !a.Unreported[job] }

// Jobs returns the job names, sorted.
func (a *Allocation) Jobs() []string { return a.jobNames }

// HasJob reports whether job exists.
func (a *Allocation) HasJob(name string) bool { _, ok := a.jobs[name]; return ok }

// IsMember reports whether identity names a member of the group.
func (a *Allocation) IsMember(identity string) bool {
	_, ok := slices.BinarySearch(a.Members, identity)
	return ok
}

// Share returns member's share of job, an empty one when it has none.
func (a *Allocation) Share(job, member string) *Share {
	if j, ok := a.jobs[job]; ok {
		return j.Share(member)
	}
	return empty
}

// ScrapeShare returns what member scrapes of job (Job.ScrapeShare): what
// the allocator API answers it, an empty share when it has none.
func (a *Allocation) ScrapeShare(job, member string) *Share {
	if j, ok := a.jobs[job]; ok {
		return j.ScrapeShare(member)
	}
	return empty
}

// Job returns the job's shares, nil when there is no such job.
func (a *Allocation) Job(name string) *Job { return a.jobs[name] }

// Targets returns every target of job with its member: by member, members
// in order, then the unassigned ones.
func (a *Allocation) Targets(job string) []Placed {
	j, ok := a.jobs[job]
	if !ok {
		return nil
	}
	out := make([]Placed, 0, j.count)
	for _, m := range append(slices.Clip(a.Members), "") {
		for _, t := range j.Share(m).targets {
			out = append(out, Placed{Job: job, Member: m, Target: t})
		}
	}
	return out
}

// ScrapeConfigs returns the /scrape_configs answer, with secret values when
// secret is true.
func (a *Allocation) ScrapeConfigs(secret bool) Answer {
	if secret {
		return a.configs.secret
	}
	return a.configs.redacted
}

// Summary counts an allocation's targets by member and by job: what the
// status page, /status and the self-metrics show.
type Summary struct {
	// Members are the group's members, in order, each with its counts.
	Members []MemberCount `json:"members"`
	Jobs    []JobCount    `json:"jobs"`
	// Targets counts every target; Unassigned those no member may take,
	// and OverLimit those of them that a member could take but for
	// max_targets_per_collector or max_series_per_collector.
	Targets    int `json:"targets"`
	Unassigned int `json:"unassigned"`
	OverLimit  int `json:"over_limit"`
}

// MemberCount is one member's part of an allocation.
type MemberCount struct {
	Identity string `json:"identity"`
	// Jobs counts the jobs the member has targets in.
	Jobs    int `json:"job_count"`
	Targets int `json:"target_count"`
	// Series is the member's series load: the series per scrape of its
	// targets as the members measure them, a target not measured weighing
	// the average of those that are.
	Series int64 `json:"series"`
}

// JobCount is one job's size.
type JobCount struct {
	Name    string `json:"name"`
	Targets int    `json:"target_count"`
	// Unreported is true while the job's discovery has not reported: its
	// targets are those of before (none at a term's start).
	Unreported bool `json:"unreported,omitempty"`
}

// Summary returns the allocation's counts, computed on first use.
func (a *Allocation) Summary() Summary {
	a.summaryOnce.Do(func() {
		s := Summary{Members: make([]MemberCount, len(a.Members)), Jobs: make([]JobCount, len(a.jobNames)), OverLimit: a.OverLimit}
		index := make(map[string]int, len(a.Members))
		for i, m := range a.Members {
			s.Members[i].Identity = m
			s.Members[i].Series = a.Series[m]
			index[m] = i
		}
		for i, name := range a.jobNames {
			j := a.jobs[name]
			s.Jobs[i] = JobCount{Name: name, Targets: j.count, Unreported: a.Unreported[name]}
			s.Targets += j.count
			for m, share := range j.shares {
				k, member := index[m]
				switch {
				case m == "":
					s.Unassigned += len(share.targets)
				case member && len(share.targets) > 0:
					s.Members[k].Jobs++
					s.Members[k].Targets += len(share.targets)
				}
			}
		}
		a.summary = s
	})
	return a.summary
}
