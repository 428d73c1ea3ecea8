package shares

import (
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/prometheus/prometheus/config"
)

// ScrapeConfigs are the group's scrape configs as /scrape_configs answers
// them, encoded once per config set: with secrets redacted, for plain
// clients, and with their values, for clients with a verified certificate.
type ScrapeConfigs struct {
	redacted, secret Answer
}

// NewScrapeConfigs encodes scrape configs (by job name) as the TA does: each
// config's YAML form as JSON.
func NewScrapeConfigs(configs map[string]*config.ScrapeConfig) (*ScrapeConfigs, error) {
	redacted, err := scrapeConfigsJSON(configs, yamlTree{})
	if err != nil {
		return nil, err
	}
	secret, err := scrapeConfigsJSON(configs, yamlTree{reveal: true})
	if err != nil {
		return nil, err
	}
	return &ScrapeConfigs{redacted: newAnswer("r", redacted), secret: newAnswer("s", secret)}, nil
}

// scrapeConfigsJSON encodes configs with t, which gives the tree a YAML
// round trip would, without the process-wide switch for secrets.
func scrapeConfigsJSON(configs map[string]*config.ScrapeConfig, t yamlTree) ([]byte, error) {
	out := make(map[string]any, len(configs))
	for name, sc := range configs {
		e, err := t.value(reflect.ValueOf(sc))
		if err != nil {
			return nil, fmt.Errorf("job %q: %w", name, err)
		}
		out[name] = e
	}
	return json.Marshal(out)
}
