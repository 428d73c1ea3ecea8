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
	"time":    func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"timems":  func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") },
	"link":    JobLink,
	"targets": targets,
}).Parse(`
{{define "head"}}<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>embedded-ta: {{.Group}}</title>
<link rel="icon" href="data:,">
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}th{background:#eee}
code{font-size:.9em}svg{max-width:100%;height:auto}svg text{font-size:13px}
.bar{fill:#4a78b0}.bar.leader{fill:#c2571a}.bar.unassigned{fill:#999}</style></head><body>
<h1>Group {{.Group}} <small>in namespace {{.Namespace}}</small></h1>
<p>Leader: <b>{{if .Leader}}{{.Leader}}{{else}}none{{end}}</b> (epoch {{.Epoch}}, {{if .LeaderFromPeers}}as its peers say: this member cannot read the leader Lease{{else}}lease renewed {{time .LeaderLease.RenewTime}}, duration {{.LeaderLease.LeaseDuration}}{{end}}).
Page served by {{.Identity}}{{if .IsLeader}}, the leader{{end}}. <a href="/">Overview</a> · <a href="/targets">Targets</a> · <a href="/jobs">/jobs</a> · <a href="/scrape_configs">/scrape_configs</a> · <a href="/status">/status</a></p>
{{end}}
{{define "page"}}{{template "head" .View}}
{{if .Allocation}}<h2>Last allocation</h2>
<p id="last-allocation">{{with .Allocation}}Made by {{.Leader}} in epoch {{.Epoch}}{{if not .Changed.IsZero}} after a change of {{.Cause}} that arrived at <time datetime="{{time .Changed}}">{{time .Changed}}</time> ({{$.Age}} before this page){{end}}: it changed the member of {{targets .Moved}}.{{if .Pending}} It is pending: the jobs are not all known yet, so no share is answered from it.{{end}}{{end}}
{{targets .Allocation.Targets}} in {{len .Allocation.Jobs}} jobs, {{.Allocation.Unassigned}} unassigned.</p>
{{with .Allocation.Recent}}<h2>Recent allocations</h2>
<table id="recent-allocations"><tr><th>Change arrived</th><th>Made</th><th>Cause</th><th>Targets moved</th><th>Hand-offs under way</th></tr>
{{range .}}<tr><td>{{if not .Changed.IsZero}}<time datetime="{{timems .Changed}}">{{timems .Changed}}</time>{{end}}</td><td>{{if not .Made.IsZero}}<time datetime="{{timems .Made}}">{{timems .Made}}</time>{{end}}</td><td>{{.Cause}}</td><td>{{.Moved}}</td><td>{{.Handoffs}}</td></tr>
{{end}}</table>{{end}}
{{else}}<p id="follower">{{.Identity}} is a follower and holds no allocation: {{if .LeaderEndpoint}}the leader, {{.Leader}}, serves it and its recent allocations on its status page at <code>{{.LeaderEndpoint}}</code>{{else}}no leader is known{{end}}. Below are the leader and this member as this member sees their Leases: the leader alone watches every member's{{if .GroupSize}} ({{.GroupSize}} members){{end}}.</p>
{{with .Reason}}<p id="reason">This page is not the leader's: {{.}}.</p>{{end}}
{{end}}
<h2>Members</h2>
{{with .Chart}}<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="chart-title" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}">
<title id="chart-title">{{.Title}}</title>
{{range .Bars}}<g class="member{{if .Leader}} leader{{end}}" transform="translate(0,{{.Y}})">
<title>{{.Title}}</title>
<text x="0" y="15">{{.Label}}</text>
{{if .Counted}}<rect class="bar{{if .Leader}} leader{{end}}{{if .Unassigned}} unassigned{{end}}" x="{{$.Chart.BarX}}" y="2" width="{{.Width}}" height="16"/>
<text x="{{.CountX}}" y="15">{{targets .Targets}}</text>{{end}}
{{if .Age}}<text x="{{$.Chart.AgeX}}" y="15">{{.Age}}</text>{{end}}
</g>
{{end}}</svg>{{end}}
{{if .Allocation}}<p>The bars count targets. Series load is the series per scrape of a member's targets, as the members measure them; a target not measured yet weighs the average of those that are, 1 while none is.</p>{{end}}
<table><tr><th>Member (collector_id)</th><th>Endpoint</th><th>Node</th><th>Lease age</th><th>Job Count</th><th>Target Count</th><th>Series Load</th></tr>
{{range .Rows}}<tr><td>{{.Identity}}</td><td>{{.Endpoint}}</td><td>{{.Node}}</td><td>{{.LeaseAge}}</td>{{if .Counted}}<td>{{.Jobs}}</td><td>{{.Targets}}</td><td>{{if not .Unassigned}}{{.Series}}{{end}}</td>{{else}}<td colspan="3">{{if $.Allocation}}not in the allocation yet{{else}}on the leader's page{{end}}</td>{{end}}</tr>
{{end}}</table>
{{if .Allocation}}<h2>Jobs</h2>
<table><tr><th>Job</th><th>Target Count</th><th>Targets</th></tr>
{{range .Allocation.Jobs}}<tr><td>{{.Name}}</td><td>{{.Targets}}</td><td><a href="{{link .Name}}">{{link .Name}}</a></td></tr>
{{end}}</table>
{{template "debug-nav"}}{{end}}
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
// part of the allocation (Counted: the allocation has it).
type row struct {
	MemberView
	Leader, Counted, Unassigned bool
	Jobs, Targets               int
	Series                      int64
}

// chart draws the rows as horizontal bars, one a member, in SVG; lengths
// are in pixels.
type chart struct {
	Title                     string
	Width, Height, BarX, AgeX int
	Bars                      []bar
}

type bar struct {
	row
	Label, Title, Age string
	Y, Width, CountX  int
}

const (
	barHeight = 24 // of a member's line
	barMax    = 320
	labelW    = 220
	countW    = 100
)

// WritePage writes the status page of d: the group's members, drawn, and on
// the leader the allocation; a follower's page names the leader instead.
func WritePage(w http.ResponseWriter, d Document) {
	writePage(w, d, "", http.StatusOK)
}

// WriteFollowerPage writes, with a 503, the page of a member that holds no
// allocation and could not ask its leader for the leader's page: why, and
// the group as this member sees it.
func WriteFollowerPage(w http.ResponseWriter, view View, reason string) {
	writePage(w, Document{View: view}, reason, http.StatusServiceUnavailable)
}

func writePage(w http.ResponseWriter, d Document, reason string, code int) {
	data := struct {
		Document
		Rows   []row
		Chart  chart
		Age    string
		Reason string
	}{Document: d, Reason: reason}
	views := make(map[string]MemberView, len(d.Members))
	for _, m := range d.Members {
		views[m.Identity] = m
	}
	if d.Allocation != nil {
		data.Age = time.Since(d.Allocation.Changed).Round(time.Millisecond).String()
		for _, c := range d.Allocation.Members {
			v, ok := views[c.Identity]
			if !ok {
				v = MemberView{Identity: c.Identity, LeaseAge: "(no Lease seen)"}
			}
			delete(views, c.Identity)
			data.Rows = append(data.Rows, row{MemberView: v, Counted: true, Jobs: c.Jobs, Targets: c.Targets, Series: c.Series})
		}
	}
	// Members whose Lease this member sees but the allocation does not count
	// (all of them on a follower).
	for _, m := range d.Members {
		if _, ok := views[m.Identity]; ok {
			data.Rows = append(data.Rows, row{MemberView: m})
		}
	}
	for i := range data.Rows {
		data.Rows[i].Leader = data.Rows[i].Identity == d.Leader && d.Leader != ""
	}
	if a := d.Allocation; a != nil && a.Unassigned > 0 {
		identity := "(unassigned)"
		if a.OverLimit > 0 {
			identity = fmt.Sprintf("(unassigned: %d over max_targets_per_collector or max_series_per_collector)", a.OverLimit)
		}
		data.Rows = append(data.Rows, row{MemberView: MemberView{Identity: identity}, Counted: true, Unassigned: true, Targets: a.Unassigned})
	}
	data.Chart = draw(d, data.Rows)
	renderCode(w, "page", data, code)
}

// draw lays out rows as bars: a bar's length is its targets over the most
// any row has.
func draw(d Document, rows []row) chart {
	c := chart{BarX: labelW, AgeX: labelW + barMax + countW, Width: labelW + barMax + countW + 160, Height: barHeight * max(len(rows), 1)}
	c.Title = fmt.Sprintf("Members of group %s with their Lease ages", d.Group)
	most := 0
	for _, r := range rows {
		most = max(most, r.Targets)
	}
	if d.Allocation != nil {
		c.Title = fmt.Sprintf("Targets per member of group %s, with their Lease ages", d.Group)
	}
	for i, r := range rows {
		b := bar{row: r, Label: r.Identity, Y: i * barHeight, Age: "Lease age " + r.LeaseAge}
		if r.Leader {
			b.Label += " (leader)"
		}
		if r.Unassigned {
			b.Age = ""
		}
		if r.Targets > 0 {
			b.Width = max(r.Targets*barMax/most, 1)
		}
		b.CountX = labelW + b.Width + 6
		switch {
		case r.Unassigned:
			b.Title = targets(r.Targets) + " no member may take"
		case r.Counted:
			b.Title = fmt.Sprintf("%s: %s in %d jobs, Lease age %s", b.Label, targets(r.Targets), r.Jobs, r.LeaseAge)
		default:
			b.Title = fmt.Sprintf("%s: Lease age %s", b.Label, r.LeaseAge)
		}
		c.Bars = append(c.Bars, b)
	}
	return c
}

// targets counts n targets in words.
func targets(n int) string {
	if n == 1 {
		return "1 target"
	}
	return fmt.Sprintf("%d targets", n)
}

// WriteTargetsPage writes the page of a's targets, with their labels.
func WriteTargetsPage(w http.ResponseWriter, view View, a *shares.Allocation) {
	data := struct {
		View      View
		Targets   []shares.Placed
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
	renderCode(w, name, data, http.StatusOK)
}

func renderCode(w http.ResponseWriter, name string, data any, code int) {
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, data); err != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, "render %s: %v\n", name, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}
