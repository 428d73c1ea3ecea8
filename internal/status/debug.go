package status

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"slices"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// The Target Allocator's debug pages, under its paths and with its tables,
// made from the leader's allocation: what a TA user opens in a browser.
var _ = define(`
{{define "debug-nav"}}<p>Target Allocator pages: <a href="/debug/jobs">Jobs</a> · <a href="/debug/targets">Targets</a> · <a href="/debug/scrape_configs">Scrape Configs</a></p>{{end}}
{{define "debug-jobs"}}{{template "head" .View}}{{template "debug-nav"}}
<h2>Jobs</h2>
<table><tr><th>Job</th><th>Target Count</th></tr>
{{range .Jobs}}<tr><td><a href="/debug/job?job_id={{.Name}}">{{.Name}}</a></td><td>{{.Targets}}</td></tr>
{{end}}</table>
</body></html>
{{end}}
{{define "debug-job"}}{{template "head" .View}}{{template "debug-nav"}}
<h2>Job: {{.Job}}</h2>
<table><tr><th>Collector</th><th>Target Count</th></tr>
{{range .Rows}}<tr><td>{{if .Member}}<a href="/debug/collector?collector_id={{.Member}}">{{.Member}}</a>{{else}}<i>unassigned</i>{{end}}</td><td>{{.Targets}}</td></tr>
{{end}}</table>
</body></html>
{{end}}
{{define "debug-targets"}}{{template "head" .View}}{{template "debug-nav"}}
<h2>{{.Title}}</h2>
{{if .Truncated}}<p>Showing the first {{len .Targets}} of {{.Total}} targets.</p>{{end}}
<table><tr><th>Job</th><th>Target</th>{{if not .Member}}<th>Collector</th>{{end}}<th>Endpoint Slice</th></tr>
{{range .Targets}}<tr><td><a href="/debug/job?job_id={{.Job}}">{{.Job}}</a></td><td><a href="/debug/target?target_hash={{.Hash}}">{{.Labels.Get "__address__"}}</a></td>{{if not $.Member}}<td>{{if .Member}}<a href="/debug/collector?collector_id={{.Member}}">{{.Member}}</a>{{else}}<i>unassigned</i>{{end}}</td>{{end}}<td>{{.Labels.Get "__meta_kubernetes_endpointslice_name"}}</td></tr>
{{end}}</table>
</body></html>
{{end}}
{{define "debug-target"}}{{template "head" .View}}{{template "debug-nav"}}
<h2>Target: {{.Labels.Get "__address__"}}</h2>
<table>
<tr><th>Collector</th><td>{{if .Member}}<a href="/debug/collector?collector_id={{.Member}}">{{.Member}}</a>{{else}}<i>unassigned</i>{{end}}</td></tr>
<tr><th>Job</th><td><a href="/debug/job?job_id={{.Job}}">{{.Job}}</a></td></tr>
{{range .Properties}}<tr><th>{{.Name}}</th><td>{{.Value}}</td></tr>
{{end}}</table>
<table><tr><th>Label</th><th>Value</th></tr>
{{range $name, $value := .Labels.Map}}<tr><td>{{$name}}</td><td>{{$value}}</td></tr>
{{end}}</table>
</body></html>
{{end}}
{{define "debug-scrape-configs"}}{{template "head" .View}}{{template "debug-nav"}}
<h2>Scrape Configs</h2>
<table><tr><th>Job</th><th>Scrape Config</th></tr>
{{range .Configs}}<tr><td><a href="/debug/job?job_id={{.Job}}">{{.Job}}</a></td><td><pre>{{.Config}}</pre></td></tr>
{{end}}</table>
</body></html>
{{end}}
`)

// define adds templates to the pages.
func define(text string) struct{} {
	if _, err := pages.New("debug").Parse(text); err != nil {
		panic(err)
	}
	return struct{}{}
}

// WriteDebugJobs writes /debug/jobs: each job and its target count.
func WriteDebugJobs(w http.ResponseWriter, view View, a *shares.Allocation) {
	render(w, "debug-jobs", struct {
		View View
		Jobs []shares.JobCount
	}{view, a.Summary().Jobs})
}

// WriteDebugJob writes /debug/job: each member's target count in job (every
// member, none for a job the allocation does not have, as in the TA), and
// the unassigned ones.
func WriteDebugJob(w http.ResponseWriter, view View, a *shares.Allocation, job string) {
	type row struct {
		Member  string
		Targets int
	}
	data := struct {
		View View
		Job  string
		Rows []row
	}{View: view, Job: job}
	for _, m := range a.Members {
		data.Rows = append(data.Rows, row{m, len(a.Share(job, m).Targets())})
	}
	if n := len(a.Share(job, "").Targets()); n > 0 {
		data.Rows = append(data.Rows, row{"", n})
	}
	render(w, "debug-job", data)
}

// targetsPage is a page of targets, bounded.
type targetsPage struct {
	View   View
	Title  string
	Member string // the member whose targets these are, "" for all
	// Targets are the first maxPageTargets of Total.
	Targets   []shares.Placed
	Total     int
	Truncated bool
}

func (p *targetsPage) add(ts []shares.Placed) {
	p.Total += len(ts)
	p.Targets = append(p.Targets, ts[:min(len(ts), maxPageTargets-len(p.Targets))]...)
	p.Truncated = p.Total > len(p.Targets)
}

// WriteDebugTargets writes /debug/targets: every target with its member.
func WriteDebugTargets(w http.ResponseWriter, view View, a *shares.Allocation) {
	p := targetsPage{View: view, Title: "Targets"}
	for _, job := range a.Jobs() {
		p.add(a.Targets(job))
	}
	render(w, "debug-targets", p)
}

// WriteDebugCollector writes /debug/collector: a member's targets.
func WriteDebugCollector(w http.ResponseWriter, view View, a *shares.Allocation, member string) {
	p := targetsPage{View: view, Title: "Collector: " + member, Member: member}
	for _, job := range a.Jobs() {
		ts := a.Share(job, member).Targets()
		placed := make([]shares.Placed, min(len(ts), maxPageTargets-len(p.Targets)))
		for i := range placed {
			placed[i] = shares.Placed{Job: job, Member: member, Target: ts[i]}
		}
		p.add(placed)
		p.Total += len(ts) - len(placed)
		p.Truncated = p.Total > len(p.Targets)
	}
	render(w, "debug-targets", p)
}

// property is one row of a target's page.
type property struct{ Name, Value string }

// targetProperties are the Kubernetes metadata a target's page shows, by the
// discovered label each comes from.
var targetProperties = []property{
	{"Namespace", "__meta_kubernetes_namespace"},
	{"Service Name", "__meta_kubernetes_service_name"},
	{"Pod Name", "__meta_kubernetes_pod_name"},
	{"Container Name", "__meta_kubernetes_pod_container_name"},
	{"Container Port Name", "__meta_kubernetes_pod_container_port_name"},
	{"Node Name", "__meta_kubernetes_pod_node_name"},
	{"Endpoint Slice Name", "__meta_kubernetes_endpointslice_name"},
}

// FindTarget returns the target whose identity in allocation is hash.
func FindTarget(a *shares.Allocation, hash uint64) (shares.Placed, bool) {
	for _, job := range a.Jobs() {
		ts := a.Targets(job)
		if i := slices.IndexFunc(ts, func(t shares.Placed) bool { return t.Hash == hash }); i >= 0 {
			return ts[i], true
		}
	}
	return shares.Placed{}, false
}

// WriteDebugTarget writes /debug/target: a target's member, job, metadata
// and labels.
func WriteDebugTarget(w http.ResponseWriter, view View, t shares.Placed) {
	ls := t.Labels()
	data := struct {
		View View
		shares.Placed
		Properties []property
		Labels     labels.Labels
	}{View: view, Placed: t, Labels: ls}
	for _, p := range targetProperties {
		data.Properties = append(data.Properties, property{p.Name, ls.Get(p.Value)})
	}
	render(w, "debug-target", data)
}

// WriteDebugScrapeConfigs writes /debug/scrape_configs from the
// /scrape_configs answer body (redacted): each job's config, indented.
func WriteDebugScrapeConfigs(w http.ResponseWriter, view View, body []byte) {
	var configs map[string]any
	if err := json.Unmarshal(body, &configs); err != nil {
		http.Error(w, "decode the scrape configs: "+err.Error(), http.StatusInternalServerError)
		return
	}
	type row struct{ Job, Config string }
	data := struct {
		View    View
		Configs []row
	}{View: view}
	for _, job := range slices.Sorted(maps.Keys(configs)) {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // the page escapes it
		enc.SetIndent("", "  ")
		_ = enc.Encode(configs[job]) // decoded from JSON: it encodes
		data.Configs = append(data.Configs, row{job, b.String()})
	}
	render(w, "debug-scrape-configs", data)
}
