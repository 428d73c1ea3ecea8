package allocatorapi

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/testpki"
)

// allow_insecure_auth_secrets: every client sees the secret values.
func TestInsecureSecretsShowsThemToEveryone(t *testing.T) {
	h := New(&source{identity: "c-0", allocation: testAllocation(t)}, Options{InsecureSecrets: true})
	_, body := get(t, h, "/scrape_configs")
	assert.Contains(t, body, "hunter2")
	_, body = get(t, leaderHandler(t), "/scrape_configs")
	assert.NotContains(t, body, "hunter2", "not without it")
}

// A follower asks its leader's https listener (its endpoint's host, the
// https port) what a verified client asks, and its endpoint what a plain
// client asks: each gets what the leader shows it, also from the copies.
func TestFollowerAsksTheHTTPSListenerForSecrets(t *testing.T) {
	pki := testpki.New(t)
	api := leaderHandler(t)
	var plainAsked, httpsAsked atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainAsked.Add(1)
		api.ServeHTTP(w, r)
	}))
	defer plain.Close()
	secure := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpsAsked.Add(1)
		api.ServeHTTP(w, r)
	}))
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	require.NoError(t, err)
	secure.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pki.Pool, ClientAuth: tls.RequireAndVerifyClientCert}
	secure.StartTLS()
	defer secure.Close()
	_, httpsPort, err := net.SplitHostPort(secure.Listener.Addr().String())
	require.NoError(t, err)
	httpsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool, Certificates: []tls.Certificate{pki.Client}}}}
	defer httpsClient.CloseIdleConnections()

	src := &source{identity: "c-1", leader: strings.TrimPrefix(plain.URL, "http://"), epoch: 3}
	h := New(src, Options{Client: plain.Client(), Scheme: "http", HTTPSClient: httpsClient, HTTPSPort: httpsPort, Logger: zap.NewNop()})

	_, body := serve(h, verifiedRequest("/scrape_configs"))
	assert.Contains(t, body, "hunter2", "a verified client gets the secret values")
	assert.Equal(t, int64(1), httpsAsked.Load(), "from the leader's https listener")
	_, body = get(t, h, "/scrape_configs")
	assert.NotContains(t, body, "hunter2")
	assert.Contains(t, body, `"password":"\u003csecret\u003e"`)
	assert.Equal(t, int64(1), plainAsked.Load(), "a plain client's from the endpoint")
	resp, body := serve(h, verifiedRequest("/jobs/plain/targets?collector_id=c-1"))
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, "127.0.0.1:")
	assert.Equal(t, int64(2), httpsAsked.Load())

	plain.Close()
	secure.Close()
	resp, body = serve(h, verifiedRequest("/scrape_configs"))
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	assert.Contains(t, body, "hunter2", "a verified client's copy")
	resp, body = get(t, h, "/scrape_configs")
	assert.Equal(t, "true", resp.Header.Get(StaleHeader))
	assert.NotContains(t, body, "hunter2", "never the verified client's copy for a plain one")

	// An endpoint that shows this member secret values (mutual TLS there,
	// or allow_insecure_auth_secrets) is asked everything.
	src2 := &source{identity: "c-1", leader: "127.0.0.1:1", epoch: 3}
	both := New(src2, Options{Client: http.DefaultClient, Scheme: "http", EndpointShowsSecrets: true, HTTPSClient: httpsClient, HTTPSPort: httpsPort})
	to, err := both.relay.target(verifiedRequest("/scrape_configs"), src2.View())
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:1", to.host)
}
