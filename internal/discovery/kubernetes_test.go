package discovery

import (
	"context"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

// controlPlane is a real etcd and kube-apiserver, started by the first test
// that needs one, so that the other tests and the benchmarks run without.
var controlPlane kubetest.OnDemand

func realAPIServer(t *testing.T) *kubetest.Env { return controlPlane.Get(t) }

func TestMain(m *testing.M) { kubetest.MainOnDemand(m, &controlPlane) }

func TestKubernetesPods(t *testing.T) {
	cp := realAPIServer(t)
	ns := cp.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, cp.Config, ns)
	before := goleak.IgnoreCurrent()
	cfg, err := LoadConfig(confmap(t, fmt.Sprintf(`
scrape_configs:
- job_name: pods
  kubernetes_sd_configs:
  - role: pod
    kubeconfig_file: %q
    namespaces: {names: [%q]}
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_phase], regex: Running, action: keep}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
`, kubeconfig, ns)))
	require.NoError(t, err)
	logger, _ := newLogger(t)
	d, err := New(cfg, FilterRelabelConfig, logger, prometheus.NewRegistry())
	require.NoError(t, err)
	stop := run(t, d)

	pods := cp.Client.CoreV1().Pods(ns)
	runPod(t, ns, "web-0", "node-a", "127.0.0.2", corev1.PodRunning)
	runPod(t, ns, "web-1", "", "127.0.0.3", corev1.PodRunning)
	runPod(t, ns, "starting", "node-b", "127.0.0.4", corev1.PodPending)

	s := await(t, d, "the running pods", hasAddresses("pods", "127.0.0.2:8080", "127.0.0.3:8080"))
	targets := byAddress(s.Jobs["pods"])
	web0 := targets["127.0.0.2:8080"]
	assert.Equal(t, "node-a", web0.Node)
	assert.Equal(t, "web-0", web0.Labels().Get("__meta_kubernetes_pod_name"))
	assert.Equal(t, ns, web0.Labels().Get("__meta_kubernetes_namespace"))
	assert.Equal(t, "metrics", web0.Labels().Get("__meta_kubernetes_pod_container_port_name"))
	assert.Empty(t, targets["127.0.0.3:8080"].Node, "a pod without a node")

	// A new pod label is metadata: the target's labels change, its hash does not.
	_, err = pods.Patch(context.Background(), "web-0", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"version":"2"}}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	s = await(t, d, "web-0's new label", func(s Snapshot) bool {
		return byAddress(s.Jobs["pods"])["127.0.0.2:8080"].Labels().Get("__meta_kubernetes_pod_label_version") == "2"
	})
	assert.Equal(t, web0.Hash, byAddress(s.Jobs["pods"])["127.0.0.2:8080"].Hash)

	require.NoError(t, pods.Delete(context.Background(), "web-1", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
	await(t, d, "web-1 gone", hasAddresses("pods", "127.0.0.2:8080"))

	// The pending pod starts running.
	setStatus(t, ns, "starting", "127.0.0.4", corev1.PodRunning)
	s = await(t, d, "the started pod", hasAddresses("pods", "127.0.0.2:8080", "127.0.0.4:8080"))
	assert.Equal(t, "node-b", byAddress(s.Jobs["pods"])["127.0.0.4:8080"].Node)

	// The term ends: its informers and watches end with it.
	stop()
	goleak.VerifyNone(t, before, kubetest.IdleHTTP2Connections)
}

// runPod creates a pod with a metrics port and gives it a loopback IP, as a
// kubelet would give it a pod IP; there is no kubelet here.
func runPod(t *testing.T, ns, name, node, ip string, phase corev1.PodPhase) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "example.invalid/app",
				Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 8080}},
			}},
		},
	}
	_, err := realAPIServer(t).Client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	require.NoError(t, err)
	setStatus(t, ns, name, ip, phase)
}

func setStatus(t *testing.T, ns, name, ip string, phase corev1.PodPhase) {
	t.Helper()
	pods := realAPIServer(t).Client.CoreV1().Pods(ns)
	pod, err := pods.Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	pod.Status.Phase = phase
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	_, err = pods.UpdateStatus(context.Background(), pod, metav1.UpdateOptions{})
	require.NoError(t, err)
}
