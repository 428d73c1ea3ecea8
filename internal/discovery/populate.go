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
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/scrape"
)

// A target's labels after relabeling decide whether it is allocated and
// its identity. Prometheus computes them with scrape.PopulateLabels, which
// also renders the job's defaults for every target (two durations printed
// a target), deletes the __meta_ labels one at a time and returns a new
// labels.Labels: half the cost of relabeling a million targets, and most of
// its garbage. populate decides the same for a target Prometheus would
// scrape, with the job's defaults computed once and the result in a reused
// buffer; for any target it finds Prometheus would not scrape, it asks
// scrape.PopulateLabels itself, so that failures are Prometheus's own with
// their messages. TestPopulateIsPrometheus compares the two over many
// random targets and rules.

// jobDefaults are the labels Prometheus gives each target of a job that
// discovery did not set (scrape.PopulateDiscoveredLabels): job, scheme,
// metrics path, scrape interval and timeout, the histogram flags and the
// params.
type jobDefaults struct {
	job      *config.ScrapeConfig
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
	d := &jobDefaults{job: job}
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
// are discovered, and appends its labels after relabeling to out, sorted by
// name. It returns false when relabeling drops the target, and
// errNotScraped for a target Prometheus would not scrape.
func (r *relabeler) populate(job *config.ScrapeConfig, discovered []labels.Label, out []labels.Label) ([]labels.Label, bool, error) {
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
	if !relabel.ProcessBuilder(lb, job.RelabelConfigs...) {
		return out, false, nil
	}
	addr := lb.Get(model.AddressLabel)
	if addr == "" || config.CheckTargetAddress(model.LabelValue(addr)) != nil {
		return out, true, errNotScraped
	}
	every, within := d.every, d.within
	if v := lb.Get(model.ScrapeIntervalLabel); v != d.interval || d.interval == "" {
		p, err := model.ParseDuration(v)
		if err != nil {
			return out, true, errNotScraped
		}
		every = time.Duration(p)
	}
	if v := lb.Get(model.ScrapeTimeoutLabel); v != d.timeout || d.timeout == "" {
		p, err := model.ParseDuration(v)
		if err != nil {
			return out, true, errNotScraped
		}
		within = time.Duration(p)
	}
	if every == 0 || within == 0 || within > every {
		return out, true, errNotScraped
	}
	start := len(out)
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
		return out[:start], true, errNotScraped
	}
	slices.SortFunc(out[start:], func(a, b labels.Label) int { return strings.Compare(a.Name, b.Name) })
	return out, true, nil
}
