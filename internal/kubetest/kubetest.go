// Package kubetest runs a real, local Kubernetes control plane (etcd and
// kube-apiserver, through controller-runtime's envtest) for tests.
//
// The binaries come from KUBEBUILDER_ASSETS or, by default, the repository's
// bin/ folder, where `make kube` puts them. A missing binary fails the test
// run: a test that needs the control plane is never skipped.
package kubetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Env is a running control plane.
type Env struct {
	// Config authenticates as a cluster admin.
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
	env    *envtest.Environment
	data   string // etcd's data, kept across RestartEtcd
}

// Start starts etcd and kube-apiserver. Stop them with Stop.
func Start() (*Env, error) {
	assets, err := assetsDir()
	if err != nil {
		return nil, err
	}
	// etcd's data lives in a directory of ours, so that etcd can restart on it.
	data, err := os.MkdirTemp("", "kubetest-etcd-")
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets}
	env.ControlPlane.Etcd = &envtest.Etcd{DataDir: data}
	cfg, err := env.Start()
	if err != nil {
		_ = os.RemoveAll(data)
		return nil, fmt.Errorf("start control plane from %s: %w", assets, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = env.Stop()
		_ = os.RemoveAll(data)
		return nil, err
	}
	return &Env{Config: cfg, Client: client, env: env, data: data}, nil
}

// Stop stops the control plane and removes its data.
func (e *Env) Stop() error {
	err := e.env.Stop()
	return errors.Join(err, os.RemoveAll(e.data))
}

// StopEtcd stops etcd, keeping its data: the API server loses its storage
// until StartEtcd.
func (e *Env) StopEtcd() error {
	if err := e.env.ControlPlane.Etcd.Stop(); err != nil {
		return fmt.Errorf("stop etcd: %w", err)
	}
	return nil
}

// StartEtcd starts etcd again on its data and address, after StopEtcd.
func (e *Env) StartEtcd() error {
	if err := e.env.ControlPlane.Etcd.Start(); err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	return nil
}

// Main starts a control plane for a test package, runs its tests and stops
// it; use it as the package's TestMain body. after runs once the tests
// have, before the control plane stops.
func Main(m *testing.M, env **Env, after ...func()) {
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubetest:", err)
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	for _, f := range after {
		f()
	}
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "kubetest: stop:", err)
	}
	os.Exit(code)
}

// IdleHTTP2Connections are the read loops of idle HTTP/2 connections in
// client-go's process-wide transport cache: they outlive the clients that
// opened them until they time out, and no test can close them.
var IdleHTTP2Connections = goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop")

// MainLeakChecked is Main with goleak: the control plane's goroutines
// predate the tests, and any other goroutine left when they end is a leak,
// but for IdleHTTP2Connections (opts may ignore more).
func MainLeakChecked(m *testing.M, env **Env, opts ...goleak.Option) {
	e, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubetest:", err)
		os.Exit(1)
	}
	*env = e
	opts = append(opts, IdleHTTP2Connections, goleak.IgnoreCurrent(), goleak.Cleanup(func(code int) {
		if err := e.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "kubetest: stop:", err)
		}
		os.Exit(code)
	}))
	goleak.VerifyTestMain(m, opts...)
}

// OnDemand is a control plane that the first test needing one starts
// (Get), so that a package's other tests and its benchmarks run without
// one; MainOnDemand stops it.
type OnDemand struct {
	once sync.Once
	env  *Env
	err  error
}

// Get starts the control plane on its first call and returns it.
func (o *OnDemand) Get(t testing.TB) *Env {
	t.Helper()
	o.once.Do(func() { o.env, o.err = Start() })
	if o.err != nil {
		t.Fatal(o.err)
	}
	return o.env
}

// MainOnDemand runs the tests, stops the control plane if a test started
// one, and then fails the run if any goroutine is left but
// IdleHTTP2Connections; use it as the package's TestMain body.
func MainOnDemand(m *testing.M, o *OnDemand) {
	code := m.Run()
	if o.env != nil {
		if err := o.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "kubetest: stop:", err)
		}
	}
	if err := goleak.Find(IdleHTTP2Connections); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}

// assetsDir finds the control-plane binaries.
func assetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		bin := filepath.Join(dir, "bin")
		if _, err := os.Stat(filepath.Join(bin, "kube-apiserver")); err == nil {
			return bin, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no bin/kube-apiserver above the working directory and KUBEBUILDER_ASSETS is unset: run `make kube`")
		}
		dir = parent
	}
}

// Namespace creates a namespace named after the test and returns its name.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"}}
	ns, err := e.Client.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return ns.Name
}

// ServiceAccount creates a service account in namespace and returns a client
// configuration that authenticates with a real token of it.
func (e *Env) ServiceAccount(t testing.TB, namespace, name string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := e.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service account %s/%s: %v", namespace, name, err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	tok, err := e.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create token for %s/%s: %v", namespace, name, err)
	}
	cfg := rest.AnonymousClientConfig(e.Config)
	cfg.BearerToken = tok.Status.Token
	return cfg
}

// LeaseRole is the Role a replica needs for coordination: Leases, nothing else.
func LeaseRole(name string) *rbacv1.Role {
	return &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"coordination.k8s.io"},
			Resources: []string{"leases"},
			Verbs:     []string{"get", "list", "watch", "create", "update", "delete"},
		}},
	}
}

// Grant creates role in namespace and binds it to the service account.
func (e *Env) Grant(t testing.TB, namespace, serviceAccount string, role *rbacv1.Role) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.Client.RbacV1().Roles(namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: namespace}},
	}
	if _, err := e.Client.RbacV1().RoleBindings(namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role binding: %v", err)
	}
}

// HostIPv4 is a non-loopback IPv4 address of this machine, to serve
// targets behind EndpointSlices on: their addresses may not be loopback
// addresses (pod IPs may). A machine without one fails the test.
func HostIPv4(t testing.TB) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("interface addresses: %v", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatal("no non-loopback IPv4 address to serve EndpointSlice targets on")
	return ""
}

// Port is the port of addr (host:port), for a pod's or an EndpointSlice's port.
func Port(t testing.TB, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err == nil {
		var n int
		if n, err = strconv.Atoi(p); err == nil {
			return int32(n)
		}
	}
	t.Fatalf("port of %q: %v", addr, err)
	return 0
}

// Service creates Service name with labels and one port named port, and
// an EndpointSlice <name>-<i> of one ready endpoint for each of addrs
// (host:port, hosts from HostIPv4), as the EndpointSlice controller would.
func (e *Env) Service(t testing.TB, namespace, name, port string, labels map[string]string, addrs ...string) {
	t.Helper()
	ctx := context.Background()
	_, err := e.Client.CoreV1().Services(namespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: port, Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
	for i, addr := range addrs {
		host, _, _ := net.SplitHostPort(addr)
		_, err := e.Client.DiscoveryV1().EndpointSlices(namespace).Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, i), Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To(port), Port: ptr.To(Port(t, addr))}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create endpoint slice of %s: %v", name, err)
		}
	}
}

// WriteKubeconfig writes cfg as a kubeconfig file whose context uses
// namespace, for processes started by a test, and returns its path.
func WriteKubeconfig(t testing.TB, cfg *rest.Config, namespace string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(Kubeconfig(cfg, namespace), path); err != nil {
		t.Fatalf("write kubeconfig: %v", err)
	}
	return path
}

// Kubeconfig turns cfg into a kubeconfig whose current context uses namespace.
func Kubeconfig(cfg *rest.Config, namespace string) clientcmdapi.Config {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{
		Token:                 cfg.BearerToken,
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
	}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test", Namespace: namespace}
	kc.CurrentContext = "test"
	return *kc
}

// RunningPod creates a pod with one container port and marks it Running at
// ip (a loopback address, so that service discovery points at a real local
// target; no kubelet runs here). node, if set, is its spec.nodeName.
func (e *Env) RunningPod(t testing.TB, namespace, name, ip, node string, port int32, labels map[string]string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "example.invalid/app",
				Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: port}},
			}},
		},
	}
	pod, err := e.Client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", namespace, name, err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	pod, err = e.Client.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("set status of pod %s/%s: %v", namespace, name, err)
	}
	return pod
}

// PrometheusOperatorCRDs returns the CRD manifests of the Prometheus
// Operator resources that prometheus_cr watches, from the module cache's
// copy of the operator module this module requires.
func PrometheusOperatorCRDs() ([]string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/prometheus-operator/prometheus-operator").Output()
	if err != nil {
		return nil, fmt.Errorf("locate the prometheus-operator module: %w", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "example", "prometheus-operator-crd")
	var paths []string
	for _, r := range []string{"servicemonitors", "podmonitors", "probes", "scrapeconfigs"} {
		p := filepath.Join(dir, "monitoring.coreos.com_"+r+".yaml")
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// InstallPrometheusOperatorCRDs installs the CRDs of PrometheusOperatorCRDs
// and waits until the API server serves them. Installing them again is a
// no-op.
func (e *Env) InstallPrometheusOperatorCRDs(t testing.TB) {
	t.Helper()
	paths, err := PrometheusOperatorCRDs()
	if err != nil {
		t.Fatal(err)
	}
	e.InstallCRDs(t, paths...)
}

// OpenTelemetryOperatorCRD is the path of the OpenTelemetry Operator's
// OpenTelemetryCollector CRD (v1beta1), kept in this package's testdata
// (its README names the source): the operator's Go module is not served.
func OpenTelemetryOperatorCRD() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata", "opentelemetry.io_opentelemetrycollectors.yaml")
}

// InstallOpenTelemetryOperatorCRD installs OpenTelemetryOperatorCRD.
func (e *Env) InstallOpenTelemetryOperatorCRD(t testing.TB) {
	t.Helper()
	e.InstallCRDs(t, OpenTelemetryOperatorCRD())
}

// InstallCRDs installs the CRD manifests at paths and waits until the API
// server serves them. Installing them again is a no-op.
func (e *Env) InstallCRDs(t testing.TB, paths ...string) {
	t.Helper()
	if _, err := envtest.InstallCRDs(e.Config, envtest.CRDInstallOptions{Paths: paths, ErrorIfPathMissing: true}); err != nil {
		t.Fatalf("install CRDs %v: %v", paths, err)
	}
}

// Kubectl is the path of the kubectl next to the control plane's binaries
// (`make kube` builds it).
func Kubectl() (string, error) {
	dir, err := assetsDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "kubectl"), nil
}
