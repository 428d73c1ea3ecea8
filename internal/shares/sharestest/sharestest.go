// Package sharestest builds allocations from scratch for tests: the model
// that the leader's incremental allocations are compared with, and the
// input of the allocator API's tests.
package sharestest

import (
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/embedded-ta/embedded-ta/internal/httpsd"
	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// Target returns a target of labels ls, encoded, assigned to member.
func Target(job string, ls labels.Labels, member string, hash uint64) shares.Placed {
	return shares.Placed{Job: job, Member: member, Target: shares.Target{Hash: hash, Element: httpsd.Encode(ls)}}
}

// New builds an allocation from the group's scrape configs (by job name) and
// its assigned targets, encoding everything anew. Jobs without targets are
// served with none.
func New(epoch int, leader string, members []string, scrapeConfigs map[string]*config.ScrapeConfig, targets []shares.Placed) (*shares.Allocation, error) {
	configs, err := shares.NewScrapeConfigs(scrapeConfigs)
	if err != nil {
		return nil, err
	}
	byJob := map[string]map[string][]shares.Target{}
	for name := range scrapeConfigs {
		byJob[name] = map[string][]shares.Target{}
	}
	for _, t := range targets {
		if byJob[t.Job] == nil {
			byJob[t.Job] = map[string][]shares.Target{}
		}
		byJob[t.Job][t.Member] = append(byJob[t.Job][t.Member], t.Target)
	}
	jobs := make(map[string]*shares.Job, len(byJob))
	for name, members := range byJob {
		byMember := make(map[string]*shares.Share, len(members))
		for m, ts := range members {
			byMember[m] = shares.NewShare(ts)
		}
		jobs[name] = shares.NewJob(byMember)
	}
	return shares.New(epoch, leader, members, configs, jobs), nil
}
