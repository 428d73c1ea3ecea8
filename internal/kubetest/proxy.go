package kubetest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// Proxy forwards TCP connections to an address, so a test can cut a replica
// off the control plane (a partition, or a process frozen from the API
// server's point of view), close a replica's listener, or slow its answers,
// and restore it, while the rest of the fleet goes on as before.
type Proxy struct {
	addr   string
	target atomic.Pointer[string]
	delay  atomic.Int64 // nanoseconds before each chunk of an answer

	mu    sync.Mutex
	ln    net.Listener // nil while closed
	open  bool
	conns map[net.Conn]struct{}
}

// NewProxy starts a proxy to cfg's API server and returns it with a copy of
// cfg that goes through it. The proxy closes when the test ends.
func NewProxy(t testing.TB, cfg *rest.Config) (*Proxy, *rest.Config) {
	t.Helper()
	u, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatalf("parse API server address %q: %v", cfg.Host, err)
	}
	p := NewTCPProxy(t, "127.0.0.1:0", u.Host)
	through := rest.CopyConfig(cfg)
	u.Host = p.Addr()
	// The serving certificate names the address, not the port: TLS still verifies.
	through.Host = u.String()
	return p, through
}

// NewTCPProxy listens on addr (port 0 picks one) and forwards every
// connection to target. The proxy closes when the test ends.
func NewTCPProxy(t testing.TB, addr, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, addr: ln.Addr().String(), open: true, conns: map[net.Conn]struct{}{}}
	p.SetTarget(target)
	go p.accept(ln)
	t.Cleanup(func() { p.CloseListener(); p.Cut() })
	return p
}

// SetTarget sends the connections that come from now on to target.
func (p *Proxy) SetTarget(target string) { p.target.Store(&target) }

// Addr is where the proxy listens.
func (p *Proxy) Addr() string { return p.addr }

// Delay holds back each chunk of every answer by d (0 for none): a slow peer.
func (p *Proxy) Delay(d time.Duration) { p.delay.Store(int64(d)) }

// CloseListener closes the listening socket and every connection: new
// connections are refused, as by a process whose listener closed.
func (p *Proxy) CloseListener() {
	p.mu.Lock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.Cut()
	p.Restore()
}

// Reopen listens again on the proxy's address after CloseListener.
func (p *Proxy) Reopen() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.ln = ln
	go p.accept(ln)
	return nil
}

// Cut drops every connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = false
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = true
}

func (p *Proxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *Proxy) forward(client net.Conn) {
	if !p.track(client) {
		_ = client.Close()
		return
	}
	server, err := net.Dial("tcp", *p.target.Load())
	if err != nil || !p.track(server) {
		_ = client.Close()
		if server != nil {
			_ = server.Close()
		}
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn, delay *atomic.Int64) {
		_, _ = io.Copy(dst, delayedReader{src, delay})
		done <- struct{}{}
	}
	go pipe(server, client, nil)
	go pipe(client, server, &p.delay)
	<-done
	_ = client.Close()
	_ = server.Close()
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.open {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

// delayedReader waits the proxy's delay before handing on what it read.
type delayedReader struct {
	r     io.Reader
	delay *atomic.Int64
}

func (d delayedReader) Read(b []byte) (int, error) {
	n, err := d.r.Read(b)
	if d.delay != nil && n > 0 {
		time.Sleep(time.Duration(d.delay.Load()))
	}
	return n, err
}
