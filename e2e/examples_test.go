package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/embedded-ta/embedded-ta/internal/demotarget"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

var kubectl = filepath.Join("..", "bin", "kubectl")

// run runs a command and returns its combined output.
func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func namespace(t *testing.T, name string) {
	t.Helper()
	_, err := controlPlane.Client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = controlPlane.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// Every manifest of examples/statefulset, examples/scrape-targets,
// examples/operator (with the
// operator's CRD installed), examples/rbac-prometheus-cr (alone and as a
// component) and the Helm example's RBAC is accepted by the real API
// server, as `kubectl apply --dry-run=server` sends it.
func TestExamplesAcceptedByTheAPIServer(t *testing.T) {
	namespace(t, "otctargetallocator")
	controlPlane.InstallOpenTelemetryOperatorCRD(t)
	admin := "KUBECONFIG=" + kubetest.WriteKubeconfig(t, controlPlane.Config, "default")

	out, err := run(t, []string{admin}, kubectl, "apply", "--dry-run=server", "-k", "../examples/statefulset")
	require.NoError(t, err, out)
	for _, want := range []string{"serviceaccount/otcta-collector", "role.rbac.authorization.k8s.io/otcta-collector",
		"rolebinding.rbac.authorization.k8s.io/otcta-collector", "configmap/otcta-collector-", "service/otcta-collector",
		"statefulset.apps/otcta-collector"} {
		assert.Contains(t, out, want)
	}
	t.Logf("kubectl apply --dry-run=server -k examples/statefulset:\n%s", out)

	out, err = run(t, []string{admin}, kubectl, "apply", "--dry-run=server", "-k", "../examples/scrape-targets")
	require.NoError(t, err, out)
	for _, want := range []string{"configmap/otcta-scrape-target-", "deployment.apps/otcta-scrape-target"} {
		assert.Contains(t, out, want)
	}

	out, err = run(t, []string{admin}, kubectl, "apply", "--dry-run=server", "-k", "../examples/operator")
	require.NoError(t, err, out)
	for _, want := range []string{"serviceaccount/otcta-collector", "role.rbac.authorization.k8s.io/otcta-collector",
		"rolebinding.rbac.authorization.k8s.io/otcta-collector", "opentelemetrycollector.opentelemetry.io/otcta"} {
		assert.Contains(t, out, want+" created (server dry run)")
	}

	// examples/rbac-prometheus-cr on its own, and as the component added to
	// examples/statefulset (in a kustomization of the test's, which names
	// both by relative paths, as kustomize requires).
	out, err = run(t, []string{admin}, kubectl, "apply", "--dry-run=server", "-f", "../examples/rbac-prometheus-cr/rbac.yaml")
	require.NoError(t, err, out)
	assert.Contains(t, out, "clusterrolebinding.rbac.authorization.k8s.io/otcta-collector-prometheus-cr created (server dry run)")
	dir := t.TempDir()
	examples, err := filepath.Abs("../examples")
	require.NoError(t, err)
	rel, err := filepath.Rel(dir, examples)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(fmt.Sprintf(
		"resources:\n  - %s/statefulset\ncomponents:\n  - %s/rbac-prometheus-cr\n", rel, rel)), 0o600))
	out, err = run(t, []string{admin}, kubectl, "apply", "--dry-run=server", "-k", dir)
	require.NoError(t, err, out)
	for _, want := range []string{"statefulset.apps/otcta-collector", "clusterrole.rbac.authorization.k8s.io/otcta-collector-prometheus-cr",
		"clusterrolebinding.rbac.authorization.k8s.io/otcta-collector-prometheus-cr"} {
		assert.Contains(t, out, want+" created (server dry run)")
	}

	// The Helm example's RBAC, as the chart installs it from the values
	// (with values-prometheus-cr.yaml on top).
	manifests := filepath.Join(t.TempDir(), "helm-rbac.yaml")
	require.NoError(t, os.WriteFile(manifests, []byte(helmRBAC(t, helmValues(t, true), "otctargetallocator")), 0o600))
	out, err = run(t, []string{admin}, kubectl, "apply", "--dry-run=server", "-n", "otctargetallocator", "-f", manifests)
	require.NoError(t, err, out)
	for _, want := range []string{"serviceaccount/otcta-collector", "role.rbac.authorization.k8s.io/otcta-collector",
		"rolebinding.rbac.authorization.k8s.io/otcta-collector", "clusterrole.rbac.authorization.k8s.io/otcta-collector-prometheus-cr",
		"clusterrolebinding.rbac.authorization.k8s.io/otcta-collector-prometheus-cr"} {
		assert.Contains(t, out, want+" created (server dry run)")
	}
}

// helmValues reads examples/helm/values.yaml and, with prometheusCR,
// values-prometheus-cr.yaml on top, merged as Helm merges values files:
// objects key by key, anything else replaced.
func helmValues(t *testing.T, prometheusCR bool) map[string]any {
	t.Helper()
	files := []string{"../examples/helm/values.yaml"}
	if prometheusCR {
		files = append(files, "../examples/helm/values-prometheus-cr.yaml")
	}
	values := map[string]any{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var v map[string]any
		require.NoError(t, yaml.Unmarshal(raw, &v))
		mergeValues(values, v)
	}
	return values
}

func mergeValues(dst, src map[string]any) {
	for k, v := range src {
		if sub, ok := v.(map[string]any); ok {
			if d, ok := dst[k].(map[string]any); ok {
				mergeValues(d, sub)
				continue
			}
		}
		dst[k] = v
	}
}

// helmRBAC is the RBAC the opentelemetry-collector chart installs with
// values: its service account (serviceAccount.create), the extraManifests,
// and with clusterRole.create its ClusterRole with clusterRole.rules and a
// ClusterRoleBinding to the service account in the release's namespace
// (the chart's serviceaccount.yaml, extraManifests.yaml, clusterrole.yaml
// and clusterrolebinding.yaml).
func helmRBAC(t *testing.T, values map[string]any, namespace string) string {
	t.Helper()
	var docs []any
	sa, _ := values["serviceAccount"].(map[string]any)
	require.Equal(t, true, sa["create"], "the chart creates the service account")
	docs = append(docs, map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": sa["name"]}})
	extra, _ := values["extraManifests"].([]any)
	docs = append(docs, extra...)
	if cr, _ := values["clusterRole"].(map[string]any); cr["create"] == true {
		binding, _ := cr["clusterRoleBinding"].(map[string]any)
		docs = append(docs,
			map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": cr["name"]}, "rules": cr["rules"]},
			map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": map[string]any{"name": binding["name"]},
				"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cr["name"]},
				"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": sa["name"], "namespace": namespace}}})
	}
	var b strings.Builder
	for _, d := range docs {
		out, err := yaml.Marshal(d)
		require.NoError(t, err)
		b.WriteString("---\n")
		b.Write(out)
	}
	return b.String()
}

// The Helm example grants what examples/rbac and examples/rbac-prometheus-cr
// grant, to the service account its pods run as.
func TestHelmRBACIsTheExamples(t *testing.T) {
	values := helmValues(t, true)
	sa := values["serviceAccount"].(map[string]any)["name"]
	var role rbacv1.Role
	var binding rbacv1.RoleBinding
	for _, m := range values["extraManifests"].([]any) {
		b, err := yaml.Marshal(m)
		require.NoError(t, err)
		switch m.(map[string]any)["kind"] {
		case "Role":
			require.NoError(t, yaml.Unmarshal(b, &role))
		case "RoleBinding":
			require.NoError(t, yaml.Unmarshal(b, &binding))
		}
	}
	assert.Equal(t, rbacRole(t).Rules, role.Rules, "examples/rbac's Role")
	assert.Equal(t, rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}, binding.RoleRef)
	assert.Equal(t, []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.(string)}}, binding.Subjects)

	raw, err := os.ReadFile("../examples/rbac-prometheus-cr/rbac.yaml")
	require.NoError(t, err)
	var clusterRole rbacv1.ClusterRole
	require.NoError(t, yaml.Unmarshal([]byte(strings.Split(string(raw), "\n---\n")[0]), &clusterRole))
	require.Equal(t, "ClusterRole", clusterRole.Kind)
	b, err := yaml.Marshal(values["clusterRole"].(map[string]any)["rules"])
	require.NoError(t, err)
	var rules []rbacv1.PolicyRule
	require.NoError(t, yaml.Unmarshal(b, &rules))
	assert.Equal(t, clusterRole.Rules, rules, "examples/rbac-prometheus-cr's ClusterRole")
	assert.Equal(t, true, values["clusterRole"].(map[string]any)["create"])

	// values.yaml alone turns prometheus_cr on nowhere and grants nothing cluster-wide.
	base := helmValues(t, false)
	assert.Nil(t, base["clusterRole"])
	assert.NotContains(t, fmt.Sprint(base["alternateConfig"]), "prometheus_cr")
}

// Every example gives a member the same memory, sized for a leader (the
// statefulset's comment says for which scale).
func TestExamplesSizeMembersAlike(t *testing.T) {
	raw, err := os.ReadFile("../examples/statefulset/statefulset.yaml")
	require.NoError(t, err)
	var sts appsv1.StatefulSet
	require.NoError(t, yaml.Unmarshal([]byte(strings.Split(string(raw), "\n---\n")[0]), &sts))
	want := sts.Spec.Template.Spec.Containers[0].Resources
	require.False(t, want.Limits.Memory().IsZero(), "the statefulset example sets no memory limit")
	require.False(t, want.Requests.Memory().IsZero(), "the statefulset example requests no memory")

	var cr struct {
		Spec struct {
			Resources corev1.ResourceRequirements `json:"resources"`
		} `json:"spec"`
	}
	raw, err = os.ReadFile("../examples/operator/opentelemetrycollector.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &cr))
	var values struct {
		Resources corev1.ResourceRequirements `json:"resources"`
	}
	raw, err = os.ReadFile("../examples/helm/values.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &values))
	for name, got := range map[string]corev1.ResourceRequirements{"operator": cr.Spec.Resources, "helm": values.Resources} {
		assert.True(t, want.Requests.Memory().Equal(*got.Requests.Memory()), "%s: memory request %s, the statefulset's %s", name, got.Requests.Memory(), want.Requests.Memory())
		assert.True(t, want.Limits.Memory().Equal(*got.Limits.Memory()), "%s: memory limit %s, the statefulset's %s", name, got.Limits.Memory(), want.Limits.Memory())
	}
}

// scrapeTargetConfig is the configuration of examples/scrape-targets' pods.
const scrapeTargetConfig = "../examples/scrape-targets/target.yaml"

// exampleConfigs are the collector configurations in examples/, each as a file.
func exampleConfigs(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	configs := map[string]string{"statefulset": "../examples/statefulset/collector.yaml", "scrape-targets": scrapeTargetConfig}

	var cr struct {
		Spec struct {
			Config map[string]any `json:"config"`
		} `json:"spec"`
	}
	raw, err := os.ReadFile("../examples/operator/opentelemetrycollector.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &cr))
	var values struct {
		AlternateConfig map[string]any `json:"alternateConfig"`
	}
	raw, err = os.ReadFile("../examples/helm/values.yaml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &values))
	helmCR, _ := helmValues(t, true)["alternateConfig"].(map[string]any)
	for name, cfg := range map[string]map[string]any{"operator": cr.Spec.Config, "helm": values.AlternateConfig, "helm-prometheus-cr": helmCR} {
		require.NotEmpty(t, cfg, "no collector config in the %s example", name)
		b, err := yaml.Marshal(cfg)
		require.NoError(t, err)
		configs[name] = filepath.Join(dir, name+".yaml")
		require.NoError(t, os.WriteFile(configs[name], b, 0o600))
	}
	return configs
}

// The collector configuration of every example is valid for the
// distribution, with the environment a pod of the StatefulSet has.
func TestExampleConfigsValidate(t *testing.T) {
	pod := []string{"POD_NAME=otcta-collector-0", "POD_NAMESPACE=otctargetallocator", "POD_IP=10.0.0.10", "NODE_NAME=node-a"}
	for name, path := range exampleConfigs(t) {
		t.Run(name, func(t *testing.T) {
			out, err := run(t, pod, otelcol, "validate", "--config", path)
			assert.NoError(t, err, out)
		})
	}
}

// rbacRole reads the Role of examples/rbac.
func rbacRole(t *testing.T) *rbacv1.Role {
	t.Helper()
	raw, err := os.ReadFile("../examples/rbac/rbac.yaml")
	require.NoError(t, err)
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var role rbacv1.Role
		require.NoError(t, yaml.Unmarshal([]byte(doc), &role))
		if role.Kind == "Role" {
			role.Namespace = ""
			return &role
		}
	}
	t.Fatal("no Role in examples/rbac/rbac.yaml")
	return nil
}

// localConfig is the statefulset example's collector configuration made to
// run here: the kubeconfig in place of the in-cluster service account, and
// loopback addresses.
func localConfig(t *testing.T, kubeconfig, ns string) string {
	t.Helper()
	raw, err := os.ReadFile("../examples/statefulset/collector.yaml")
	require.NoError(t, err)
	cfg := strings.NewReplacer(
		"    endpoint: 0.0.0.0:8080\n", "    endpoint: ${env:ALLOCATOR_ENDPOINT}\n    auth_type: kubeConfig\n",
		"    advertise: ${env:POD_IP}:8080\n", "",
		"    endpoint: ${env:POD_IP}:13133", "    endpoint: 127.0.0.1:0",
		"            - role: pod\n", "            - role: pod\n              kubeconfig_file: "+kubeconfig+"\n",
		// Out of the cluster, own_namespace has no meaning: name the namespace.
		"                own_namespace: true", "                names: ["+ns+"]",
		"scrape_interval: 30s", "scrape_interval: 1s",
		"    interval: 30s", "    interval: 1s",
		"      refresh_interval: 30s", "      refresh_interval: 1s",
		"    endpoint: 0.0.0.0:8889", "    endpoint: ${env:EXPORTER_ENDPOINT}",
		"service:\n", "service:\n  telemetry:\n    logs: {encoding: json}\n    metrics:\n      readers:\n        - pull:\n            exporter:\n              prometheus:\n                host: 127.0.0.1\n                port: ${env:TELEMETRY_PORT}\n",
	).Replace(string(raw))
	path := filepath.Join(t.TempDir(), "collector.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

// The Role of the examples is enough: replicas running with a token of a
// service account bound to exactly that Role elect, allocate the pods that
// Kubernetes service discovery finds, and scrape them. And it is no more
// than enough: without any one of its permissions a member says which.
func TestExampleRBACIsEnoughAndNoMore(t *testing.T) {
	ns := controlPlane.Namespace(t)
	role := rbacRole(t)
	controlPlane.Grant(t, ns, "otcta-collector", role.DeepCopy())
	sa := controlPlane.ServiceAccount(t, ns, "otcta-collector")
	kubeconfig := kubetest.WriteKubeconfig(t, sa, ns)
	config := localConfig(t, kubeconfig, ns)

	// Two annotated pods with real targets behind their loopback IPs, one not annotated.
	want := []string{}
	for i, ip := range []string{"127.0.0.31", "127.0.0.32", "127.0.0.33"} {
		target, err := demotarget.Start(ip + ":9100")
		require.NoError(t, err)
		t.Cleanup(func() { _ = target.Close() })
		pod := controlPlane.RunningPod(t, ns, fmt.Sprintf("app-%d", i), ip, "node-a", 9100, nil)
		if i < 2 {
			pod.Annotations = map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9100"}
			_, err = controlPlane.Client.CoreV1().Pods(ns).Update(context.Background(), pod, metav1.UpdateOptions{})
			require.NoError(t, err)
			want = append(want, "annotated-pods "+ip+":9100")
		}
	}
	procs := startGroup(t, kubeconfig, "otcta-collector", 2, config)
	settled(t, procs, 60*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := run(t, nil, "curl", "-s", "http://"+procs[0].endpoint+"/jobs/annotated-pods/targets")
			t.Logf("allocation: %s", out)
			out, _ = run(t, nil, "curl", "-s", "http://"+procs[0].exporter+"/metrics")
			t.Logf("exporter: %s", out)
		}
	})
	union(t, procs, want, 60*time.Second)

	// Without each permission in turn, a fresh replica names what it misses.
	for ri, rule := range role.Rules {
		for vi, verb := range rule.Verbs {
			resource := rule.Resources[0]
			t.Run(resource+"/"+verb, func(t *testing.T) {
				reduced := role.DeepCopy()
				reduced.Name = fmt.Sprintf("reduced-%s-%s", resource, verb)
				r := &reduced.Rules[ri]
				r.Verbs = append(append([]string{}, r.Verbs[:vi]...), r.Verbs[vi+1:]...)
				account := "reduced-" + resource + "-" + verb
				controlPlane.Grant(t, ns, account, reduced)
				token := kubetest.WriteKubeconfig(t, controlPlane.ServiceAccount(t, ns, account), ns)
				p := startProcess(t, token, "reduced-"+resource+"-"+verb+"-0", localConfig(t, token, ns))
				// zap's JSON escapes the quotes; client-go's own log lines (Prometheus's SD) do not.
				missing := fmt.Sprintf(`cannot %s resource "%s"`, verb, resource)
				escaped := strings.ReplaceAll(missing, `"`, `\"`)
				if verb == "delete" {
					// Only a graceful stop deletes: the member leaves the group.
					time.Sleep(2 * time.Second)
					p.terminate()
				}
				require.Eventually(t, func() bool {
					log := readFile(p.log)
					return strings.Contains(log, missing) || strings.Contains(log, escaped)
				},
					30*time.Second, 200*time.Millisecond, "no log line says %s", missing)
			})
		}
	}
}

// The walk-through's scrape targets are scraped: processes of
// examples/scrape-targets' configuration, each behind the IP of a pod with
// the annotations of its Deployment, are found by the annotated-pods job of
// examples/statefulset's configuration, and every member of the group
// scrapes a share of them, each target on exactly one member.
func TestExampleScrapeTargetsAreScraped(t *testing.T) {
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)

	raw, err := os.ReadFile("../examples/scrape-targets/deployment.yaml")
	require.NoError(t, err)
	var deployment appsv1.Deployment
	require.NoError(t, yaml.Unmarshal(raw, &deployment))
	annotations := deployment.Spec.Template.Annotations
	port, err := strconv.Atoi(annotations["prometheus.io/port"])
	require.NoError(t, err)
	require.Equal(t, int32(port), deployment.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort)

	var want, pods []string
	for i, ip := range []string{"127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44"} {
		startProcess(t, kubeconfig, fmt.Sprintf("otcta-scrape-target-%d", i), scrapeTargetConfig, "POD_IP="+ip)
		pod := controlPlane.RunningPod(t, ns, fmt.Sprintf("otcta-scrape-target-%d", i), ip, "node-a", int32(port), nil)
		pod.Annotations = annotations
		_, err = controlPlane.Client.CoreV1().Pods(ns).Update(context.Background(), pod, metav1.UpdateOptions{})
		require.NoError(t, err)
		want = append(want, fmt.Sprintf("annotated-pods %s:%d", ip, port))
		pods = append(pods, pod.Name)
	}

	procs := startGroup(t, kubeconfig, "otcta-collector", 2, localConfig(t, kubeconfig, ns))
	settled(t, procs, 60*time.Second)
	// What the walk-through's verify step shows: each member's share of
	// annotated-pods, none empty, and in its exporter an up series of each
	// pod it scrapes (the pod label is the job's; job and instance are
	// the scraped collector's own service name and instance ID, from its
	// target_info), each pod on exactly one member.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var shared, scraped []string
		for _, p := range procs {
			targets := shareOf(c, p.endpoint, "annotated-pods", p.name)
			assert.NotEmpty(c, targets, "%s's share is empty", p.name)
			shared = append(shared, targets...)
			pods, err := upPods(p.exporter)
			if !assert.NoError(c, err) {
				return
			}
			assert.NotEmpty(c, pods, "%s scrapes nothing", p.name)
			scraped = append(scraped, pods...)
		}
		slices.Sort(shared)
		slices.Sort(scraped)
		assert.Equal(c, want, shared, "the members' shares")
		assert.Equal(c, pods, scraped, "the pods of the up series: each on exactly one member")
	}, 60*time.Second, 250*time.Millisecond)
}

var upRE = regexp.MustCompile(`^up\{.*pod="([^"]+)".*\} 1$`)

// upPods are the pods of the up series in a member's exporter.
func upPods(exporter string) ([]string, error) {
	resp, err := http.Get("http://" + exporter + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var pods []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if m := upRE.FindStringSubmatch(sc.Text()); m != nil {
			pods = append(pods, m[1])
		}
	}
	return pods, sc.Err()
}

// shareOf asks a member's API for collector's targets in job.
func shareOf(c *assert.CollectT, endpoint, job, collector string) []string {
	resp, err := http.Get("http://" + endpoint + "/jobs/" + url.PathEscape(job) + "/targets?collector_id=" + url.QueryEscape(collector))
	if !assert.NoError(c, err) {
		return nil
	}
	defer resp.Body.Close()
	var groups []struct {
		Targets []string `json:"targets"`
	}
	if !assert.NoError(c, json.NewDecoder(resp.Body).Decode(&groups)) {
		return nil
	}
	var targets []string
	for _, g := range groups {
		for _, target := range g.Targets {
			targets = append(targets, job+" "+target)
		}
	}
	return targets
}
