package discovery

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/config"
	"go.yaml.in/yaml/v2"
)

// jobSections are the sections of a Prometheus configuration that make
// jobs. The others (alerting, rule_files, remote_write, storage, ...) mean
// nothing to a target allocator; they are ignored, as the Target Allocator
// ignores them, and IgnoredSections names them so that they can be reported.
var jobSections = map[string]bool{"global": true, "scrape_configs": true, "scrape_config_files": true}

// prometheusSections are the top-level keys of a Prometheus configuration.
var prometheusSections = func() map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeFor[config.Config]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
}()

// IgnoredSections returns, sorted, the sections of raw that a Prometheus
// configuration has but that make no jobs.
func IgnoredSections(raw map[string]any) []string {
	var out []string
	for key := range raw {
		if prometheusSections[key] && !jobSections[key] {
			out = append(out, key)
		}
	}
	slices.Sort(out)
	return out
}

// LoadConfig parses what a Target Allocator config file holds under `config:`
// (a Prometheus config: `global` and `scrape_configs`), given as the generic
// map the collector's confmap produces, and validates it with Prometheus's
// own loader, which also applies the global defaults to every job. An empty or
// nil map is valid and has no jobs.
//
// The other sections of a Prometheus configuration are left out unread
// (IgnoredSections); a key Prometheus does not know is an error.
//
// Errors name the offending key or job. Prometheus's line numbers are removed
// from them: they would point into a YAML document the user never wrote.
func LoadConfig(raw map[string]any) (*config.Config, error) {
	if ignored := IgnoredSections(raw); len(ignored) > 0 {
		raw = maps.Clone(raw)
		for _, key := range ignored {
			delete(raw, key)
		}
	}
	cfg, err := load(raw)
	if err != nil {
		return nil, locate(raw, err)
	}
	// Reads scrape_config_files, which the loader leaves for later.
	if _, err := cfg.GetScrapeConfigs(); err != nil {
		return nil, fmt.Errorf("scrape_config_files: %s", clean(err))
	}
	return cfg, nil
}

func load(raw map[string]any) (*config.Config, error) {
	doc, err := yaml.Marshal(raw)
	if err != nil {
		return nil, err
	}
	// Load only logs about external labels, which we do not use.
	return config.Load(string(doc), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// locate turns a loader error about the whole config into one about the part
// that causes it, by loading `global` and then each job on its own.
func locate(raw map[string]any, err error) error {
	global, hasGlobal := raw["global"]
	if hasGlobal {
		if _, gerr := load(map[string]any{"global": global}); gerr != nil {
			return fmt.Errorf("global: %s", clean(gerr))
		}
	}
	jobs, _ := raw["scrape_configs"].([]any)
	for i, job := range jobs {
		one := map[string]any{"scrape_configs": []any{job}}
		if hasGlobal {
			one["global"] = global
		}
		if _, jerr := load(one); jerr != nil {
			if m, ok := job.(map[string]any); ok {
				if name, ok := m["job_name"].(string); ok && name != "" {
					return fmt.Errorf("scrape_configs: job %q: %s", name, clean(jerr))
				}
			}
			return fmt.Errorf("scrape_configs[%d]: %s", i, clean(jerr))
		}
	}
	// Errors across jobs (a duplicate job name) already name the job.
	return errors.New(clean(err))
}

var yamlLine = regexp.MustCompile(`line \d+: `)

func clean(err error) string {
	msg := yamlLine.ReplaceAllString(err.Error(), "")
	return strings.ReplaceAll(strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  "), "\n  ", "; ")
}
