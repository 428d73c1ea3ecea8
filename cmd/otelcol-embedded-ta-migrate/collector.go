package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// allocatorPort is the target_allocator extension's endpoint port here.
const allocatorPort = 8080

// collector is one OpenTelemetryCollector being migrated, in place.
type collector struct {
	o              options
	obj, spec      map[string]any
	name           string // metadata.name
	namespace      string // metadata.namespace, or -namespace; "" when neither is set
	serviceAccount string
	daemonset      bool
	notes          []string
}

func newCollector(obj map[string]any, o options) (*collector, error) {
	meta, err := mapAt(obj, "metadata")
	if err != nil {
		return nil, err
	}
	name, _ := meta["name"].(string)
	if name == "" {
		return nil, errors.New("metadata.name is not set")
	}
	ns, _ := meta["namespace"].(string)
	if o.namespace != "" {
		if ns != "" && ns != o.namespace {
			return nil, fmt.Errorf("metadata.namespace is %s, -namespace says %s", ns, o.namespace)
		}
		ns = o.namespace
		meta["namespace"] = ns
	}
	spec, err := mapAt(obj, "spec")
	if err != nil || spec == nil {
		return nil, errors.Join(err, errors.New("spec is not set"))
	}
	return &collector{o: o, obj: obj, spec: spec, name: name, namespace: ns}, nil
}

func (c *collector) note(format string, args ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, args...))
}

// warn notes what keeps the output from running as it is.
func (c *collector) warn(format string, args ...any) {
	c.note("warning: "+format, args...)
}

// migrate rewrites the collector and returns it with its RBAC.
func (c *collector) migrate() ([]document, error) {
	c.dropServerFields()
	if err := c.mode(); err != nil {
		return nil, err
	}
	c.serviceAccount, _ = c.spec["serviceAccount"].(string)
	if c.serviceAccount == "" {
		c.serviceAccount = operatorName(c.name, "collector") // the one the operator creates
	}
	ext, prometheusCR, err := c.extension()
	if err != nil {
		return nil, err
	}
	cfg, err := c.config(ext)
	if err != nil {
		return nil, err
	}
	c.spec["image"] = c.o.image
	// The members allocate among themselves: no Target Allocator Deployment,
	// and no rewriting of the prometheus receiver by the operator.
	c.spec["targetAllocator"] = map[string]any{"enabled": false}
	if err := c.env(); err != nil {
		return nil, err
	}
	if err := c.ports(); err != nil {
		return nil, err
	}
	if c.o.image == defaultImage {
		c.checkDistribution(cfg)
	}
	rbac, err := c.rbac(ext, prometheusCR)
	if err != nil {
		return nil, err
	}
	return append([]document{{comment: c.comment(), obj: c.obj}}, rbac...), nil
}

// comment explains the collector document's mode.
func (c *collector) comment() []string {
	sts := operatorName(c.name, "collector")
	lines := []string{
		"OpenTelemetryCollector " + c.name + " with embedded-ta (otelcol-embedded-ta-migrate): its members",
		"allocate the targets among themselves; the operator's Target Allocator is off.",
	}
	if c.daemonset {
		return append(lines,
			"mode: daemonset, as before: one member on each node, for per-node allocation. DaemonSet",
			"pods have no ordinal, so target_allocator::group names the group ("+sts+").")
	}
	return append(lines,
		"mode: statefulset: its pods are "+sts+"-0, -1, ...; each member keeps its name, and so",
		"its member Lease and its share, across restarts, and its group is the StatefulSet's",
		"name ("+sts+"), taken from the pod name: no identity or group to set.")
}

// dropServerFields removes what the API server sets, so that the output
// applies as a fresh object (a copy of `kubectl get -o yaml` works).
func (c *collector) dropServerFields() {
	meta, _ := c.obj["metadata"].(map[string]any)
	dropped := false
	for _, k := range []string{"resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink"} {
		if _, ok := meta[k]; ok {
			delete(meta, k)
			dropped = true
		}
	}
	if ann, ok := meta["annotations"].(map[string]any); ok {
		if _, ok := ann["kubectl.kubernetes.io/last-applied-configuration"]; ok {
			delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
			dropped = true
		}
		if len(ann) == 0 {
			delete(meta, "annotations")
		}
	}
	if _, ok := c.obj["status"]; ok {
		delete(c.obj, "status")
		dropped = true
	}
	if dropped {
		c.note("status and the metadata the API server sets are left out")
	}
}

// mode keeps a DaemonSet (per-node allocation needs a member on each node)
// and makes everything else a StatefulSet: the operator runs its Target
// Allocator with these two modes only.
func (c *collector) mode() error {
	mode, _ := c.spec["mode"].(string)
	switch mode {
	case "statefulset":
	case "daemonset":
		c.daemonset = true
	case "", "deployment":
		c.note("spec.mode %s is now statefulset: a member's name, its Lease and its share then outlive restarts", orDefault(mode, "unset (deployment)"))
		c.spec["mode"] = "statefulset"
	case "sidecar":
		return errors.New("spec.mode is sidecar: the Target Allocator serves statefulset and daemonset collectors, and so does embedded-ta")
	default:
		return fmt.Errorf("spec.mode %q is none of statefulset, daemonset, deployment", mode)
	}
	return nil
}

// taPodSettings are spec.targetAllocator fields of the Target Allocator's
// own Deployment, which is no longer there.
var taPodSettings = []string{"affinity", "env", "image", "nodeSelector", "observability", "podDisruptionBudget",
	"podSecurityContext", "replicas", "resources", "securityContext", "serviceAccount", "tolerations", "topologySpreadConstraints"}

// prometheusCRKeys maps spec.targetAllocator.prometheusCR's fields to the
// TA config file's prometheus_cr keys, which target_allocator reads.
var prometheusCRKeys = map[string]string{
	"enabled":                         "enabled",
	"scrapeInterval":                  "scrape_interval",
	"evaluationInterval":              "evaluation_interval",
	"scrapeProtocols":                 "scrape_protocols",
	"scrapeClasses":                   "scrape_classes",
	"allowNamespaces":                 "allow_namespaces",
	"denyNamespaces":                  "deny_namespaces",
	"secretNamespaces":                "secret_namespaces",
	"denyFSAccessThroughSMs":          "deny_fs_access_through_sms",
	"serviceMonitorSelector":          "service_monitor_selector",
	"serviceMonitorNamespaceSelector": "service_monitor_namespace_selector",
	"podMonitorSelector":              "pod_monitor_selector",
	"podMonitorNamespaceSelector":     "pod_monitor_namespace_selector",
	"scrapeConfigSelector":            "scrape_config_selector",
	"scrapeConfigNamespaceSelector":   "scrape_config_namespace_selector",
	"probeSelector":                   "probe_selector",
	"probeNamespaceSelector":          "probe_namespace_selector",
}

// extension makes the target_allocator extension's settings from
// spec.targetAllocator, with the operator's defaults where it writes them
// into the TA config file. prometheusCR reports prometheus_cr enabled.
func (c *collector) extension() (ext map[string]any, prometheusCR bool, err error) {
	ta, err := mapAt(c.obj, "spec", "targetAllocator")
	if err != nil {
		return nil, false, err
	}
	ext = map[string]any{
		"endpoint":            fmt.Sprintf("0.0.0.0:%d", allocatorPort),
		"allocation_strategy": "consistent-hashing",
		"filter_strategy":     "relabel-config",
	}
	if c.daemonset {
		ext["group"] = operatorName(c.name, "collector")
	}
	var podSettings []string
	for _, k := range sortedKeys(ta) {
		v := ta[k]
		switch {
		case k == "enabled":
		case k == "allocationStrategy":
			ext["allocation_strategy"] = v
		case k == "filterStrategy":
			if v == "none" {
				c.note(`spec.targetAllocator.filterStrategy none is filter_strategy "" (every discovered target is allocated)`)
				v = ""
			}
			ext["filter_strategy"] = v
		case k == "prometheusCR":
			cr, err := c.prometheusCR(v)
			if err != nil {
				return nil, false, err
			}
			if cr != nil {
				ext["prometheus_cr"] = cr
				prometheusCR = true
			}
		case slices.Contains(taPodSettings, k):
			podSettings = append(podSettings, k)
		case k == "collectorNotReadyGracePeriod":
			c.note("spec.targetAllocator.collectorNotReadyGracePeriod left out: a member keeps its targets while its member Lease is current")
		case k == "allowInsecureAuthSecrets":
			c.note("spec.targetAllocator.allowInsecureAuthSecrets left out: secret values go to verified TLS clients only (target_allocator::tls with client_ca_file)")
		default:
			c.note("spec.targetAllocator.%s left out: the target_allocator extension has no such setting", k)
		}
	}
	if len(podSettings) > 0 {
		c.note("spec.targetAllocator.{%s} left out: settings of the Target Allocator's own pods, which are no longer there", strings.Join(podSettings, ", "))
	}
	return ext, prometheusCR, nil
}

// prometheusCR makes target_allocator::prometheus_cr from
// spec.targetAllocator.prometheusCR; nil when it is not enabled.
func (c *collector) prometheusCR(v any) (map[string]any, error) {
	if v == nil {
		return nil, nil
	}
	cr, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("spec.targetAllocator.prometheusCR is %s, not an object", describe(v))
	}
	if enabled, _ := cr["enabled"].(bool); !enabled {
		if len(cr) > 1 {
			c.note("spec.targetAllocator.prometheusCR is not enabled: its settings are left out")
		}
		return nil, nil
	}
	out := map[string]any{}
	for _, k := range sortedKeys(cr) {
		key, ok := prometheusCRKeys[k]
		if !ok {
			c.note("spec.targetAllocator.prometheusCR.%s left out: target_allocator::prometheus_cr has no such setting", k)
			continue
		}
		out[key] = cr[k]
	}
	var none []string
	for _, kind := range []string{"serviceMonitor", "podMonitor", "probe", "scrapeConfig"} {
		if cr[kind+"Selector"] == nil {
			none = append(none, kind+"Selector")
		}
	}
	if len(none) > 0 {
		c.note("spec.targetAllocator.prometheusCR.{%s} not set: as with the Target Allocator, no resource of those kinds is selected ({} selects every one)", strings.Join(none, ", "))
	}
	return out, nil
}

// config moves the prometheus receiver's scrape configuration into the
// extension, puts prometheus_allocated in its place and adds the extension.
func (c *collector) config(ext map[string]any) (map[string]any, error) {
	var cfg map[string]any
	switch v := c.spec["config"].(type) {
	case map[string]any:
		cfg = v
	case string:
		return nil, errors.New("spec.config is a string: opentelemetry.io/v1beta1 holds the collector configuration as an object (v1alpha1 held a string)")
	case nil:
		return nil, errors.New("spec.config is not set")
	default:
		return nil, fmt.Errorf("spec.config is %s, not an object", describe(v))
	}
	receivers, err := mapAt(cfg, "receivers")
	if err != nil {
		return nil, fmt.Errorf("spec.config: %w", err)
	}
	promValue, ok := receivers["prometheus"]
	if !ok {
		return nil, errors.New("spec.config.receivers has no prometheus receiver, the one the operator's Target Allocator serves")
	}
	if _, ok := receivers["prometheus_allocated"]; ok {
		return nil, errors.New("spec.config.receivers already has prometheus_allocated")
	}
	extensions, err := mapAt(cfg, "extensions")
	if err != nil {
		return nil, fmt.Errorf("spec.config: %w", err)
	}
	if _, ok := extensions["target_allocator"]; ok {
		return nil, errors.New("spec.config.extensions already has target_allocator")
	}
	prom, _ := promValue.(map[string]any)
	if promValue != nil && prom == nil {
		return nil, fmt.Errorf("spec.config.receivers.prometheus is %s, not an object", describe(promValue))
	}

	allocated := map[string]any{}
	var dropped []string
	for _, k := range sortedKeys(prom) {
		v := prom[k]
		switch k {
		case "config":
			scrape, ok := v.(map[string]any)
			if v != nil && !ok {
				return nil, fmt.Errorf("spec.config.receivers.prometheus.config is %s, not an object", describe(v))
			}
			if len(scrape) > 0 {
				ext["config"] = scrape
			}
			if _, ok := scrape["scrape_config_files"]; ok {
				c.note("receivers::prometheus::config::scrape_config_files moved too: their jobs are allocated among the members, so every member needs the files, as every collector pod did")
			}
		case "trim_metric_suffixes", "scrape_on_shutdown":
			allocated[k] = v
		case "target_allocator":
			if err := c.receiverTargetAllocator(v, allocated); err != nil {
				return nil, err
			}
		default:
			dropped = append(dropped, k)
		}
	}
	if len(dropped) > 0 {
		c.note("receivers::prometheus::{%s} left out: prometheus_allocated has no such settings", strings.Join(dropped, ", "))
	}
	delete(receivers, "prometheus")
	receivers["prometheus_allocated"] = allocated
	for _, id := range sortedKeys(receivers) {
		if strings.HasPrefix(id, "prometheus/") {
			c.note("receivers::%s stays as it is: the Target Allocator never served it, and each member scrapes all of its targets", id)
		}
	}

	service, err := mapAt(cfg, "service")
	if err != nil {
		return nil, fmt.Errorf("spec.config: %w", err)
	}
	if service == nil {
		service = map[string]any{}
		cfg["service"] = service
	}
	pipelines, err := mapAt(service, "pipelines")
	if err != nil {
		return nil, fmt.Errorf("spec.config.service: %w", err)
	}
	var using []string
	for _, id := range sortedKeys(pipelines) {
		p, err := mapAt(pipelines, id)
		if err != nil {
			return nil, fmt.Errorf("spec.config.service.pipelines: %w", err)
		}
		list, _ := p["receivers"].([]any)
		for i, r := range list {
			if r == "prometheus" {
				list[i] = "prometheus_allocated"
				using = append(using, id)
			}
		}
	}
	if len(using) == 0 {
		c.note("no pipeline uses receivers::prometheus, so none uses prometheus_allocated")
	}

	if extensions == nil {
		extensions = map[string]any{}
		cfg["extensions"] = extensions
	}
	extensions["target_allocator"] = ext
	list, ok := service["extensions"].([]any)
	if service["extensions"] != nil && !ok {
		return nil, fmt.Errorf("spec.config.service.extensions is %s, not a list", describe(service["extensions"]))
	}
	service["extensions"] = append(list, "target_allocator")
	return cfg, nil
}

// receiverTargetAllocator carries over what prometheus_allocated has of
// the prometheus receiver's target_allocator settings: the operator sets
// endpoint, interval (30s, prometheus_allocated's default) and
// collector_id, which prometheus_allocated knows by itself.
func (c *collector) receiverTargetAllocator(v any, allocated map[string]any) error {
	if v == nil {
		return nil
	}
	ta, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("spec.config.receivers.prometheus.target_allocator is %s, not an object", describe(v))
	}
	var dropped []string
	for _, k := range sortedKeys(ta) {
		sd, ok := ta[k].(map[string]any)
		if k != "http_sd_config" || !ok {
			dropped = append(dropped, k)
			continue
		}
		for _, sk := range sortedKeys(sd) {
			if sk == "refresh_interval" {
				allocated["http_sd_config"] = map[string]any{"refresh_interval": sd[sk]}
			} else {
				dropped = append(dropped, "http_sd_config::"+sk)
			}
		}
	}
	if len(dropped) > 0 {
		c.note("receivers::prometheus::target_allocator::{%s} left out: prometheus_allocated asks its own member's allocator API", strings.Join(dropped, ", "))
	}
	return nil
}

// podEnv is the downward API environment the extension reads its identity,
// namespace, advertised address and node from (as examples/operator sets it).
var podEnv = []struct{ name, fieldPath string }{
	{"POD_NAME", "metadata.name"},
	{"POD_NAMESPACE", "metadata.namespace"},
	{"POD_IP", "status.podIP"},
	{"NODE_NAME", "spec.nodeName"},
}

func (c *collector) env() error {
	env, ok := c.spec["env"].([]any)
	if c.spec["env"] != nil && !ok {
		return fmt.Errorf("spec.env is %s, not a list", describe(c.spec["env"]))
	}
	for _, want := range podEnv {
		entry := map[string]any{"name": want.name, "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": want.fieldPath}}}
		i := slices.IndexFunc(env, func(e any) bool {
			m, _ := e.(map[string]any)
			return m["name"] == want.name
		})
		if i < 0 {
			env = append(env, entry)
			continue
		}
		m, _ := env[i].(map[string]any)
		if ref, _ := mapAt(m, "valueFrom", "fieldRef"); ref == nil || ref["fieldPath"] != want.fieldPath {
			c.note("spec.env %s now reads %s: the target_allocator extension takes its defaults from it", want.name, want.fieldPath)
			env[i] = entry
		}
	}
	c.spec["env"] = env
	return nil
}

// ports exposes the allocator API's port, as examples/operator does.
func (c *collector) ports() error {
	ports, ok := c.spec["ports"].([]any)
	if c.spec["ports"] != nil && !ok {
		return fmt.Errorf("spec.ports is %s, not a list", describe(c.spec["ports"]))
	}
	for _, p := range ports {
		m, _ := p.(map[string]any)
		if port, _ := m["port"].(float64); port == allocatorPort {
			if m["name"] != "allocator" {
				c.warn("spec.ports already has port %d (%v), where the allocator API listens: change target_allocator::endpoint", allocatorPort, m["name"])
			}
			return nil
		}
	}
	c.spec["ports"] = append(ports, map[string]any{"name": "allocator", "port": allocatorPort})
	return nil
}

// distribution is what otelcol-embedded-ta is built with
// (builder-config.yaml): component types and their deprecated aliases.
var distribution = map[string][]string{
	"extensions": {"target_allocator", "health_check", "pprof", "bearertokenauth"},
	"receivers":  {"prometheus_allocated", "prometheus", "otlp"},
	"processors": {"batch", "memory_limiter"},
	"exporters":  {"debug", "otlp_grpc", "otlp", "otlp_http", "otlphttp", "prometheus"},
	"connectors": {},
}

// checkDistribution warns of components the default image does not have.
func (c *collector) checkDistribution(cfg map[string]any) {
	for _, kind := range sortedKeys(distribution) {
		components, _ := cfg[kind].(map[string]any)
		for _, id := range sortedKeys(components) {
			typ, _, _ := strings.Cut(id, "/")
			if !slices.Contains(distribution[kind], typ) {
				c.warn("%s::%s: %s is not part of otelcol-embedded-ta (builder-config.yaml), so the collector would not start; "+
					"build a distribution with it and this repository's two components, and pass its image with -image", kind, id, typ)
			}
		}
	}
}

// operatorName is the operator's name for an object of the collector
// name: "<name>-<suffix>", the name cut so that the whole fits 63
// characters.
func operatorName(name, suffix string) string {
	if max := 63 - len(suffix) - 1; len(name) > max {
		name = strings.TrimRight(name[:max], "-.")
	}
	return name + "-" + suffix
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
