package status

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/embedded-ta/embedded-ta/internal/shares"
)

// maxPageTargets bounds the rows of the targets page.
const maxPageTargets = 5000

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"time": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"link": JobLink,
}).Parse(`
{{define "head"}}<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>embedded-ta: {{.Group}}</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#eee}
code{font-size:.9em}</style></head><body>
<h1>Group {{.Group}} <small>in namespace {{.Namespace}}</small></h1>
<p>Leader: <b>{{.Leader}}</b> (epoch {{.Epoch}}, {{if .LeaderFromPeers}}as its peers say: this member cannot read the leader Lease{{else}}lease renewed {{time .LeaderLease.RenewTime}}, duration {{.LeaderLease.LeaseDuration}}{{end}}).
Page served by the leader. <a href="/">Overview</a> · <a href="/targets">Targets</a> · <a href="/jobs">/jobs</a> · <a href="/scrape_configs">/scrape_configs</a> · <a href="/status">/status</a></p>
{{end}}
{{define "page"}}{{template "head" .View}}
<h2>Members</h2>
<table><tr><th>Member (collector_id)</th><th>Endpoint</th><th>Node</th><th>Lease age</th><th>Job Count</th><th>Target Count</th></tr>
{{range .Rows}}<tr><td>{{.Identity}}</td><td>{{.Endpoint}}</td><td>{{.Node}}</td><td>{{.LeaseAge}}</td><td>{{.Jobs}}</td><td>{{.Targets}}</td></tr>
{{end}}</table>
<h2>Jobs</h2>
<table><tr><th>Job</th><th>Target Count</th><th>Targets</th></tr>
{{range .Allocation.Jobs}}<tr><td>{{.Name}}</td><td>{{.Targets}}</td><td><a href="{{link .Name}}">{{link .Name}}</a></td></tr>
{{end}}</table>
</body></html>
{{end}}
{{define "targets"}}{{template "head" .View}}
<h2>Targets</h2>
{{if .Truncated}}<p>Showing the first {{len .Targets}} of {{.Total}} targets.</p>{{end}}
<table><tr><th>Job</th><th>Target</th><th>Member</th><th>Labels</th></tr>
{{range .Targets}}<tr><td>{{.Job}}</td><td>{{.Labels.Get "__address__"}}</td><td>{{if .Member}}{{.Member}}{{else}}<i>unassigned</i>{{end}}</td>
<td>{{range $name, $value := .Labels.Map}}<code>{{$name}}="{{$value}}"</code><br>{{end}}</td></tr>
{{end}}</table>
</body></html>
{{end}}
`))

// JobLink is the path of a job's targets in the allocator API.
func JobLink(job string) string { return "/jobs/" + url.QueryEscape(job) + "/targets" }

// row is one member on the page: its Lease, as this member sees it, and its
// part of the allocation.
type row struct {
	MemberView
	Jobs, Targets int
}

// WritePage writes the status page of d, which must hold an allocation.
func WritePage(w http.ResponseWriter, d Document) {
	data := struct {
		Document
		Rows []row
	}{Document: d}
	views := make(map[string]MemberView, len(d.Members))
	for _, m := range d.Members {
		views[m.Identity] = m
	}
	for _, c := range d.Allocation.Members {
		v, ok := views[c.Identity]
		if !ok {
			v = MemberView{Identity: c.Identity, LeaseAge: "(no Lease seen)"}
		}
		data.Rows = append(data.Rows, row{MemberView: v, Jobs: c.Jobs, Targets: c.Targets})
	}
	if n := d.Allocation.Unassigned; n > 0 {
		identity := "(unassigned)"
		if over := d.Allocation.OverLimit; over > 0 {
			identity = fmt.Sprintf("(unassigned: %d over max_targets_per_collector)", over)
		}
		data.Rows = append(data.Rows, row{MemberView: MemberView{Identity: identity}, Targets: n})
	}
	render(w, "page", data)
}

// WriteTargetsPage writes the page of a's targets, with their labels.
func WriteTargetsPage(w http.ResponseWriter, view View, a *shares.Allocation) {
	data := struct {
		View      View
		Targets   []shares.Target
		Total     int
		Truncated bool
	}{View: view}
	for _, job := range a.Jobs() {
		ts := a.Targets(job)
		data.Total += len(ts)
		data.Targets = append(data.Targets, ts[:min(len(ts), maxPageTargets-len(data.Targets))]...)
	}
	sort.SliceStable(data.Targets, func(i, j int) bool { return data.Targets[i].Job < data.Targets[j].Job })
	data.Truncated = data.Total > len(data.Targets)
	render(w, "targets", data)
}

func render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, "render %s: %v\n", name, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}
