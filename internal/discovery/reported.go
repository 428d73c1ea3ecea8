package discovery

import (
	"context"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
)

// A job's discovery has reported when each of its SD configs has sent its
// first update. Prometheus's discovery manager does not tell: its first
// sync, about 100 ms after it starts, holds an empty list for every SD
// config that has not sent anything yet (Kubernetes SD waits for its
// informers, an HTTP SD endpoint may answer slowly), which is not the same
// as "this job has no targets". A leader that took it for the truth would
// publish empty shares. So each SD config runs wrapped: with its first
// update it sends one more target group, whose source marks it, and the
// manager keeps that group with the config's others (with one target: the
// manager drops empty groups). The snapshotter counts the markers and the
// filter passes over them. A sync that holds
// every marker of a job holds every config's first update of it.

// reportedPrefix begins the source of a marker group.
const reportedPrefix = "embedded-ta/reported/"

// reportingConfig wraps the SD config at index of job; its discoverer sends
// the marker with its first update. The job and index keep the wrapped
// configs of two jobs apart (the manager shares a discoverer between equal
// configs) and equal for the same job across applies (so the manager keeps
// the discoverer of an unchanged job running).
type reportingConfig struct {
	discovery.Config
	job   string
	index int
}

func (c reportingConfig) NewDiscoverer(o discovery.DiscovererOptions) (discovery.Discoverer, error) {
	d, err := c.Config.NewDiscoverer(o)
	if err != nil {
		return nil, err
	}
	return reportingDiscoverer{d: d, marker: reportedPrefix + strconv.Itoa(c.index)}, nil
}

func (c reportingConfig) NewDiscovererMetrics(reg prometheus.Registerer, rmi discovery.RefreshMetricsInstantiator) discovery.DiscovererMetrics {
	return c.Config.NewDiscovererMetrics(reg, rmi)
}

type reportingDiscoverer struct {
	d      discovery.Discoverer
	marker string
}

// Run relays the wrapped discoverer's updates, the first with the marker,
// and returns once the wrapped discoverer has.
func (r reportingDiscoverer) Run(ctx context.Context, up chan<- []*targetgroup.Group) {
	updates := make(chan []*targetgroup.Group)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.d.Run(ctx, updates)
	}()
	first := true
	for {
		select {
		case tgs, ok := <-updates:
			if !ok { // static configs close it, though Prometheus says not to
				updates = nil
				continue
			}
			if first {
				tgs = append(tgs[:len(tgs):len(tgs)], &targetgroup.Group{Source: r.marker, Targets: markerTargets})
				first = false
			}
			select {
			case up <- tgs:
			case <-ctx.Done():
			}
		case <-done:
			return
		}
	}
}

// reporting wraps a job's SD configs; a job without any gets a static config
// of no targets, as the manager would give it, so that it reports too.
func reporting(job string, configs discovery.Configs) discovery.Configs {
	if len(configs) == 0 {
		configs = discovery.Configs{discovery.StaticConfig{{}}}
	}
	out := make(discovery.Configs, len(configs))
	for i, c := range configs {
		out[i] = reportingConfig{Config: c, job: job, index: i}
	}
	return out
}

// markerTargets is the one target of a marker group, never allocated.
var markerTargets = []model.LabelSet{{model.AddressLabel: "reported.embedded-ta.invalid"}}

// isMarker reports whether g is a marker group: the filter passes over it.
func isMarker(g *targetgroup.Group) bool { return strings.HasPrefix(g.Source, reportedPrefix) }

// count returns how many of a job's target groups are markers, and how many
// targets the others hold, without a copy of the groups.
func count(groups []*targetgroup.Group) (markers, targets int) {
	for _, g := range groups {
		if isMarker(g) {
			markers++
		} else {
			targets += len(g.Targets)
		}
	}
	return markers, targets
}
