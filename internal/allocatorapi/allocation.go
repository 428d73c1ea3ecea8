// Package allocatorapi serves a group's allocation over HTTP with the routes
// and shapes of the OpenTelemetry Operator's Target Allocator, so that the
// stock prometheus receiver (target_allocator settings) and TA tooling work
// unchanged, and adds a human status page.
//
// The leader answers from its Allocation; a follower forwards to the leader
// and keeps the last answers about its own share, so that it can go on
// answering them while no leader is reachable (see Handler).
package allocatorapi

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"

	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"go.yaml.in/yaml/v2"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
)

// Target is one allocated target: its job, its discovered labels (served as
// they are: the receiver relabels them itself) in their encoded form, and
// the member that owns it, "" when no member may take it (per-node without
// fallback).
type Target struct {
	Job   string
	Owner string
	// Hash is the target's identity in allocation; the leader keeps each
	// share sorted by it. It is not served.
	Hash uint64
	// Element is the target's element of an HTTP SD answer, its labels'
	// only form: a share's answer is a concatenation of elements, and a
	// target is encoded once, by discovery, not once per answer it is in.
	Element httpsd.Element
}

// NewTarget returns a target of labels ls, encoded.
func NewTarget(job string, ls labels.Labels, owner string, hash uint64) Target {
	return Target{Job: job, Owner: owner, Hash: hash, Element: httpsd.Encode(ls)}
}

// Labels returns the target's discovered labels, decoded from its element
// (see httpsd.Element.Labels).
func (t Target) Labels() labels.Labels { return t.Element.Labels() }

// TargetGroup is one element of an HTTP SD answer.
type TargetGroup = httpsd.TargetGroup

// Allocation is what the leader serves: immutable once built. It is made of
// Shares, one per job and collector, each encoded once, on first use, and
// reused by every later allocation that shares it: after a change, only the
// answers that changed are encoded again.
type Allocation struct {
	// Epoch is the leadership epoch the allocation was made in.
	Epoch int
	// Leader is the identity of the member that made it.
	Leader string
	// Members are the group's members, sorted.
	Members []string
	// Pending is true until the leader's first discovery: the scrape configs
	// and jobs are known, the targets are not, and no share is answered from
	// this allocation (an empty one would make every member drop its targets).
	Pending bool

	configs  *ScrapeConfigs
	jobs     map[string]*Job
	jobNames []string
}

// ScrapeConfigs are the group's scrape configs as /scrape_configs answers
// them, encoded once per config set.
type ScrapeConfigs struct {
	redacted, secret answer
}

// answer is an encoded body and its entity tag.
type answer struct {
	body []byte
	etag string
}

// newAnswer tags body with a strong entity tag: a hash of the body, after
// a mark that tells apart answers of the same bytes that must not stand in
// for each other (secret and redacted scrape configs).
func newAnswer(mark string, body []byte) answer {
	return answer{body: body, etag: fmt.Sprintf(`"%s%016x"`, mark, xxhash.Sum64(body))}
}

// NewScrapeConfigs encodes scrape configs (by job name) for /scrape_configs.
func NewScrapeConfigs(configs map[string]*config.ScrapeConfig) (*ScrapeConfigs, error) {
	redacted, secret, err := encodeScrapeConfigs(configs)
	if err != nil {
		return nil, err
	}
	return &ScrapeConfigs{redacted: newAnswer("r", redacted), secret: newAnswer("s", secret)}, nil
}

// Share is one collector's targets in one job, immutable. Its answer is the
// concatenation of its targets' encoded elements, assembled for each
// request (a copy, not an encoding); its ETag is computed once, on first use.
type Share struct {
	targets []Target
	once    sync.Once
	etag    string
	size    int
}

// NewShare returns the share of targets, served in this order; it takes
// ownership of the slice.
func NewShare(targets []Target) *Share {
	return &Share{targets: targets}
}

// Targets returns the share's targets; the caller must not modify them.
func (s *Share) Targets() []Target {
	if s == nil {
		return nil
	}
	return s.targets
}

// tag returns the answer's ETag and its size in bytes.
func (s *Share) tag() (string, int) {
	s.once.Do(func() {
		d := xxhash.New()
		s.pieces(func(p string) {
			_, _ = d.WriteString(p)
			s.size += len(p)
		})
		s.etag = fmt.Sprintf(`"t%016x"`, d.Sum64())
	})
	return s.etag, s.size
}

var (
	open, comma, closing, empty = "[", ",", "]\n", "[]\n"
)

// pieces hands the pieces of the answer to put, in order.
func (s *Share) pieces(put func(string)) {
	if len(s.targets) == 0 {
		put(empty)
		return
	}
	put(open)
	for i, t := range s.targets {
		if i > 0 {
			put(comma)
		}
		put(string(t.Element))
	}
	put(closing)
}

// appendTo appends the answer to b.
func (s *Share) appendTo(b []byte) []byte {
	s.pieces(func(p string) { b = append(b, p...) })
	return b
}

// body returns the answer, assembled.
func (s *Share) body() []byte {
	_, size := s.tag()
	return s.appendTo(make([]byte, 0, size))
}

// emptyShare answers a collector without targets in a job.
var emptyShare = NewShare(nil)

// Job is one job's shares by owner ("" for targets no member may take),
// immutable once built.
type Job struct {
	shares map[string]*Share
	count  int
}

// NewJob returns a job of the given shares; it takes ownership of the map.
func NewJob(shares map[string]*Share) *Job {
	j := &Job{shares: shares}
	for _, s := range shares {
		j.count += len(s.targets)
	}
	return j
}

// Share returns owner's share, nil when it has none.
func (j *Job) Share(owner string) *Share { return j.shares[owner] }

// With returns a job whose shares are j's with those of changed replaced;
// a nil or empty share removes the owner's. It costs one map copy per
// member, not per target.
func (j *Job) With(changed map[string]*Share) *Job {
	shares := make(map[string]*Share, len(j.shares)+len(changed))
	for o, s := range j.shares {
		shares[o] = s
	}
	for o, s := range changed {
		if s == nil || len(s.targets) == 0 {
			delete(shares, o)
		} else {
			shares[o] = s
		}
	}
	return NewJob(shares)
}

// NewAllocation builds an allocation from the group's scrape configs (by job
// name) and its assigned targets, encoding everything anew. Jobs without
// targets are served with none. The leader builds its allocations with
// Assemble, which reuses what did not change.
func NewAllocation(epoch int, leader string, members []string, scrapeConfigs map[string]*config.ScrapeConfig, targets []Target) (*Allocation, error) {
	configs, err := NewScrapeConfigs(scrapeConfigs)
	if err != nil {
		return nil, err
	}
	byJob := map[string]map[string][]Target{}
	for name := range scrapeConfigs {
		byJob[name] = map[string][]Target{}
	}
	for _, t := range targets {
		if byJob[t.Job] == nil {
			byJob[t.Job] = map[string][]Target{}
		}
		byJob[t.Job][t.Owner] = append(byJob[t.Job][t.Owner], t)
	}
	jobs := make(map[string]*Job, len(byJob))
	for name, owners := range byJob {
		shares := make(map[string]*Share, len(owners))
		for o, ts := range owners {
			shares[o] = NewShare(ts)
		}
		jobs[name] = NewJob(shares)
	}
	return Assemble(epoch, leader, members, configs, jobs), nil
}

// Assemble builds an allocation of encoded scrape configs and jobs; it takes
// ownership of the jobs map. Its cost is in the number of jobs and members:
// the jobs and their shares are shared, not copied.
func Assemble(epoch int, leader string, members []string, configs *ScrapeConfigs, jobs map[string]*Job) *Allocation {
	a := &Allocation{
		Epoch:    epoch,
		Leader:   leader,
		Members:  slices.Sorted(slices.Values(members)),
		configs:  configs,
		jobs:     jobs,
		jobNames: slices.Sorted(maps.Keys(jobs)),
	}
	return a
}

// secretMu serialises the use of prometheus/common's process-wide switch
// that makes secrets marshal as their values instead of "<secret>".
var secretMu sync.Mutex

// encodeScrapeConfigs renders the scrape configs as the TA does: each
// config's YAML form as JSON, once with secrets redacted, once with them.
func encodeScrapeConfigs(configs map[string]*config.ScrapeConfig) (redacted, secret []byte, err error) {
	secretMu.Lock()
	defer secretMu.Unlock()
	if redacted, err = scrapeConfigsJSON(configs); err != nil {
		return nil, nil, err
	}
	commonconfig.MarshalSecretValue = true
	defer func() { commonconfig.MarshalSecretValue = false }()
	secret, err = scrapeConfigsJSON(configs)
	return redacted, secret, err
}

func scrapeConfigsJSON(configs map[string]*config.ScrapeConfig) ([]byte, error) {
	out := make(map[string]any, len(configs))
	for name, sc := range configs {
		y, err := yaml.Marshal(sc)
		if err != nil {
			return nil, fmt.Errorf("job %q: %w", name, err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(y, &m); err != nil {
			return nil, fmt.Errorf("job %q: %w", name, err)
		}
		out[name] = jsonable(m)
	}
	return json.Marshal(out)
}

// jsonable turns the map[any]any of YAML into map[string]any for JSON.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case map[string]any:
		for k, e := range v {
			v[k] = jsonable(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = jsonable(e)
		}
		return v
	}
	return v
}

// Jobs returns the job names, sorted.
func (a *Allocation) Jobs() []string { return a.jobNames }

// HasJob reports whether job exists.
func (a *Allocation) HasJob(name string) bool { _, ok := a.jobs[name]; return ok }

// IsMember reports whether collector is a member of the group.
func (a *Allocation) IsMember(collector string) bool {
	_, ok := slices.BinarySearch(a.Members, collector)
	return ok
}

// Targets returns the targets of job owned by collector; the caller must not
// modify them.
func (a *Allocation) Targets(jobName, collector string) []Target {
	if j, ok := a.jobs[jobName]; ok {
		return j.Share(collector).Targets()
	}
	return nil
}

// TargetCount returns the number of targets of job.
func (a *Allocation) TargetCount(jobName string) int {
	if j, ok := a.jobs[jobName]; ok {
		return j.count
	}
	return 0
}

// AllTargets returns every target of job: by owner, members in order, then
// the unassigned ones.
func (a *Allocation) AllTargets(jobName string) []Target {
	j, ok := a.jobs[jobName]
	if !ok {
		return nil
	}
	out := make([]Target, 0, j.count)
	for _, m := range a.Members {
		out = append(out, j.Share(m).Targets()...)
	}
	return append(out, j.Share("").Targets()...)
}

// Counts returns, per member, how many jobs it has targets in and how many targets.
func (a *Allocation) Counts() map[string][2]int {
	counts := make(map[string][2]int, len(a.Members))
	for _, m := range a.Members {
		counts[m] = [2]int{}
	}
	for _, j := range a.jobs {
		for owner, s := range j.shares {
			if len(s.targets) == 0 {
				continue
			}
			c := counts[owner]
			c[0]++
			c[1] += len(s.targets)
			counts[owner] = c
		}
	}
	return counts
}

// shareOf returns collector's share in job, an empty one when it has none.
func (a *Allocation) shareOf(jobName, collector string) *Share {
	if j, ok := a.jobs[jobName]; ok {
		if s := j.Share(collector); s != nil {
			return s
		}
	}
	return emptyShare
}

// share returns the HTTP SD answer for collector in job.
func (a *Allocation) share(jobName, collector string) answer {
	s := a.shareOf(jobName, collector)
	etag, _ := s.tag()
	return answer{body: s.body(), etag: etag}
}

// Answer returns the encoded HTTP SD answer for collector in job, as the
// targets route serves it.
func (a *Allocation) Answer(jobName, collector string) []byte {
	return a.share(jobName, collector).body
}

// scrapeConfigs returns the /scrape_configs answer, with secret values when
// secret is true.
func (a *Allocation) scrapeConfigs(secret bool) answer {
	if secret {
		return a.configs.secret
	}
	return a.configs.redacted
}

// groups is the HTTP SD form of targets, one group per target, for
// encoding/json: their elements as they are, which encoding/json writes
// unchanged (they are compact, with HTML characters escaped).
func groups(targets []Target) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(targets))
	for _, t := range targets {
		out = append(out, json.RawMessage(t.Element))
	}
	return out
}
