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
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"

	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"go.yaml.in/yaml/v2"
)

// Target is one allocated target: its job, its discovered labels (served as
// they are: the receiver relabels them itself) and the member that owns it,
// "" when no member may take it (per-node without fallback).
type Target struct {
	Job    string
	Labels labels.Labels
	Owner  string
}

// TargetGroup is one element of an HTTP SD answer.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// Allocation is what the leader serves: immutable once built. Answers are
// encoded on first use and then reused until the next allocation.
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

	scrapeConfigs       []byte // job → scrape config, secrets redacted
	scrapeConfigsSecret []byte // the same with secret values
	jobs                map[string]*job
	jobNames            []string

	mu      sync.Mutex
	encoded map[encodedKey][]byte
}

type job struct {
	targets []Target
	byOwner map[string][]int // owner → indices into targets
}

type encodedKey struct{ job, collector string }

// NewAllocation builds an allocation from the group's scrape configs (by job
// name) and its assigned targets. Jobs without targets are served with none.
func NewAllocation(epoch int, leader string, members []string, scrapeConfigs map[string]*config.ScrapeConfig, targets []Target) (*Allocation, error) {
	a := &Allocation{
		Epoch:   epoch,
		Leader:  leader,
		Members: slices.Sorted(slices.Values(members)),
		jobs:    make(map[string]*job, len(scrapeConfigs)),
		encoded: map[encodedKey][]byte{},
	}
	var err error
	if a.scrapeConfigs, a.scrapeConfigsSecret, err = encodeScrapeConfigs(scrapeConfigs); err != nil {
		return nil, err
	}
	for name := range scrapeConfigs {
		a.jobs[name] = &job{byOwner: map[string][]int{}}
	}
	for _, t := range targets {
		j, ok := a.jobs[t.Job]
		if !ok {
			j = &job{byOwner: map[string][]int{}}
			a.jobs[t.Job] = j
		}
		j.byOwner[t.Owner] = append(j.byOwner[t.Owner], len(j.targets))
		j.targets = append(j.targets, t)
	}
	a.jobNames = make([]string, 0, len(a.jobs))
	for name := range a.jobs {
		a.jobNames = append(a.jobNames, name)
	}
	sort.Strings(a.jobNames)
	return a, nil
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

// Targets returns the targets of job owned by collector.
func (a *Allocation) Targets(jobName, collector string) []Target {
	j, ok := a.jobs[jobName]
	if !ok {
		return nil
	}
	out := make([]Target, 0, len(j.byOwner[collector]))
	for _, i := range j.byOwner[collector] {
		out = append(out, j.targets[i])
	}
	return out
}

// AllTargets returns every target of job, in discovery order.
func (a *Allocation) AllTargets(jobName string) []Target {
	if j, ok := a.jobs[jobName]; ok {
		return j.targets
	}
	return nil
}

// Counts returns, per member, how many jobs it has targets in and how many targets.
func (a *Allocation) Counts() map[string][2]int {
	counts := make(map[string][2]int, len(a.Members))
	for _, m := range a.Members {
		counts[m] = [2]int{}
	}
	for _, j := range a.jobs {
		for owner, idx := range j.byOwner {
			c := counts[owner]
			c[0]++
			c[1] += len(idx)
			counts[owner] = c
		}
	}
	return counts
}

// share returns the HTTP SD answer for collector in job, encoded once.
func (a *Allocation) share(jobName, collector string) []byte {
	key := encodedKey{jobName, collector}
	a.mu.Lock()
	b, ok := a.encoded[key]
	a.mu.Unlock()
	if ok {
		return b
	}
	b = encodeGroups(a.Targets(jobName, collector))
	a.mu.Lock()
	a.encoded[key] = b
	a.mu.Unlock()
	return b
}

func encodeGroups(targets []Target) []byte {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(groups(targets))
	return buf.Bytes()
}

// groups is the HTTP SD form of targets: one group per target.
func groups(targets []Target) []TargetGroup {
	out := make([]TargetGroup, 0, len(targets))
	for _, t := range targets {
		out = append(out, TargetGroup{Targets: []string{t.Labels.Get("__address__")}, Labels: t.Labels.Map()})
	}
	return out
}
