package discovery

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/stretchr/testify/require"
)

// populate decides what scrape.PopulateLabels decides, over random targets
// and groups whose labels the rules read and write: the same targets
// dropped by relabeling, the same ones Prometheus would not scrape (no or a
// bad address, a bad or zero interval or timeout, a timeout above the
// interval, a histogram flag that is no boolean, a label value that is no
// UTF-8), and the same labels for the others.
func TestPopulateIsPrometheus(t *testing.T) {
	cfg, err := LoadConfig(confmap(t, `
scrape_configs:
- job_name: plain
- job_name: rules
  scrape_interval: 30s
  scrape_timeout: 10s
  params: {module: [http_2xx]}
  relabel_configs:
  - {source_labels: [__meta_drop], regex: "yes", action: drop}
  - {source_labels: [__meta_keep], regex: "no", action: drop}
  - {source_labels: [__meta_address], regex: "(.+)", target_label: __address__}
  - {source_labels: [__meta_interval], regex: "(.+)", target_label: __scrape_interval__}
  - {source_labels: [__meta_timeout], regex: "(.+)", target_label: __scrape_timeout__}
  - {source_labels: [__meta_flag], regex: "(.+)", target_label: __always_scrape_classic_histograms__}
  - {source_labels: [__meta_instance], regex: "(.+)", target_label: instance}
  - {action: labelmap, regex: __meta_label_(.+)}
  - {source_labels: [__address__], modulus: 4, target_label: __tmp_shard, action: hashmod}
  - {source_labels: [__tmp_shard], regex: "3", target_label: shard, replacement: last}
  - {regex: tmp_.*, action: labeldrop}
  - {source_labels: [__meta_pin], regex: "(.+)", target_label: __embedded_ta_member}
`))
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(7, 8))
	pick := func(vs ...string) string { return vs[r.IntN(len(vs))] }
	set := func() model.LabelSet {
		ls := model.LabelSet{}
		for range r.IntN(6) {
			name := pick("__address__", "__meta_drop", "__meta_keep", "__meta_address", "__meta_interval",
				"__meta_timeout", "__meta_flag", "__meta_instance", "__meta_label_app", "__meta_label_tmp_x",
				"__meta_pin", "instance", "app", "__scrape_interval__", "__scheme__", "__param_module")
			ls[model.LabelName(name)] = model.LabelValue(pick("", "yes", "no", "10.0.0.1:80", "h", "a/b", "0s",
				"15s", "1m", "5s", "bad", "true", "maybe", "x\xffy", "collector-1"))
		}
		return ls
	}
	r0, r1 := newRelabeler(FilterRelabelConfig), newRelabeler(FilterRelabelConfig)
	outcomes := map[string]int{}
	for i := range 20_000 {
		job := cfg.ScrapeConfigs[i%len(cfg.ScrapeConfigs)]
		target, group := set(), set()
		if r.IntN(4) > 0 {
			target["__address__"] = model.LabelValue(fmt.Sprintf("10.0.%d.%d:80", r.IntN(4), r.IntN(250)))
		}
		discovered := mergeLabels(nil, sortedLabels(nil, target), sortedLabels(nil, group))
		got, kept, err := r0.populate(job, discovered)
		want, wantErr := scrape.PopulateLabels(r1.lb, job, target, group)
		what := fmt.Sprintf("job %s, target %v, group %v: populate %v %v %v, Prometheus %v %v", job.JobName, target, group, got, kept, err, want, wantErr)
		switch {
		case wantErr != nil:
			outcomes["not scraped"]++
			require.ErrorIs(t, err, errNotScraped, what)
		case want.IsEmpty():
			outcomes["dropped"]++
			require.NoError(t, err, what)
			require.False(t, kept, what)
		default:
			outcomes["kept"]++
			require.NoError(t, err, what)
			require.True(t, kept, what)
			var wantSorted []labels.Label
			want.Range(func(l labels.Label) { wantSorted = append(wantSorted, l) })
			require.Equal(t, wantSorted, got, "the same labels, sorted by name: "+what)
		}
	}
	for o, least := range map[string]int{"not scraped": 5000, "dropped": 200, "kept": 5000} {
		require.Greater(t, outcomes[o], least, "%s: %v", o, outcomes)
	}
	t.Log(outcomes)
}
