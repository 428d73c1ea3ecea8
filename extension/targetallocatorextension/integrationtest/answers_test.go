package integrationtest

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	tae "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
)

// get GETs u and returns its answer.
func get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

// metrics reads a member's /metrics: each series' value by its name and
// labels, as name{label="value",...}.
func metrics(t *testing.T, r *replica) map[string]float64 {
	t.Helper()
	resp, body := get(t, r.url()+"/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
			out[name+"{"+strings.Join(ls, ",")+"}"] = v
		}
	}
	return out
}

// A group answers as the TA does, on any member: an unknown job or a
// collector that is no member gets 200 and [], /metrics has the TA's
// metrics (the allocation's on the leader), and the TA's debug pages show
// the allocation.
func TestTheTAsAnswers(t *testing.T) {
	ns := controlPlane.Namespace(t)
	targets := make([]string, 9)
	for i := range targets {
		targets[i] = fmt.Sprintf("10.0.6.%d:9100", i+1)
	}
	replicas := startGroup(t, ns, "answers", 2, withScrapeConfigs(staticJob("static", targets...)), func(c *tae.Config) {
		c.AllocationStrategy = "least-weighted"
	})
	leader := settled(t, replicas, 10*time.Second)
	follower := without(replicas, leader)[0]
	settledAssignment(t, follower, len(targets), replicas...)

	for _, r := range replicas {
		for _, target := range []string{"/jobs/nope/targets?collector_id=" + r.identity, "/jobs/static/targets?collector_id=answers-9"} {
			resp, body := get(t, r.url()+target)
			assert.Equal(t, http.StatusOK, resp.StatusCode, "%s %s", r.identity, target)
			assert.JSONEq(t, "[]", body, "%s %s", r.identity, target)
		}
		resp, _ := get(t, r.url()+"/jobs/static/targets?collector_id=answers-9")
		assert.Equal(t, "false", resp.Header.Get("X-Embedded-Ta-Member"), r.identity)
	}

	m := metrics(t, leader)
	assert.Equal(t, 9.0, m[`opentelemetry_allocator_targets{job_name="static"}`])
	assert.Equal(t, 9.0, m[`opentelemetry_allocator_targets_remaining{}`])
	assert.Equal(t, 0.0, m[`opentelemetry_allocator_targets_unassigned{}`])
	assert.Equal(t, 2.0, m[`opentelemetry_allocator_collectors_allocatable{strategy="least-weighted"}`])
	assert.Equal(t, 2.0, m[`opentelemetry_allocator_collectors_discovered{}`])
	per := 0.0
	for _, r := range replicas {
		n := m[fmt.Sprintf(`opentelemetry_allocator_targets_per_collector{collector_name=%q,strategy="least-weighted"}`, r.identity)]
		assert.Positive(t, n, r.identity)
		per += n
	}
	assert.Equal(t, 9.0, per)
	assert.Positive(t, m[`opentelemetry_allocator_process_targets_duration_seconds{}`])
	assert.Positive(t, m[`opentelemetry_allocator_time_to_allocate{method="SetTargets",strategy="least-weighted"}`])
	assert.Positive(t, m[`opentelemetry_allocator_http_duration_seconds{path="/jobs/:job_id/targets"}`])

	m = metrics(t, follower)
	assert.NotContains(t, m, `opentelemetry_allocator_targets_remaining{}`, "the allocation's metrics come from the leader only")
	assert.Positive(t, m[`opentelemetry_allocator_http_duration_seconds{path="/jobs/:job_id/targets"}`], "the requests it answered")

	resp, body := get(t, follower.url()+"/debug/jobs")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, `<a href="/debug/job?job_id=static">static</a></td><td>9</td>`)
	resp, body = get(t, follower.url()+"/debug/collector?collector_id="+follower.identity)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, "10.0.6.")
}
