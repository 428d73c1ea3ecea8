package discovery

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/stretchr/testify/require"
)

// rules leave every target as Prometheus's relabel.ProcessBuilder does:
// random lists of rules (rules that remember label names, replace rules of
// the default regex, and rules Prometheus applies itself), each
// applied to many random label sets with one rules value, so that names
// are remembered across targets as in a job.
func TestRulesAreProcessBuilder(t *testing.T) {
	pool := []string{
		`{action: labelmap, regex: __meta_label_(.+)}`,
		`{action: labelmap, regex: "__meta_(.+)_x", replacement: "m_${1}"}`,
		`{action: labelmap, regex: "(a.*)", replacement: "b$1"}`,
		`{action: labeldrop, regex: "tmp_.*"}`,
		`{action: labeldrop, regex: "__meta_label_a.*"}`,
		`{action: labelkeep, regex: "__.*|app|b.*|tmp_.*"}`,
		`{source_labels: [__meta_label_app], target_label: app}`,
		`{source_labels: [__meta_label_app, __meta_label_tmp], separator: "/", target_label: both}`,
		`{source_labels: [__meta_x], target_label: x, replacement: fixed}`,
		`{source_labels: [__meta_x], target_label: x, replacement: ""}`,
		`{source_labels: [__meta_x, app], target_label: tmp_x}`,
		`{source_labels: [__meta_y_x], target_label: "${1}_y"}`,
		`{source_labels: [__meta_y_x], target_label: y, replacement: "pre_$1"}`,
		`{source_labels: [__meta_x], regex: "(.*)", target_label: x}`,
		`{source_labels: [__meta_x], regex: "(a)(.*)", target_label: y, replacement: "$2"}`,
		`{source_labels: [__meta_label_app], regex: "a.*|", action: keep}`,
		`{source_labels: [x], regex: "b", action: drop}`,
		`{source_labels: [__meta_x], modulus: 3, target_label: tmp_mod, action: hashmod}`,
		`{source_labels: [__meta_label_app], target_label: upper, action: uppercase}`,
		`{source_labels: [__meta_x], target_label: "a-b"}`, // no name with the legacy scheme
		`{target_label: x, replacement: fixed}`,
		`{action: labelmap, regex: "tmp_(.*)"}`, // "tmp_" maps to ""
		`{action: labelmap, regex: "__meta_y_(x)", replacement: "x.y"}`,
	}
	names := []string{"__meta_label_app", "__meta_label_tmp", "__meta_x", "__meta_y_x", "__meta_label_a_x",
		"tmp_a", "tmp_", "app", "x", "y", "a_b", "b", "__address__"}
	values := []string{"", "a1", "b", "A", "a", "yes", "10.0.0.1:80"}
	r := rand.New(rand.NewPCG(3, 4))
	kinds := map[string]int{}
	for list := range 300 {
		var doc strings.Builder
		doc.WriteString("scrape_configs:\n- job_name: j\n  relabel_configs:\n")
		for range 1 + r.IntN(6) {
			fmt.Fprintf(&doc, "  - %s\n", pool[r.IntN(len(pool))])
		}
		cfg, err := LoadConfig(confmap(t, doc.String()))
		require.NoError(t, err, doc.String())
		cfgs := cfg.ScrapeConfigs[0].RelabelConfigs
		for _, c := range cfgs {
			if list%3 == 0 { // names checked when a rule applies, as with Prometheus's legacy scheme
				c.NameValidationScheme = model.LegacyValidation
			}
			switch {
			case c.Action == relabel.Replace && wholeValue(c):
				kinds["replace of the whole value"]++
			default:
				kinds[string(c.Action)]++
			}
		}
		rs := newRules(cfgs)
		for target := range 200 {
			b := labels.NewScratchBuilder(0)
			for _, name := range names {
				if r.IntN(2) == 0 {
					b.Add(name, values[r.IntN(len(values))])
				}
			}
			b.Sort()
			ls := b.Labels()
			got, want := labels.NewBuilder(ls), labels.NewBuilder(ls)
			what := fmt.Sprintf("list %d, target %d: %s on %s", list, target, doc.String(), ls)
			keep := rs.process(got)
			require.Equal(t, relabel.ProcessBuilder(want, cfgs...), keep, what)
			if keep {
				require.Equal(t, want.Labels().String(), got.Labels().String(), what)
			}
		}
	}
	for _, kind := range []string{"labelmap", "labeldrop", "labelkeep", "replace of the whole value", "replace"} {
		require.Greater(t, kinds[kind], 30, "%s: %v", kind, kinds)
	}
}

// A name rule forgets what it remembered once it remembers namesRemembered
// names, and then decides as before.
func TestRulesForgetPastTheBound(t *testing.T) {
	cfg, err := LoadConfig(confmap(t, "scrape_configs:\n- job_name: j\n  relabel_configs:\n  - {action: labelmap, regex: __meta_label_(.+)}\n"))
	require.NoError(t, err)
	rs := newRules(cfg.ScrapeConfigs[0].RelabelConfigs)
	for i := range namesRemembered + 10 {
		name := fmt.Sprintf("__meta_label_n%d", i)
		lb := labels.NewBuilder(labels.FromStrings(name, "v"))
		require.True(t, rs.process(lb))
		require.Equal(t, "v", lb.Get(fmt.Sprintf("n%d", i)))
		require.LessOrEqual(t, len(rs.names[0]), namesRemembered)
	}
}
