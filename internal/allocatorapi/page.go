package allocatorapi

import (
	"bytes"
	"html/template"
	"net/http"
	"sort"
	"time"
)

// maxPageTargets bounds the rows of the targets page.
const maxPageTargets = 5000

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"time": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).Parse(`
{{define "head"}}<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>embedded-ta: {{.G.Group}}</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#eee}
code{font-size:.9em}</style></head><body>
<h1>Group {{.G.Group}} <small>in namespace {{.G.Namespace}}</small></h1>
<p>Leader: <b>{{.G.Leader}}</b> (epoch {{.G.Epoch}}, lease renewed {{time .G.LeaseRenewTime}}, duration {{.G.LeaseDuration}}).
Page served by the leader. <a href="/">Overview</a> · <a href="/targets">Targets</a> · <a href="/jobs">/jobs</a> · <a href="/scrape_configs">/scrape_configs</a> · <a href="/status">/status</a></p>
{{end}}
{{define "page"}}{{template "head" .}}
<h2>Members</h2>
<table><tr><th>Member</th><th>Endpoint</th><th>Node</th><th>Lease age</th></tr>
{{range .G.Members}}<tr><td>{{.Identity}}</td><td>{{.Endpoint}}</td><td>{{.Node}}</td><td>{{.LeaseAge}}</td></tr>
{{end}}</table>
<h2>Collectors</h2>
<table><tr><th>Collector</th><th>Job Count</th><th>Target Count</th></tr>
{{range .Collectors}}<tr><td>{{.Name}}</td><td>{{.Jobs}}</td><td>{{.Targets}}</td></tr>
{{end}}</table>
<h2>Jobs</h2>
<table><tr><th>Job</th><th>Target Count</th><th>Targets</th></tr>
{{range .Jobs}}<tr><td>{{.Name}}</td><td>{{.Targets}}</td><td><a href="{{.Link}}">{{.Link}}</a></td></tr>
{{end}}</table>
</body></html>
{{end}}
{{define "targets"}}{{template "head" .}}
<h2>Targets</h2>
{{if .Truncated}}<p>Showing the first {{len .Targets}} of {{.Total}} targets.</p>{{end}}
<table><tr><th>Job</th><th>Target</th><th>Owner</th><th>Labels</th></tr>
{{range .Targets}}<tr><td>{{.Job}}</td><td>{{.Labels.Get "__address__"}}</td><td>{{if .Owner}}{{.Owner}}{{else}}<i>unassigned</i>{{end}}</td>
<td>{{range $name, $value := .Labels.Map}}<code>{{$name}}="{{$value}}"</code><br>{{end}}</td></tr>
{{end}}</table>
</body></html>
{{end}}
`))

type pageCollector struct {
	Name          string
	Jobs, Targets int
}

type pageJob struct {
	Name, Link string
	Targets    int
}

func (h *Handler) page(w http.ResponseWriter, a *Allocation) {
	counts := a.Counts()
	data := struct {
		G          GroupInfo
		Collectors []pageCollector
		Jobs       []pageJob
	}{G: h.src.Group()}
	for _, m := range a.Members {
		data.Collectors = append(data.Collectors, pageCollector{Name: m, Jobs: counts[m][0], Targets: counts[m][1]})
	}
	if c, ok := counts[""]; ok {
		data.Collectors = append(data.Collectors, pageCollector{Name: "(unassigned)", Jobs: c[0], Targets: c[1]})
	}
	for _, name := range a.Jobs() {
		data.Jobs = append(data.Jobs, pageJob{Name: name, Link: jobLink(name), Targets: a.TargetCount(name)})
	}
	render(w, "page", data)
}

func (h *Handler) targetsPage(w http.ResponseWriter, a *Allocation) {
	data := struct {
		G         GroupInfo
		Targets   []Target
		Total     int
		Truncated bool
	}{G: h.src.Group()}
	for _, name := range a.Jobs() {
		ts := a.AllTargets(name)
		data.Total += len(ts)
		for _, t := range ts {
			if len(data.Targets) < maxPageTargets {
				data.Targets = append(data.Targets, t)
			}
		}
	}
	sort.SliceStable(data.Targets, func(i, j int) bool { return data.Targets[i].Job < data.Targets[j].Job })
	data.Truncated = data.Total > len(data.Targets)
	render(w, "targets", data)
}

func render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		httpError(w, http.StatusInternalServerError, "render %s: %v", name, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}
