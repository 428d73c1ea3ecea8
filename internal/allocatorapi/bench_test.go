package allocatorapi

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/shares/sharestest"
)

// benchAllocation is one job whose collector c-0 owns n targets of about
// ten labels each, as Kubernetes pod discovery gives them.
func benchAllocation(n int) *shares.Allocation {
	targets := make([]shares.Placed, n)
	for i, ls := range benchLabels(n) {
		targets[i] = sharestest.Target("pods", ls, "c-0", uint64(i))
	}
	a, err := sharestest.New(1, "c-0", []string{"c-0", "c-1"}, nil, targets)
	if err != nil {
		panic(err)
	}
	return a
}

func benchLabels(n int) []labels.Labels {
	out := make([]labels.Labels, n)
	for i := range out {
		out[i] = labels.FromStrings(
			"__address__", fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255),
			"__meta_kubernetes_namespace", "default",
			"__meta_kubernetes_pod_name", "app-"+strconv.Itoa(i),
			"__meta_kubernetes_pod_node_name", "node-"+strconv.Itoa(i%100),
			"__meta_kubernetes_pod_phase", "Running",
			"__meta_kubernetes_pod_ip", fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
			"__meta_kubernetes_pod_container_name", "app",
			"__meta_kubernetes_pod_label_app", "app",
			"__meta_kubernetes_pod_label_tier", "backend",
			"__meta_kubernetes_pod_annotation_prometheus_io_scrape", "true",
		)
	}
	return out
}

// BenchmarkAnswer measures a member's targets answer at 10k targets: every
// target encoded (as when all of them are new), a request (the answer
// assembled from its targets' elements), and one whose If-None-Match names
// the current answer (304, no body).
func BenchmarkAnswer(b *testing.B) {
	const n = 10_000
	target := "/jobs/pods/targets?collector_id=c-0"
	b.Run(fmt.Sprintf("encode,targets=%d", n), func(b *testing.B) {
		ls := benchLabels(n)
		b.ReportAllocs()
		var size int
		for b.Loop() {
			encoded := make([]shares.Target, len(ls))
			for i := range ls {
				encoded[i] = sharestest.Target("pods", ls[i], "c-0", uint64(i)).Target
			}
			_, size = shares.NewShare(encoded).ETag()
		}
		b.ReportMetric(float64(size), "bytes/answer")
	})
	for _, tc := range []struct {
		name string
		etag bool
	}{{"unchanged", false}, {"not-modified", true}} {
		b.Run(fmt.Sprintf("%s,targets=%d", tc.name, n), func(b *testing.B) {
			a := benchAllocation(n)
			h := NewHandler(&source{identity: "c-1", allocation: a}, http.DefaultClient, "http", zap.NewNop())
			r := httptest.NewRequest(http.MethodGet, target, nil)
			if tc.etag {
				r.Header.Set("If-None-Match", shareETag(a, "pods", "c-0"))
			}
			b.ReportAllocs()
			var sent int
			for b.Loop() {
				w := &discard{header: http.Header{}}
				h.ServeHTTP(w, r)
				sent = w.n
			}
			b.ReportMetric(float64(sent), "bytes/answer")
		})
	}
}

// discard is a ResponseWriter that counts the body's bytes and keeps none:
// the benchmark measures the handler, not a recorder's buffer.
type discard struct {
	header http.Header
	n      int
}

func (d *discard) Header() http.Header { return d.header }
func (d *discard) WriteHeader(int)     {}
func (d *discard) Write(p []byte) (int, error) {
	d.n += len(p)
	return len(p), nil
}

func shareETag(a *shares.Allocation, job, member string) string {
	etag, _ := a.Share(job, member).ETag()
	return etag
}
