// Package testaddr hands tests loopback addresses to listen on.
package testaddr

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Ports are taken below Linux's ephemeral range (32768–60999 by default):
// a port that a test checks free, closes, and hands to a process to bind a
// moment later must not be taken meanwhile by some client's outgoing
// connection, which is what happens to ports of the ephemeral range under
// load.
const lowest, highest = 20000, 32767

// handedOut holds every port Free returned in this test binary. A port
// handed to a process that has not bound it yet looks free; without this, two
// calls in one test (three per collector process) draw the same port about
// once in a few thousand tests, and the second process to bind it exits.
var handedOut sync.Map

// Free returns 127.0.0.1:<port> with a port nothing listens on and that no
// earlier call in this test binary returned.
func Free(t testing.TB) string {
	t.Helper()
	for range 100 {
		port := lowest + rand.IntN(highest-lowest+1)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		_ = ln.Close()
		return addr
	}
	t.Fatal("no free loopback port below the ephemeral range")
	return ""
}
