package integrationtest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	tae "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/testaddr"
	"github.com/embedded-ta/embedded-ta/internal/testpki"
)

// httpsGroup starts n replicas with the TA's https section, each on a
// loopback address of its own (127.0.0.2, ...) with the same https port, as
// the pods of a StatefulSet have; it returns them and their https addresses.
func httpsGroup(t *testing.T, ns, group string, n int, pki testpki.PKI, options ...func(*tae.Config)) ([]*replica, map[*replica]string) {
	t.Helper()
	port := freePortOn(t, n)
	replicas := make([]*replica, n)
	https := map[*replica]string{}
	for i := range replicas {
		host := fmt.Sprintf("127.0.0.%d", i+2)
		listen := net.JoinHostPort(host, port)
		opts := append([]func(*tae.Config){func(c *tae.Config) {
			_, p, _ := net.SplitHostPort(testaddr.Free(t))
			c.NetAddr.Endpoint = net.JoinHostPort(host, p)
			c.HTTPS = tae.HTTPSConfig{Enabled: true, ListenAddr: listen, CAFilePath: pki.CAFile, TLSCertFilePath: pki.CertFile, TLSKeyFilePath: pki.KeyFile}
		}}, options...)
		replicas[i] = startReplica(t, controlPlane.Config, ns, fmt.Sprintf("%s-%d", group, i), group, opts...)
		https[replicas[i]] = listen
	}
	return replicas, https
}

// freePortOn returns a port free on 127.0.0.2 to 127.0.0.(n+1).
func freePortOn(t *testing.T, n int) string {
	t.Helper()
	for range 100 {
		_, port, _ := net.SplitHostPort(testaddr.Free(t))
		free := true
		for i := range n {
			ln, err := net.Listen("tcp", net.JoinHostPort(fmt.Sprintf("127.0.0.%d", i+2), port))
			if err != nil {
				free = false
				break
			}
			_ = ln.Close()
		}
		if free {
			return port
		}
	}
	t.Fatal("no port free on every replica's address")
	return ""
}

// password reads the basic-auth password of job from /scrape_configs at u.
func password(client *http.Client, u, job string) (string, error) {
	resp, err := client.Get(u + "/scrape_configs")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var configs map[string]struct {
		BasicAuth struct {
			Password string `json:"password"`
		} `json:"basic_auth"`
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&configs); err != nil {
		return "", err
	}
	if _, ok := configs[job]; !ok {
		return "", fmt.Errorf("no job %s yet", job)
	}
	return configs[job].BasicAuth.Password, nil
}

// With the TA's https section, every member serves a second listener with
// mutual TLS: a client with a certificate of the CA gets the secret values
// there, from the leader and from a follower (which relays over the
// leader's https listener); a plain client on the plain listener gets
// <secret>; a client without a certificate is refused. With
// allow_insecure_auth_secrets, the plain listener shows them too.
func TestHTTPSListenerShowsSecretsToVerifiedClients(t *testing.T) {
	ns := controlPlane.Namespace(t)
	pki := testpki.New(t)
	job := staticJob("secured", "127.0.0.1:9100")
	job["basic_auth"] = map[string]any{"username": "scraper", "password": "hunter2"}

	replicas, https := httpsGroup(t, ns, "mtls", 2, pki, withScrapeConfigs(job))
	leader := settled(t, replicas, 10*time.Second)
	follower := without(replicas, leader)[0]

	verified := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.Client}}}}
	defer verified.CloseIdleConnections()
	for _, r := range []*replica{leader, follower} {
		var got string
		require.Eventually(t, func() bool {
			p, err := password(verified, "https://"+https[r], "secured")
			got = p
			return err == nil
		}, 10*time.Second, 100*time.Millisecond, r.identity)
		assert.Equal(t, "hunter2", got, "%s's https listener shows a verified client the secret value", r.identity)

		got, err := password(http.DefaultClient, r.url(), "secured")
		require.NoError(t, err)
		assert.Equal(t, "<secret>", got, "%s's plain listener does not", r.identity)
	}
	anonymous := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}}}
	_, err := password(anonymous, "https://"+https[follower], "secured")
	assert.Error(t, err, "no client certificate: no TLS session")
	stranger := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.Stranger}}}}
	_, err = password(stranger, "https://"+https[follower], "secured")
	assert.Error(t, err, "a certificate of another CA: no TLS session")

	insecure, _ := httpsGroup(t, ns, "insecure", 2, pki, withScrapeConfigs(job), func(c *tae.Config) { c.AllowInsecureAuthSecrets = true })
	settled(t, insecure, 10*time.Second)
	for _, r := range insecure {
		var got string
		require.Eventually(t, func() bool {
			p, err := password(http.DefaultClient, r.url(), "secured")
			got = p
			return err == nil
		}, 10*time.Second, 100*time.Millisecond, r.identity)
		assert.Equal(t, "hunter2", got, "allow_insecure_auth_secrets: %s's plain listener shows it", r.identity)
	}
}

// The stock prometheus receiver, its target_allocator::tls pointed at a
// follower's https listener, gets the basic-auth password and scrapes a
// target that requires it.
func TestStockReceiverOverTheHTTPSListener(t *testing.T) {
	ns := controlPlane.Namespace(t)
	pki := testpki.New(t)
	var authorized, refused atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user != "scraper" || pass != "hunter2" {
			refused.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		authorized.Add(1)
		_, _ = fmt.Fprint(w, "# TYPE up_and_running gauge\nup_and_running 1\n")
	}))
	defer target.Close()
	job := staticJob("secured", target.Listener.Addr().String())
	job["basic_auth"] = map[string]any{"username": "scraper", "password": "hunter2"}
	job["scrape_interval"] = "1s"

	replicas, https := httpsGroup(t, ns, "stock", 2, pki, withScrapeConfigs(job))
	leader := settled(t, replicas, 10*time.Second)
	follower := without(replicas, leader)[0]
	owner := ""
	require.Eventually(t, func() bool {
		a, err := assignment(follower)
		owner = a["secured"][target.Listener.Addr().String()]
		return err == nil && owner != ""
	}, 10*time.Second, 100*time.Millisecond)
	require.NotEmpty(t, owner)

	factory := prometheusreceiver.NewFactory()
	cfg := factory.CreateDefaultConfig()
	require.NoError(t, confmap.NewFromStringMap(map[string]any{
		"config": map[string]any{"scrape_configs": []any{}},
		"target_allocator": map[string]any{
			"endpoint":     "https://" + https[follower],
			"collector_id": owner,
			"interval":     "1s",
			"tls":          map[string]any{"ca_file": pki.CAFile, "cert_file": pki.CertFile, "key_file": pki.KeyFile},
		},
	}).Unmarshal(cfg))
	sink := new(consumertest.MetricsSink)
	rcv, err := factory.CreateMetrics(context.Background(), receivertest.NewNopSettings(factory.Type()), cfg, sink)
	require.NoError(t, err)
	require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
	defer func() { require.NoError(t, rcv.Shutdown(context.Background())) }()

	require.Eventually(t, func() bool { return authorized.Load() > 0 }, 30*time.Second, 100*time.Millisecond,
		"the stock receiver never scraped with the password (%d refused)", refused.Load())
	assert.Zero(t, refused.Load(), "it never had <secret> for a password")
	t.Logf("scrapes with the password: %s", strconv.FormatInt(authorized.Load(), 10))
}
