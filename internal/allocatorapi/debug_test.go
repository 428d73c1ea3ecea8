package allocatorapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
)

// The TA's debug pages are served from the allocation, under its paths and
// parameters; a follower relays them to its leader.
func TestDebugPages(t *testing.T) {
	pod := sharestest.Target("plain", labels.FromStrings("__address__", "10.0.0.7:8080",
		"__meta_kubernetes_namespace", "shop", "__meta_kubernetes_pod_name", "cart-0",
		"__meta_kubernetes_endpointslice_name", "cart-abcde"), "c-2", 424242)
	src := &source{identity: "c-0", allocation: testAllocation(t, pod)}
	leader := NewHandler(src, http.DefaultClient, "http", zap.NewNop())
	srv := httptest.NewServer(leader)
	defer srv.Close()
	follower := NewHandler(&source{identity: "c-1", leader: strings.TrimPrefix(srv.URL, "http://"), epoch: 3}, srv.Client(), "http", zap.NewNop())

	tests := []struct {
		target   string
		status   int
		contains []string
	}{
		{"/debug/jobs", 200, []string{
			`<a href="/debug/job?job_id=plain">plain</a></td><td>4</td>`,
			`<a href="/debug/job?job_id=with%2fslash">with/slash</a></td><td>3</td>`}},
		{"/debug/job?job_id=plain", 200, []string{
			`<a href="/debug/collector?collector_id=c-0">c-0</a></td><td>1</td>`,
			`<a href="/debug/collector?collector_id=c-1">c-1</a></td><td>2</td>`,
			`<a href="/debug/collector?collector_id=c-2">c-2</a></td><td>1</td>`}},
		{"/debug/job?job_id=nope", 200, []string{`c-0</a></td><td>0</td>`}},
		{"/debug/collector?collector_id=c-2", 200, []string{
			"<h2>Collector: c-2</h2>",
			`<td><a href="/debug/target?target_hash=424242">10.0.0.7:8080</a></td><td>cart-abcde</td>`}},
		{"/debug/targets", 200, []string{
			`10.0.0.7:8080</a></td><td><a href="/debug/collector?collector_id=c-2">c-2</a></td><td>cart-abcde</td>`}},
		{"/debug/target?target_hash=424242", 200, []string{
			"<h2>Target: 10.0.0.7:8080</h2>", "<tr><th>Namespace</th><td>shop</td></tr>",
			"<tr><th>Pod Name</th><td>cart-0</td></tr>", "<tr><td>__meta_kubernetes_endpointslice_name</td><td>cart-abcde</td></tr>"}},
		{"/debug/scrape_configs", 200, []string{`&#34;job_name&#34;: &#34;with&#43;plus&#34;`, `&#34;password&#34;: &#34;&lt;secret&gt;&#34;`}},
		{"/debug/collector", 400, []string{"collector_id must be given once"}},
		{"/debug/collector?collector_id=c-0&collector_id=c-1", 400, nil},
		{"/debug/collector?collector_id=otcta2-0", 404, []string{"no member"}},
		{"/debug/job", 400, []string{"job_id must be given once"}},
		{"/debug/target?target_hash=x", 400, []string{"not a number"}},
		{"/debug/target?target_hash=1", 404, []string{"no target"}},
		{"/debug/jobs?x=1", 400, []string{"unknown query parameter"}},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			for name, h := range map[string]http.Handler{"leader": leader, "follower": follower} {
				resp, body := get(t, h, tt.target)
				require.Equal(t, tt.status, resp.StatusCode, "%s: %s", name, body)
				if tt.status == http.StatusOK {
					assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"), name)
				}
				for _, c := range tt.contains {
					assert.Contains(t, body, c, name)
				}
			}
		})
	}
	_, body := get(t, leader, "/debug/scrape_configs")
	assert.NotContains(t, body, "hunter2", "a debug page never shows a secret")
	_, body = serve(leader, verifiedRequest("/debug/scrape_configs"))
	assert.NotContains(t, body, "hunter2", "not even to a verified client, as in the TA")
}
