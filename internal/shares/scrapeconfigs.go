package shares

import (
	"encoding/json"
	"fmt"
	"sync"

	commonconfig "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/config"
	"go.yaml.in/yaml/v2"
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
	redacted, secret, err := encodeScrapeConfigs(configs)
	if err != nil {
		return nil, err
	}
	return &ScrapeConfigs{redacted: newAnswer("r", redacted), secret: newAnswer("s", secret)}, nil
}

// secretMu serialises the use of prometheus/common's process-wide switch
// that makes secrets marshal as their values instead of "<secret>".
var secretMu sync.Mutex

func encodeScrapeConfigs(configs map[string]*config.ScrapeConfig) (redacted, secret []byte, err error) {
	secretMu.Lock()
	defer secretMu.Unlock()
	if redacted, err = scrapeConfigsJSON(configs); err != nil {
		return nil, nil, err
	}
	commonconfig.MarshalSecretValue = true
	defer func() { commonconfig.MarshalSecretValue = false }()
	secret, err = scrapeConfigsJSON(configs)
	return redacted, secret, err
}

func scrapeConfigsJSON(configs map[string]*config.ScrapeConfig) ([]byte, error) {
	out := make(map[string]any, len(configs))
	for name, sc := range configs {
		y, err := yaml.Marshal(sc)
		if err != nil {
			return nil, fmt.Errorf("job %q: %w", name, err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(y, &m); err != nil {
			return nil, fmt.Errorf("job %q: %w", name, err)
		}
		out[name] = jsonable(m)
	}
	return json.Marshal(out)
}

// jsonable turns the map[any]any of YAML into map[string]any for JSON.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case map[string]any:
		for k, e := range v {
			v[k] = jsonable(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = jsonable(e)
		}
		return v
	}
	return v
}
