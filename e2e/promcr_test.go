package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringclient "github.com/prometheus-operator/prometheus-operator/pkg/client/versioned"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/embedded-ta/embedded-ta/internal/demotarget"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/testpki"
)

// crClusterRole reads the ClusterRole of examples/rbac-prometheus-cr.
func crClusterRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	raw, err := os.ReadFile("../examples/rbac-prometheus-cr/rbac.yaml")
	require.NoError(t, err)
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var role rbacv1.ClusterRole
		require.NoError(t, yaml.Unmarshal([]byte(doc), &role))
		if role.Kind == "ClusterRole" {
			return &role
		}
	}
	t.Fatal("no ClusterRole in examples/rbac-prometheus-cr/rbac.yaml")
	return nil
}

// grantCluster binds a copy of role, named after the account, to the
// service account ns/account, cluster-wide, until the test ends.
func grantCluster(t *testing.T, ns, account string, role *rbacv1.ClusterRole) {
	t.Helper()
	ctx := context.Background()
	rbac := controlPlane.Client.RbacV1()
	role = role.DeepCopy()
	role.ObjectMeta = metav1.ObjectMeta{Name: ns + "-" + account}
	_, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: account, Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = rbac.ClusterRoleBindings().Delete(ctx, role.Name, metav1.DeleteOptions{})
		_ = rbac.ClusterRoles().Delete(ctx, role.Name, metav1.DeleteOptions{})
	})
}

// crConfig is localConfig with prometheus_cr on, every resource selected,
// and the Secrets of namespace secrets readable.
func crConfig(t *testing.T, kubeconfig, ns, secrets string) string {
	t.Helper()
	cfg := strings.Replace(readFile(localConfig(t, kubeconfig, ns)),
		"    filter_strategy: relabel-config\n",
		"    filter_strategy: relabel-config\n    prometheus_cr:\n      enabled: true\n      scrape_interval: 1s\n"+
			"      service_monitor_selector: {}\n      pod_monitor_selector: {}\n      probe_selector: {}\n      scrape_config_selector: {}\n"+
			"      secret_namespaces: ["+secrets+"]\n", 1)
	require.Contains(t, cfg, "prometheus_cr:")
	path := filepath.Join(t.TempDir(), "collector-cr.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

var (
	counterLineRE = regexp.MustCompile(`^TargetAllocator_total\{(.*)\} `)
	instanceRE    = regexp.MustCompile(`(?:^|,)instance="([^"]+)"`)
	jobRE         = regexp.MustCompile(`(?:^|,)job="([^"]+)"`)
)

// exportedSeries returns "<job> <instance>" of every demo counter that the
// replicas export, and fails if two replicas export one.
func exportedSeries(procs []*process) (map[string]string, error) {
	owners := map[string]string{}
	for _, p := range procs {
		resp, err := http.Get("http://" + p.exporter + "/metrics")
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			m := counterLineRE.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			var job, instance string
			if j := jobRE.FindStringSubmatch(m[1]); j != nil {
				job = j[1]
			}
			if i := instanceRE.FindStringSubmatch(m[1]); i != nil {
				instance = i[1]
			}
			s := job + " " + instance
			if other, dup := owners[s]; dup {
				resp.Body.Close()
				return nil, fmt.Errorf("%s is scraped by %s and %s", s, other, p.name)
			}
			owners[s] = p.name
		}
		resp.Body.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return owners, nil
}

// basicAuthServiceMonitor is a ServiceMonitor named web that selects the
// Services labelled app=web and scrapes their port metrics with the basic
// auth of Secret secret's keys user and password.
func basicAuthServiceMonitor(secret string) *monitoringv1.ServiceMonitor {
	key := func(k string) corev1.SecretKeySelector {
		return corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: k}
	}
	return &monitoringv1.ServiceMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: monitoringv1.ServiceMonitorSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Endpoints: []monitoringv1.Endpoint{{Port: "metrics", HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{
				HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{HTTPConfigWithoutTLS: monitoringv1.HTTPConfigWithoutTLS{
					BasicAuth: &monitoringv1.BasicAuth{Username: key("user"), Password: key("password")},
				}},
			}}},
		},
	}
}

// caPEM is a CA certificate, for a ServiceMonitor's TLS CA.
func caPEM(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(testpki.New(t).CAFile)
	require.NoError(t, err)
	return b
}

// Real otelcol-embedded-ta processes, with exactly the Role of examples/rbac
// and the ClusterRole of examples/rbac-prometheus-cr, scrape the targets of
// a ServiceMonitor (a Service's EndpointSlices, with basic auth from a
// Secret) and of a PodMonitor (pods), each target by exactly one member;
// editing the PodMonitor's selector and deleting the ServiceMonitor stop
// the scrapes of what they no longer select. Without any one permission of
// the ClusterRole, a fresh replica says which it misses.
func TestPrometheusCRScrapedOnceWithExampleRBAC(t *testing.T) {
	controlPlane.InstallPrometheusOperatorCRDs(t)
	ctx := context.Background()
	ns := controlPlane.Namespace(t) // the members'
	// The resources and their targets live in another namespace: reading
	// them takes the ClusterRole, not the members' Role.
	apps := controlPlane.Namespace(t)
	mon, err := monitoringclient.NewForConfig(controlPlane.Config)
	require.NoError(t, err)
	core := controlPlane.Client

	// Service web: EndpointSlices with real targets on this host's address.
	ip := kubetest.HostIPv4(t)
	webTargets := map[string]*demotarget.Target{}
	want := map[string]bool{}
	var webAddrs []string
	for range 3 {
		target, err := demotarget.Start(net.JoinHostPort(ip, "0"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = target.Close() })
		webTargets[target.Addr] = target
		webAddrs = append(webAddrs, target.Addr)
		want["web "+target.Addr] = true // the ServiceMonitor's job label is the Service's name
	}
	controlPlane.Service(t, apps, "web", "metrics", map[string]string{"app": "web"}, webAddrs...)
	_, err = core.CoreV1().Secrets(apps).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "web-auth"},
		Data:       map[string][]byte{"user": []byte("scraper"), "password": []byte("hunter2")},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = mon.MonitoringV1().ServiceMonitors(apps).Create(ctx, basicAuthServiceMonitor("web-auth"), metav1.CreateOptions{})
	require.NoError(t, err)
	// A ServiceMonitor whose TLS CA is in a ConfigMap; it selects no Service.
	_, err = core.CoreV1().ConfigMaps(apps).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "ca"}, Data: map[string]string{"ca.crt": string(caPEM(t))},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = mon.MonitoringV1().ServiceMonitors(apps).Create(ctx, &monitoringv1.ServiceMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "tls"},
		Spec: monitoringv1.ServiceMonitorSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "none"}},
			Endpoints: []monitoringv1.Endpoint{{Port: "metrics", Scheme: new(monitoringv1.SchemeHTTPS), HTTPConfigWithProxyAndTLSFiles: monitoringv1.HTTPConfigWithProxyAndTLSFiles{
				HTTPConfigWithTLSFiles: monitoringv1.HTTPConfigWithTLSFiles{TLSConfig: &monitoringv1.TLSConfig{SafeTLSConfig: monitoringv1.SafeTLSConfig{
					CA: monitoringv1.SecretOrConfigMap{ConfigMap: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "ca"}, Key: "ca.crt"}},
				}}},
			}}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	// Pods at loopback IPs, each a real target, selected by a PodMonitor.
	podTargets := map[string]*demotarget.Target{}
	for i := range 4 {
		host := fmt.Sprintf("127.0.0.%d", 60+i)
		target, err := demotarget.Start(host + ":9100")
		require.NoError(t, err)
		t.Cleanup(func() { _ = target.Close() })
		podTargets[target.Addr] = target
		want[apps+"/pods "+target.Addr] = true // a PodMonitor's job label is <namespace>/<name>
		controlPlane.RunningPod(t, apps, fmt.Sprintf("app-%d", i), host, "node-a", 9100,
			map[string]string{"app": "pods", "half": strconv.Itoa(i % 2)})
	}
	_, err = mon.MonitoringV1().PodMonitors(apps).Create(ctx, &monitoringv1.PodMonitor{
		ObjectMeta: metav1.ObjectMeta{Name: "pods"},
		Spec: monitoringv1.PodMonitorSpec{
			Selector:            metav1.LabelSelector{MatchLabels: map[string]string{"app": "pods"}},
			PodMetricsEndpoints: []monitoringv1.PodMetricsEndpoint{{Port: new("metrics")}},
		},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	role := rbacRole(t)
	clusterRole := crClusterRole(t)
	controlPlane.Grant(t, ns, "otcta-collector", role.DeepCopy())
	grantCluster(t, ns, "otcta-collector", clusterRole)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.ServiceAccount(t, ns, "otcta-collector"), ns)
	config := crConfig(t, kubeconfig, ns, apps)
	procs := startGroup(t, kubeconfig, "otcta-collector", 2, config)
	settled(t, procs, 60*time.Second)

	var owners map[string]string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		owners, err = exportedSeries(procs)
		if !assert.NoError(c, err) {
			return
		}
		got := map[string]bool{}
		for s := range owners {
			if !strings.HasPrefix(s, "annotated-pods ") {
				got[s] = true
			}
		}
		assert.Equal(c, want, got)
	}, 90*time.Second, 250*time.Millisecond)
	perReplica := map[string]int{}
	for _, o := range owners {
		perReplica[o]++
	}
	t.Logf("measured: %d ServiceMonitor and PodMonitor targets scraped, per replica %v", len(want), perReplica)
	// From the targets' side: one scraper each (1 s interval: at most 3 scrapes in 2.5 s).
	time.Sleep(5 * time.Second)
	all := map[string]*demotarget.Target{}
	for a, tg := range webTargets {
		all[a] = tg
	}
	for a, tg := range podTargets {
		all[a] = tg
	}
	assertSingleScraper(t, all, time.Now().Add(-5*time.Second), time.Now())
	for addr, tg := range all {
		assert.NotEmpty(t, tg.Scrapes(), "%s was never scraped", addr)
	}

	// Without each permission of the ClusterRole in turn, a fresh replica
	// names what it misses.
	for ri, rule := range clusterRole.Rules {
		for _, resource := range rule.Resources {
			for vi, verb := range rule.Verbs {
				t.Run(resource+"/"+verb, func(t *testing.T) {
					// The rule loses the verb on this resource only.
					reduced := clusterRole.DeepCopy()
					orig := reduced.Rules[ri]
					verbs := slices.Delete(slices.Clone(orig.Verbs), vi, vi+1)
					others := slices.DeleteFunc(slices.Clone(orig.Resources), func(r string) bool { return r == resource })
					reduced.Rules = slices.Delete(reduced.Rules, ri, ri+1)
					if len(verbs) > 0 {
						reduced.Rules = append(reduced.Rules, rbacv1.PolicyRule{APIGroups: orig.APIGroups, Resources: orig.Resources, Verbs: verbs})
					}
					if len(others) > 0 {
						reduced.Rules = append(reduced.Rules, rbacv1.PolicyRule{APIGroups: orig.APIGroups, Resources: others, Verbs: []string{verb}})
					}
					account := "no-" + resource + "-" + verb
					leases := role.DeepCopy()
					leases.Name = account
					controlPlane.Grant(t, ns, account, leases)
					grantCluster(t, ns, account, reduced)
					token := kubetest.WriteKubeconfig(t, controlPlane.ServiceAccount(t, ns, account), ns)
					p := startProcess(t, token, account+"-0", crConfig(t, token, ns, apps))
					// client-go's log lines say `cannot <verb> resource "<resource>"`
					// (escaped in zap's JSON); the operator's permission check says
					// `missing "<verb>" permission on resource "<resource>"`.
					missing := []string{
						fmt.Sprintf(`cannot %s resource "%s"`, verb, resource),
						fmt.Sprintf(`missing %q permission on resource %q`, verb, resource),
					}
					require.Eventually(t, func() bool {
						for _, line := range strings.Split(readFile(p.log), "\n") {
							for _, m := range missing {
								if strings.Contains(line, m) || strings.Contains(line, strings.ReplaceAll(m, `"`, `\"`)) {
									t.Logf("%s", line)
									return true
								}
							}
						}
						return false
					}, 45*time.Second, 250*time.Millisecond, "no log line says %s", missing[0])
				})
			}
		}
	}

	// stopped waits until the targets are no longer scraped while the others still are.
	stopped := func(what string, gone, kept map[string]*demotarget.Target) {
		t.Helper()
		since := time.Now()
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			now := time.Now()
			for addr, tg := range gone {
				s := tg.Scrapes()
				assert.True(c, len(s) == 0 || now.Sub(s[len(s)-1]) > 4*time.Second, "%s is still scraped", addr)
			}
			for addr, tg := range kept {
				assert.LessOrEqual(c, tg.MaxGap(now.Add(-3*time.Second), now), 3*time.Second, "%s is no longer scraped", addr)
			}
		}, 60*time.Second, 500*time.Millisecond)
		last := since
		for _, tg := range gone {
			for _, at := range tg.Scrapes() {
				if at.After(last) {
					last = at
				}
			}
		}
		t.Logf("measured: after %s, the last scrape of what it no longer selects came %s later", what, last.Sub(since).Round(100*time.Millisecond))
	}
	// Editing the PodMonitor's selector: the pods it no longer selects are no longer scraped.
	pm, err := mon.MonitoringV1().PodMonitors(apps).Get(ctx, "pods", metav1.GetOptions{})
	require.NoError(t, err)
	pm.Spec.Selector.MatchLabels["half"] = "0"
	_, err = mon.MonitoringV1().PodMonitors(apps).Update(ctx, pm, metav1.UpdateOptions{})
	require.NoError(t, err)
	gone, kept := map[string]*demotarget.Target{}, map[string]*demotarget.Target{}
	for addr, tg := range podTargets {
		if strings.HasPrefix(addr, "127.0.0.61:") || strings.HasPrefix(addr, "127.0.0.63:") {
			gone[addr] = tg
		} else {
			kept[addr] = tg
		}
	}
	for addr, tg := range webTargets {
		kept[addr] = tg
	}
	stopped("the PodMonitor's selector edit", gone, kept)

	// Deleting the ServiceMonitor: its targets are no longer scraped.
	require.NoError(t, mon.MonitoringV1().ServiceMonitors(apps).Delete(ctx, "web", metav1.DeleteOptions{}))
	for addr := range webTargets {
		delete(kept, addr)
	}
	stopped("the ServiceMonitor's deletion", webTargets, kept)

}
