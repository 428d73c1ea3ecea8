package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/kube"
)

// notice says that a Target Allocator (TA) key of the configuration does
// not apply here, and why. Start logs each once.
type notice struct {
	key, reason string
	// warn is set when the TA would behave differently with the key.
	warn bool
}

// notices are the TA keys of cfg that are set but do not apply to a member
// with settings s: accepted, never refused, and said so once.
func (cfg *Config) notices(s settings) []notice {
	var out []notice
	if cfg.KubeConfigFilePath != "" && s.auth.File != cfg.KubeConfigFilePath {
		out = append(out, notice{key: "kube_config_file_path", reason: fmt.Sprintf(
			"%s does not exist: the kube client uses auth_type %s, as the TA then uses its in-cluster configuration", cfg.KubeConfigFilePath, s.auth.Type)})
	}
	if cfg.CollectorSelector != nil {
		out = append(out, notice{key: "collector_selector", reason: fmt.Sprintf(
			"not needed: the members of group %s are the collectors that run this extension with it, known by their member Leases in namespace %s", s.group, s.namespace)})
	}
	if ns := cfg.CollectorNamespace; ns != "" {
		n := notice{key: "collector_namespace", reason: fmt.Sprintf("not needed: the members of group %s are in namespace %s, with their Leases", s.group, s.namespace)}
		if ns != s.namespace {
			n.reason = fmt.Sprintf("not applied: the members of group %s are in namespace %s, with their Leases, not in %s (namespace sets where the Leases are)", s.group, s.namespace, ns)
			n.warn = true
		}
		out = append(out, n)
	}
	for _, section := range discovery.IgnoredSections(cfg.Config) {
		out = append(out, notice{key: "config::" + section, reason: "ignored: it makes no jobs, as in the TA"})
	}
	if cr := cfg.PrometheusCR; cr.Enabled && cr.EvaluationInterval != 0 {
		out = append(out, notice{key: "prometheus_cr::evaluation_interval", reason: "no effect: the jobs have no rules to evaluate, as in the TA"})
	}
	if len(cfg.Telemetry) > 0 {
		out = append(out, notice{key: "telemetry", warn: true, reason: "not applied: the extension's metrics are part of the collector's own telemetry (service::telemetry)"})
	}
	if d := cfg.CollectorNotReadyGracePeriod; d != 0 {
		out = append(out, notice{key: "collector_not_ready_grace_period", reason: fmt.Sprintf(
			"not applied: a member keeps its targets while its member Lease is current; they move lease::duration (%s) after it stops renewing", cfg.Lease.Duration)})
	}
	return out
}

// report logs the notices once, at Start.
func (e *allocatorExtension) report() {
	for _, n := range e.cfg.notices(e.s) {
		log := e.set.Logger.Info
		if n.warn {
			log = e.set.Logger.Warn
		}
		log("Target Allocator setting does not apply", zap.String("key", n.key), zap.String("reason", n.reason))
	}
}

// authSetting names the setting the kube client's credentials come from.
func (s settings) authSetting() string {
	if s.auth.File != "" {
		return "kube_config_file_path " + s.auth.File
	}
	if s.auth.Type == kube.AuthKubeConfig {
		return "auth_type " + string(s.auth.Type) + " (" + s.auth.KubeconfigFile() + ")"
	}
	return "auth_type " + string(s.auth.Type)
}
