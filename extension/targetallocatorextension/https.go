package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"go.opentelemetry.io/collector/component"
	"go.uber.org/zap"
)

// The TA's second listener (https::enabled): the allocator API, served by
// the same handler as the endpoint, with mutual TLS. It shows secret values
// to the clients whose certificate https::ca_file_path verifies; the
// endpoint shows them only to those its own tls::client_ca_file verifies,
// or to everyone with allow_insecure_auth_secrets.

// httpsRelay returns the client a follower asks its leader's https
// listener with, nil when https is not enabled.
func (e *allocatorExtension) httpsRelay(ctx context.Context, host component.Host) (*http.Client, error) {
	if !e.cfg.HTTPS.Enabled {
		return nil, nil
	}
	c := e.cfg.httpsClient()
	client, err := c.ToClient(ctx, host.GetExtensions(), e.set.TelemetrySettings)
	if err != nil {
		return nil, fmt.Errorf("client (to the leader's https listener, TLS from https unless client::tls is set): %w", err)
	}
	return client, nil
}

// httpsPort is the port of every member's https listener, "" without one.
func (e *allocatorExtension) httpsPort() string {
	if !e.cfg.HTTPS.Enabled {
		return ""
	}
	_, port, _ := net.SplitHostPort(e.cfg.HTTPS.listenAddr()) // validated
	return port
}

// startHTTPS listens on https::listen_addr and serves handler there, when
// https is enabled; a failure names the key.
func (e *allocatorExtension) startHTTPS(ctx context.Context, host component.Host, handler http.Handler) error {
	if !e.cfg.HTTPS.Enabled {
		return nil
	}
	cfg := e.cfg.httpsServer()
	ln, err := cfg.ToListener(ctx)
	if err != nil {
		return fmt.Errorf("https::listen_addr %s: %w", cfg.NetAddr.Endpoint, err)
	}
	e.httpsServer, err = cfg.ToServer(ctx, host.GetExtensions(), e.set.TelemetrySettings, handler)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("https: %w", err)
	}
	e.set.Logger.Info("Serving the allocator API with mutual TLS too", zap.String("https_listen_addr", ln.Addr().String()))
	e.done.Go(func() {
		if err := e.httpsServer.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.health.fatal(fmt.Errorf("serve https %s: %w", ln.Addr(), err))
		}
	})
	return nil
}
