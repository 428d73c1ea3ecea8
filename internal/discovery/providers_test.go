package discovery

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A job whose SD has not answered yet is unreported, not empty. Once the
// slow HTTP SD endpoint answers, the job reports with its targets; a job of
// static configs and a job of no SD config at all report at once; a job
// with two SD configs waits for both.
func TestJobsReportOnceEveryConfigHasAnswered(t *testing.T) {
	answer := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-answer:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprint(w, `[{"targets": ["10.0.0.9:9100"]}]`)
	}))
	defer slow.Close()
	defer close(answer)

	d := start(t, fmt.Sprintf(`
scrape_configs:
  - job_name: static
    static_configs: [{targets: ["10.0.0.1:9100"]}]
  - job_name: none
  - job_name: slow
    http_sd_configs: [{url: %[1]q, refresh_interval: 1h}]
  - job_name: both
    static_configs: [{targets: ["10.0.0.2:9100"]}]
    http_sd_configs: [{url: %[1]q, refresh_interval: 1h}]
`, slow.URL), FilterRelabelConfig)

	first := await(t, d, "static and none reported", func(s Snapshot) bool {
		return !s.Unreported["static"] && !s.Unreported["none"] && len(s.Jobs["static"]) == 1
	})
	assert.Equal(t, map[string]bool{"slow": true, "both": true}, first.Unreported,
		"the slow endpoint's jobs are unreported, even the one whose static config answered")
	assert.Empty(t, first.Jobs["slow"])

	answer <- struct{}{}
	answer <- struct{}{}
	last := await(t, d, "every job reported", func(s Snapshot) bool { return len(s.Unreported) == 0 })
	assert.Equal(t, []string{"10.0.0.9:9100"}, addresses(last, "slow"))
	assert.ElementsMatch(t, []string{"10.0.0.2:9100", "10.0.0.9:9100"}, addresses(last, "both"))
	assert.Empty(t, last.Jobs["none"])
}

// Two SD configs of one job may send groups of one source (two static
// configs of one job both name their first group "0"): each provider's are
// its own, and one config's group without targets removes none of the
// other's.
func TestGroupsOfOneSourceFromTwoProviders(t *testing.T) {
	job, _ := staticJob(t, "scrape_configs: [{job_name: j}]")
	group := func(addr string) *targetgroup.Group {
		return &targetgroup.Group{Source: "0", Targets: []model.LabelSet{{model.AddressLabel: model.LabelValue(addr)}}}
	}
	f := newFilter(FilterRelabelConfig)
	res, _ := f.update(job, []change{{groupKey{0, "0"}, group("10.0.0.1:9100")}, {groupKey{1, "0"}, group("10.0.0.2:9100")}})
	assert.ElementsMatch(t, []string{"10.0.0.1:9100", "10.0.0.2:9100"}, targetAddresses(res.sorted))
	res, _ = f.update(job, []change{{groupKey{1, "0"}, &targetgroup.Group{Source: "0"}}})
	assert.Equal(t, []string{"10.0.0.1:9100"}, targetAddresses(res.sorted))
	assert.Equal(t, 1, res.discovered)

	d := start(t, `scrape_configs: [{job_name: j, static_configs: [{targets: ["10.0.0.1:9100"]}, {targets: ["10.0.0.2:9100"]}]}]`, FilterNone)
	s := await(t, d, "j reported", func(s Snapshot) bool { return !s.Unreported["j"] })
	assert.ElementsMatch(t, []string{"10.0.0.1:9100", "10.0.0.2:9100"}, addresses(s, "j"))
}

func targetAddresses(ts []Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Labels().Get(model.AddressLabel)
	}
	return out
}

// Past the report wait, a job reports with the SD configs that have
// answered; a job none of whose SD configs has answered stays unreported. A
// job started anew (its config changed) waits again from its restart,
// though nothing else happens meanwhile.
func TestReportWaitBoundsASilentConfig(t *testing.T) {
	silent := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer silent.Close()
	cfg, err := LoadConfig(confmap(t, fmt.Sprintf(`
scrape_configs:
  - job_name: partial
    static_configs: [{targets: ["10.0.0.1:9100"]}]
    http_sd_configs: [{url: %[1]q, refresh_interval: 1h}]
  - job_name: silent
    http_sd_configs: [{url: %[1]q, refresh_interval: 1h}]
`, silent.URL)))
	require.NoError(t, err)
	logger, _ := newLogger(t)
	d, err := New(cfg, FilterRelabelConfig, logger, nil)
	require.NoError(t, err)
	d.reportWait = 2 * time.Second
	started := time.Now()
	stop := run(t, d)
	defer stop()

	first := await(t, d, "a first snapshot", func(Snapshot) bool { return true })
	assert.Equal(t, map[string]bool{"partial": true, "silent": true}, first.Unreported)
	s := await(t, d, "partial reported", func(s Snapshot) bool { return !s.Unreported["partial"] })
	assert.GreaterOrEqual(t, time.Since(started), d.reportWait, "not before the wait")
	assert.Equal(t, []string{"10.0.0.1:9100"}, addresses(s, "partial"))
	assert.True(t, s.Unreported["silent"], "a job none of whose SD configs answered stays unreported")

	changed := *cfg.ScrapeConfigs[0]
	changed.ScrapeInterval = model.Duration(time.Minute)
	restarted := time.Now()
	d.SetJobs([]*config.ScrapeConfig{&changed, cfg.ScrapeConfigs[1]})
	await(t, d, "partial unreported after its restart", func(s Snapshot) bool { return s.Unreported["partial"] })
	s = await(t, d, "partial reported again", func(s Snapshot) bool { return !s.Unreported["partial"] })
	assert.GreaterOrEqual(t, time.Since(restarted), d.reportWait, "not before the wait")
	assert.Equal(t, []string{"10.0.0.1:9100"}, addresses(s, "partial"))
}
