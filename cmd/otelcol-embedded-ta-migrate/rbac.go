package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// resource is a kind of object a member reads: its API group and plural.
type resource struct{ group, name string }

// sdReads is what Prometheus's Kubernetes service discovery lists and
// watches for each role.
var sdReads = map[string][]resource{
	"pod":           {{"", "pods"}},
	"service":       {{"", "services"}},
	"endpoints":     {{"", "endpoints"}, {"", "services"}, {"", "pods"}},
	"endpointslice": {{"discovery.k8s.io", "endpointslices"}, {"", "services"}, {"", "pods"}},
	"ingress":       {{"networking.k8s.io", "ingresses"}},
	"node":          {{"", "nodes"}},
}

// attachReads is what each attach_metadata setting reads on top, and
// whether it is cluster-scoped.
var attachReads = map[string]struct {
	resource
	cluster bool
}{
	"node":       {resource{"", "nodes"}, true},
	"namespace":  {resource{"", "namespaces"}, true},
	"deployment": {resource{"apps", "replicasets"}, false},
	"job":        {resource{"batch", "jobs"}, false},
	"cronjob":    {resource{"batch", "jobs"}, false},
}

// grants is what service discovery reads: in the collector's own
// namespace (key ""), in other namespaces, and cluster-wide.
type grants struct {
	namespaces map[string]map[resource]bool
	cluster    map[resource]bool
}

func (g *grants) add(ns string, rs ...resource) {
	if g.namespaces[ns] == nil {
		g.namespaces[ns] = map[resource]bool{}
	}
	for _, r := range rs {
		g.namespaces[ns][r] = true
	}
}

// discovery finds what the scrape configs' kubernetes_sd_configs read.
// Service discovery used to run in the Target Allocator's pod, with its
// service account; now the leader runs it, with the collector's.
func (c *collector) discovery(ext map[string]any) grants {
	g := grants{namespaces: map[string]map[resource]bool{}, cluster: map[resource]bool{}}
	cfg, _ := ext["config"].(map[string]any)
	jobs, _ := cfg["scrape_configs"].([]any)
	for _, j := range jobs {
		job, _ := j.(map[string]any)
		name, _ := job["job_name"].(string)
		sds, _ := job["kubernetes_sd_configs"].([]any)
		for _, s := range sds {
			sd, _ := s.(map[string]any)
			if sd["api_server"] != nil || sd["kubeconfig_file"] != nil {
				c.note("job %s: its kubernetes_sd_configs with api_server or kubeconfig_file use credentials of their own: no RBAC made for it", name)
				continue
			}
			role, _ := sd["role"].(string)
			reads, ok := sdReads[strings.ToLower(role)]
			if !ok {
				c.note("job %s: kubernetes_sd_configs role %q: no RBAC made for it", name, role)
				continue
			}
			scopes := c.scopes(sd)
			if role == "node" {
				scopes = nil
			}
			attach, _ := sd["attach_metadata"].(map[string]any)
			for _, k := range sortedKeys(attach) {
				if on, _ := attach[k].(bool); on {
					if a, ok := attachReads[k]; ok && a.cluster {
						g.cluster[a.resource] = true
					} else if ok {
						reads = append(slices.Clone(reads), a.resource)
					}
				}
			}
			if scopes == nil {
				for _, r := range reads {
					g.cluster[r] = true
				}
			}
			for _, ns := range scopes {
				g.add(ns, reads...)
			}
		}
	}
	if _, ok := cfg["scrape_config_files"]; ok {
		c.note("the RBAC printed covers the Kubernetes service discovery of config::scrape_configs, not of scrape_config_files")
	}
	return g
}

// scopes are the namespaces a kubernetes_sd_config reads ("" for the
// collector's own); nil for every namespace.
func (c *collector) scopes(sd map[string]any) []string {
	nsd, _ := sd["namespaces"].(map[string]any)
	own, _ := nsd["own_namespace"].(bool)
	names, _ := nsd["names"].([]any)
	if !own && len(names) == 0 {
		return nil
	}
	var scopes []string
	if own {
		scopes = append(scopes, "")
	}
	for _, n := range names {
		ns, _ := n.(string)
		if ns == c.namespace {
			ns = ""
		}
		if !slices.Contains(scopes, ns) {
			scopes = append(scopes, ns)
		}
	}
	return scopes
}

// leaseRule is what the members need for coordination (examples/rbac).
var leaseRule = rbacv1.PolicyRule{
	APIGroups: []string{"coordination.k8s.io"},
	Resources: []string{"leases"},
	Verbs:     []string{"get", "list", "watch", "create", "update", "delete"},
}

// prometheusCRRules is examples/rbac-prometheus-cr's ClusterRole.
var prometheusCRRules = []rbacv1.PolicyRule{
	{APIGroups: []string{"monitoring.coreos.com"}, Resources: []string{"servicemonitors", "podmonitors", "probes", "scrapeconfigs"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}},
	{APIGroups: []string{""}, Resources: []string{"services", "pods"}, Verbs: []string{"list", "watch"}},
	{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
}

// rbac makes the Role and RoleBinding for Leases (and for service discovery
// in the collector's namespace), those for service discovery in other
// namespaces, and the ClusterRoles for cluster-wide service discovery and
// for prometheus_cr, each bound to the collector's service account.
func (c *collector) rbac(ext map[string]any, prometheusCR bool) ([]document, error) {
	g := c.discovery(ext)
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: c.serviceAccount, Namespace: c.namespace}
	name := c.serviceAccount + "-embedded-ta"
	c.note("the RBAC printed is bound to service account %s (service discovery runs in the members now); what you granted the Target Allocator's service account is no longer used", c.serviceAccount)

	own := []string{"Leases: the members' election and membership (as examples/rbac)."}
	if len(g.namespaces[""]) > 0 {
		own = append(own, "And what kubernetes_sd_configs read in the collector's namespace.")
	}
	docs := roleAndBinding(own, name, c.namespace, append([]rbacv1.PolicyRule{leaseRule}, rules(g.namespaces[""])...), subject)

	needNamespace := func(what string) error {
		if c.namespace == "" {
			return fmt.Errorf("%s must name the service account's namespace: set metadata.namespace or -namespace", what)
		}
		return nil
	}
	for _, ns := range sortedKeys(g.namespaces) {
		if ns == "" {
			continue
		}
		if err := needNamespace("the RoleBinding in namespace " + ns); err != nil {
			return nil, err
		}
		docs = append(docs, roleAndBinding([]string{"What kubernetes_sd_configs read in namespace " + ns + "."},
			name+"-discovery", ns, rules(g.namespaces[ns]), subject)...)
	}
	if len(g.cluster) > 0 {
		if err := needNamespace("the ClusterRoleBinding for service discovery"); err != nil {
			return nil, err
		}
		docs = append(docs, clusterRoleAndBinding([]string{"What kubernetes_sd_configs read in every namespace, and nodes or namespaces."},
			c.namespace+"-"+name+"-discovery", rules(g.cluster), subject)...)
	}
	if prometheusCR {
		if err := needNamespace("the ClusterRoleBinding for prometheus_cr"); err != nil {
			return nil, err
		}
		docs = append(docs, clusterRoleAndBinding([]string{"prometheus_cr: the Prometheus Operator's resources, the Secrets and ConfigMaps they",
			"reference, and their jobs' service discovery (as examples/rbac-prometheus-cr)."},
			c.namespace+"-"+name+"-prometheus-cr", prometheusCRRules, subject)...)
	}
	return docs, nil
}

// rules turns resources into list and watch rules, one per API group.
func rules(rs map[resource]bool) []rbacv1.PolicyRule {
	byGroup := map[string][]string{}
	for r := range rs {
		byGroup[r.group] = append(byGroup[r.group], r.name)
	}
	var out []rbacv1.PolicyRule
	for _, group := range sortedKeys(byGroup) {
		out = append(out, rbacv1.PolicyRule{APIGroups: []string{group}, Resources: slices.Sorted(slices.Values(byGroup[group])), Verbs: []string{"list", "watch"}})
	}
	return out
}

func roleAndBinding(comment []string, name, ns string, rules []rbacv1.PolicyRule, subject rbacv1.Subject) []document {
	meta := metav1.ObjectMeta{Name: name, Namespace: ns}
	role := &rbacv1.Role{TypeMeta: typeMeta("Role"), ObjectMeta: meta, Rules: rules}
	binding := &rbacv1.RoleBinding{TypeMeta: typeMeta("RoleBinding"), ObjectMeta: meta,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}, Subjects: []rbacv1.Subject{subject}}
	return []document{{comment: comment, obj: object(role)}, {obj: object(binding)}}
}

func clusterRoleAndBinding(comment []string, name string, rules []rbacv1.PolicyRule, subject rbacv1.Subject) []document {
	meta := metav1.ObjectMeta{Name: name}
	role := &rbacv1.ClusterRole{TypeMeta: typeMeta("ClusterRole"), ObjectMeta: meta, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{TypeMeta: typeMeta("ClusterRoleBinding"), ObjectMeta: meta,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}, Subjects: []rbacv1.Subject{subject}}
	return []document{{comment: comment, obj: object(role)}, {obj: object(binding)}}
}

func typeMeta(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: kind}
}

// object is a typed object as a map, without the null creationTimestamp
// that every typed object marshals.
func object(v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // RBAC types always marshal
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	return m
}
