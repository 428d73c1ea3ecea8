package discovery

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
)

// A target's labels after relabeling decide whether it is allocated and
// its identity. Prometheus computes them with scrape.PopulateLabels, which
// also renders the job's defaults for every target (two durations printed
// a target), deletes the __meta_ labels one at a time and returns a new
// labels.Labels: half the cost of relabeling a million targets, and most of
// its garbage. populate decides the same for a target Prometheus would
// scrape, with the job's defaults computed once, its relabel rules applied
// by rules (rules.go) and the result in a reused buffer; for any target
// it finds Prometheus would not scrape, it asks scrape.PopulateLabels
// itself, so that failures are Prometheus's own with their messages.
// TestPopulateIsPrometheus compares the two over many random targets and
// rules.

// jobDefaults are the labels Prometheus gives each target of a job that
// discovery did not set (scrape.PopulateDiscoveredLabels): job, scheme,
// metrics path, scrape interval and timeout, the histogram flags and the
// params.
type jobDefaults struct {
	job      *config.ScrapeConfig
	rules    *rules
	labels   []labels.Label
	interval string        // the default __scrape_interval__
	every    time.Duration // parsed
	timeout  string        // the default __scrape_timeout__
	within   time.Duration // parsed
	// flags are the labels of the job's histogram settings, booleans
	// (scrape.PopulateLabels checks them), known as the defaults that are
	// none of the others: their names are not exported. A default taken
	// for a flag that is not one can only send a target to
	// scrape.PopulateLabels, never keep one it would not.
	flags []string
}

func newJobDefaults(lb *labels.Builder, job *config.ScrapeConfig) *jobDefaults {
	scrape.PopulateDiscoveredLabels(lb, job, nil, nil)
	d := &jobDefaults{job: job, rules: newRules(job.RelabelConfigs)}
	lb.Range(func(l labels.Label) {
		d.labels = append(d.labels, l)
		switch {
		case l.Name == model.JobLabel, l.Name == model.SchemeLabel, l.Name == model.MetricsPathLabel,
			l.Name == model.ScrapeIntervalLabel, l.Name == model.ScrapeTimeoutLabel,
			strings.HasPrefix(l.Name, model.ParamLabelPrefix):
		default:
			d.flags = append(d.flags, l.Name)
		}
	})
	d.interval, d.timeout = lb.Get(model.ScrapeIntervalLabel), lb.Get(model.ScrapeTimeoutLabel)
	every, errE := model.ParseDuration(d.interval)
	within, errW := model.ParseDuration(d.timeout)
	if errE != nil || errW != nil {
		d.interval, d.timeout = "", "" // never matched: each target's are parsed
	}
	d.every, d.within = time.Duration(every), time.Duration(within)
	return d
}

// errNotScraped reports that populate found the target one Prometheus
// would not scrape: scrape.PopulateLabels tells why.
var errNotScraped = errors.New("not scraped")

// populate relabels one target whose discovered labels, sorted by name,
// are discovered, and returns its labels after relabeling, sorted by name,
// in r.scraped (reused). It returns false when relabeling drops the target,
// and errNotScraped for a target Prometheus would not scrape.
func (r *relabeler) populate(job *config.ScrapeConfig, discovered []labels.Label) ([]labels.Label, bool, error) {
	if r.defaults == nil || r.defaults.job != job {
		r.defaults = newJobDefaults(r.lb, job)
	}
	d, lb := r.defaults, r.lb
	lb.Reset(labels.EmptyLabels())
	for _, l := range discovered {
		if l.Value != "" {
			lb.Set(l.Name, l.Value)
		}
	}
	for _, l := range d.labels {
		if lb.Get(l.Name) == "" {
			lb.Set(l.Name, l.Value)
		}
	}
	out := r.scraped[:0]
	if !d.rules.process(lb) {
		return out, false, nil
	}
	addr := lb.Get(model.AddressLabel)
	if addr == "" || config.CheckTargetAddress(model.LabelValue(addr)) != nil {
		return out, true, errNotScraped
	}
	every, okE := duration(lb.Get(model.ScrapeIntervalLabel), d.interval, d.every)
	within, okW := duration(lb.Get(model.ScrapeTimeoutLabel), d.timeout, d.within)
	if !okE || !okW || every == 0 || within == 0 || within > every {
		return out, true, errNotScraped
	}
	instance, valid := false, true
	lb.Range(func(l labels.Label) {
		if strings.HasPrefix(l.Name, model.MetaLabelPrefix) {
			return
		}
		if slices.Contains(d.flags, l.Name) {
			if _, err := strconv.ParseBool(l.Value); err != nil {
				valid = false
			}
		}
		instance = instance || l.Name == model.InstanceLabel
		valid = valid && utf8.ValidString(l.Value)
		out = append(out, l)
	})
	if !instance {
		out = append(out, labels.Label{Name: model.InstanceLabel, Value: addr})
	}
	if !valid {
		return out[:0], true, errNotScraped
	}
	slices.SortFunc(out, compareNames)
	return out, true, nil
}

// duration parses v, a target's scrape interval or timeout; def is the
// job's, parsed already, unless it is "".
func duration(v, def string, parsed time.Duration) (time.Duration, bool) {
	if v == def && def != "" {
		return parsed, true
	}
	p, err := model.ParseDuration(v)
	return time.Duration(p), err == nil
}
