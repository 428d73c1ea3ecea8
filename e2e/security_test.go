package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/testaddr"
	"github.com/embedded-ta/embedded-ta/internal/testpki"
)

// securedConfig is a member whose allocator API is secured by the block
// %[1]s (settings of the target_allocator's server and client), with jobs
// %[2]s whose scrape configs carry a password, and both receivers secured by
// %[3]s (prometheus_allocated) and %[4]s (the stock prometheus receiver's
// target_allocator); RECEIVER picks the receiver a member runs.
const securedConfig = `
extensions:
%[5]s
  target_allocator:
    auth_type: kubeConfig
    endpoint: ${env:ALLOCATOR_ENDPOINT}
    lease: {duration: 5s, renew_deadline: 3s, retry_period: 1s}
%[1]s
    config:
      scrape_configs:
%[2]s
receivers:
  prometheus_allocated:
    interval: 1s
    http_sd_config: {refresh_interval: 1s}
%[3]s
  prometheus:
    config:
      scrape_configs: []
    target_allocator:
      endpoint: ${env:SCHEME}://${env:ALLOCATOR_ENDPOINT}
      collector_id: ${env:POD_NAME}
      interval: 1s
      timeout: 5s
%[4]s
exporters:
  prometheus:
    endpoint: ${env:EXPORTER_ENDPOINT}
service:
  extensions: [%[6]s]
  pipelines:
    metrics:
      receivers:
        - ${env:RECEIVER}
      exporters: [prometheus]
  telemetry:
    logs: {encoding: json}
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: ${env:TELEMETRY_PORT}
`

// securedGroup starts three replicas of config, the last with the stock
// prometheus receiver, and waits until every one of want is scraped by
// exactly one of them; the test reaches their APIs with client over scheme.
func securedGroup(t *testing.T, config, scheme string, client *http.Client, want []string) []*process {
	t.Helper()
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	file := filepath.Join(t.TempDir(), "replica.yaml")
	require.NoError(t, os.WriteFile(file, []byte(config), 0o600))
	var procs []*process
	for i, receiver := range []string{"prometheus_allocated", "prometheus_allocated", "prometheus"} {
		health := testaddr.Free(t)
		p := startProcess(t, kubeconfig, fmt.Sprintf("otcta-collector-%d", i), file, "RECEIVER="+receiver, "SCHEME="+scheme, "HEALTH_ENDPOINT="+health)
		p.apiScheme, p.apiClient, p.health = scheme, client, health
		procs = append(procs, p)
	}
	settled(t, procs, 60*time.Second)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		owners := scrapedOnce(c, procs, want)
		scrapers := map[string]bool{}
		for _, owner := range owners {
			scrapers[owner] = true
		}
		for _, p := range procs {
			assert.True(c, scrapers[p.name], "%s scrapes nothing", p.name)
		}
	}, 60*time.Second, 500*time.Millisecond)
	return procs
}

// securedJobs are three jobs of four real targets each, with basic auth.
func securedJobs(t *testing.T) (scrapeConfigs string, want []string) {
	var b strings.Builder
	for _, job := range []string{"otc0", "otc1", "otc2"} {
		var addrs []string
		for range 4 {
			addr := metricsTarget(t)
			addrs = append(addrs, fmt.Sprintf("%q", addr))
			want = append(want, job+"/"+addr)
		}
		fmt.Fprintf(&b, "        - job_name: %s\n          scrape_interval: 1s\n          basic_auth: {username: scraper, password: hunter2}\n          static_configs: [{targets: [%s]}]\n", job, strings.Join(addrs, ", "))
	}
	slices.Sort(want)
	return b.String(), want
}

// password returns the basic-auth password of job otc0 in a /scrape_configs answer.
func password(t *testing.T, client *http.Client, u string) string {
	t.Helper()
	resp, err := client.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var configs map[string]struct {
		BasicAuth struct {
			Password string `json:"password"`
		} `json:"basic_auth"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&configs))
	return configs["otc0"].BasicAuth.Password
}

// Replicas that talk to each other only over mutual TLS: followers relay
// with their client certificate, prometheus_allocated and the stock
// prometheus receiver (target_allocator.tls) scrape their shares, clients
// with the CA's certificate see secret values, and nobody else gets in.
func TestMutualTLSBetweenReplicas(t *testing.T) {
	pki := testpki.New(t)
	jobs, want := securedJobs(t)
	clientTLS := fmt.Sprintf("{ca_file: %s, cert_file: %s, key_file: %s}", pki.CAFile, pki.CertFile, pki.KeyFile)
	config := fmt.Sprintf(securedConfig,
		fmt.Sprintf("    tls: {cert_file: %s, key_file: %s, client_ca_file: %s}\n    client:\n      tls: %s", pki.CertFile, pki.KeyFile, pki.CAFile, clientTLS),
		jobs,
		"    tls: "+clientTLS,
		"      tls: "+clientTLS+"\n      http_sd_config: {refresh_interval: 1s}",
		"  health_check:\n    endpoint: ${env:HEALTH_ENDPOINT}", "health_check, target_allocator")
	member := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.Client},
	}}}
	procs := securedGroup(t, config, "https", member, want)

	leader := settled(t, procs, 10*time.Second)
	var follower *process
	for _, p := range procs {
		if p != leader {
			follower = p
			break
		}
	}
	for _, p := range []*process{leader, follower} {
		assert.Equal(t, "hunter2", password(t, member, "https://"+p.endpoint+"/scrape_configs"), "%s hides the secret from a verified client", p.name)
	}

	// Without a certificate of the CA, nothing: not over plain HTTP, not
	// over TLS without a certificate, not with another CA's.
	for name, client := range map[string]*http.Client{
		"no certificate": {Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}}},
		"another CA's": {Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pki.Stranger, nil }}}},
		"plain HTTP (TLS)": {Timeout: 5 * time.Second},
	} {
		scheme := "https://"
		if strings.HasPrefix(name, "plain") {
			scheme = "http://"
		}
		resp, err := client.Get(scheme + follower.endpoint + "/scrape_configs")
		if err == nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			assert.NotEqual(t, http.StatusOK, resp.StatusCode, "%s: %s", name, body[:n])
			assert.NotContains(t, string(body[:n]), "hunter2", name)
		}
		if strings.HasPrefix(name, "plain") {
			assert.NoError(t, err, "a TLS server answers plain HTTP with 400")
		} else {
			assert.Error(t, err, "%s: the handshake succeeded", name)
		}
		t.Logf("measured: %s: %v", name, err)
	}

	// Kubelet's probes present no client certificate (an HTTPS probe does
	// not even verify the server's). The probes of examples/statefulset on
	// the health_check extension's port answer under mutual TLS; its
	// readiness probe of /readyz on the API's port cannot, which is why
	// docs/security.md moves it to the health port with mutual TLS.
	kubelet := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as kubelet's HTTPS probes
	}}
	probes := exampleProbes(t)
	require.Equal(t, "health", probes["liveness"].component)
	require.Equal(t, "allocator", probes["readiness"].component)
	for _, p := range procs {
		resp, err := kubelet.Get("http://" + p.health + probes["liveness"].path)
		if assert.NoError(t, err, "%s: the liveness probe", p.name) {
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode, "%s: the liveness probe, and the readiness probe docs/security.md gives under mutual TLS", p.name)
		}
		_, err = kubelet.Get("https://" + p.endpoint + probes["readiness"].path)
		assert.Error(t, err, "%s: /readyz on the API's port answered a client without a certificate", p.name)
	}
}

// probe is an HTTP probe of examples/statefulset: its path, and what listens
// on its port, by the collector configuration: "health" (the health_check
// extension) or "allocator" (the target_allocator's API).
type probe struct{ path, component string }

// exampleProbes are the liveness and readiness probes of examples/statefulset.
func exampleProbes(t *testing.T) map[string]probe {
	t.Helper()
	raw, err := os.ReadFile("../examples/statefulset/statefulset.yaml")
	require.NoError(t, err)
	var sts appsv1.StatefulSet
	require.NoError(t, yaml.Unmarshal([]byte(strings.Split(string(raw), "\n---\n")[0]), &sts))
	require.Equal(t, "StatefulSet", sts.Kind)
	container := sts.Spec.Template.Spec.Containers[0]
	raw, err = os.ReadFile("../examples/statefulset/collector.yaml")
	require.NoError(t, err)
	var cfg struct {
		Extensions struct {
			HealthCheck     struct{ Endpoint string } `json:"health_check"`
			TargetAllocator struct{ Endpoint string } `json:"target_allocator"`
		} `json:"extensions"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &cfg))
	listens := map[int32]string{}
	for component, endpoint := range map[string]string{"health": cfg.Extensions.HealthCheck.Endpoint, "allocator": cfg.Extensions.TargetAllocator.Endpoint} {
		// The host may be a ${env:POD_IP}: the port is what follows the last colon.
		n, err := strconv.Atoi(endpoint[strings.LastIndex(endpoint, ":")+1:])
		require.NoError(t, err, endpoint)
		listens[int32(n)] = component
	}
	probes := map[string]probe{}
	for name, pr := range map[string]*corev1.Probe{"liveness": container.LivenessProbe, "readiness": container.ReadinessProbe} {
		require.NotNil(t, pr, name)
		require.NotNil(t, pr.HTTPGet, name)
		port := pr.HTTPGet.Port.IntVal
		for _, cp := range container.Ports {
			if cp.Name == pr.HTTPGet.Port.StrVal {
				port = cp.ContainerPort
			}
		}
		require.Contains(t, listens, port, "the %s probe's port %s is no endpoint of collector.yaml", name, pr.HTTPGet.Port.String())
		probes[name] = probe{path: pr.HTTPGet.Path, component: listens[port]}
	}
	return probes
}

// A bearer token (the bearertokenauth extension) protects every route; the
// replicas relay with it, both receivers send it, and over plain HTTP the
// secret values stay hidden from a client that has the token.
func TestBearerTokenProtectsEveryRoute(t *testing.T) {
	jobs, want := securedJobs(t)
	token := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(token, []byte("s3cr3t-token\n"), 0o600))
	config := fmt.Sprintf(securedConfig,
		"    auth: {authenticator: bearertokenauth}\n    client:\n      auth: {authenticator: bearertokenauth}",
		jobs,
		"    bearer_token_file: "+token,
		"      auth: {authenticator: bearertokenauth}\n      http_sd_config:\n        refresh_interval: 1s\n        authorization: {credentials_file: "+token+"}",
		"  bearertokenauth:\n    filename: "+token, "bearertokenauth, target_allocator")
	procs := securedGroup(t, config, "http", &http.Client{Timeout: 5 * time.Second, Transport: bearer{"s3cr3t-token"}}, want)
	leader := settled(t, procs, 10*time.Second)

	routes := []string{"/", "/targets", "/status", "/livez", "/readyz", "/scrape_configs", "/jobs", "/jobs/otc0/targets", "/jobs/otc0/targets?collector_id=" + leader.name, "/no/such/route"}
	client := &http.Client{Timeout: 5 * time.Second}
	for _, p := range procs {
		for _, route := range routes {
			for _, auth := range []string{"", "Bearer wrong", "Basic czNjcjN0LXRva2Vu", "Bearer s3cr3t-token"} {
				req, err := http.NewRequest(http.MethodGet, "http://"+p.endpoint+route, nil)
				require.NoError(t, err)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp, err := client.Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				if auth == "Bearer s3cr3t-token" {
					assert.NotEqual(t, http.StatusUnauthorized, resp.StatusCode, "%s %s with the token", p.name, route)
				} else {
					assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s %s with %q", p.name, route, auth)
				}
			}
		}
	}
	t.Logf("measured: %d routes × %d replicas: 401 without the token, with a wrong one or another scheme; answered with it", len(routes), len(procs))

	req, err := http.NewRequest(http.MethodGet, "http://"+procs[0].endpoint+"/scrape_configs", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer s3cr3t-token")
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var configs map[string]struct {
		BasicAuth struct {
			Password string `json:"password"`
		} `json:"basic_auth"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&configs))
	assert.Equal(t, "<secret>", configs["otc0"].BasicAuth.Password, "a token is not a verified certificate: secrets stay hidden over plain HTTP")
}

// bearer sends a token with every request.
type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}
