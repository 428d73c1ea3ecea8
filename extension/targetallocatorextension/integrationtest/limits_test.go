package integrationtest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	tae "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
)

// A client that never finishes its request loses its connection after
// read_header_timeout; oversized requests get 414 and 431, not the leader's
// memory.
func TestRequestsAreBounded(t *testing.T) {
	ns := controlPlane.Namespace(t)
	r := startReplica(t, controlPlane.Config, ns, "bounded-0", "bounded", func(c *tae.Config) {
		c.ReadHeaderTimeout = 500 * time.Millisecond
	})
	settled(t, []*replica{r}, 10*time.Second)

	conn, err := net.Dial("tcp", r.endpoint)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET /jobs HTTP/1.1\r\nHost: x\r\n")) // and never the blank line
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	start := time.Now()
	_, err = io.ReadAll(conn)
	assert.NoError(t, err, "the server closes the connection, before the test's 10 s deadline")
	t.Logf("measured: a stalled request's connection closed after %s (read_header_timeout 500ms)", time.Since(start).Round(time.Millisecond))

	for target, want := range map[string]int{
		"/jobs?" + strings.Repeat("a", 4096):                         http.StatusRequestURITooLong,
		"/jobs/" + strings.Repeat("j", 4096) + "/targets":            http.StatusRequestURITooLong,
		"/jobs/x/targets?collector_id=a&collector_id=b":              http.StatusBadRequest,
		"/jobs/%zz/targets":                                          http.StatusBadRequest,
		"/jobs/x/targets?collector_id=" + strings.Repeat("c", 2<<20): http.StatusRequestHeaderFieldsTooLarge,
	} {
		conn, err := net.Dial("tcp", r.endpoint)
		require.NoError(t, err)
		_, _ = conn.Write([]byte("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n"))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if assert.NoError(t, err, "GET %.40s…", target) {
			assert.Equal(t, want, resp.StatusCode, "GET %.40s…", target)
			resp.Body.Close()
		}
		conn.Close()
	}
}
