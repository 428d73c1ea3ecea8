package e2e

import (
	"debug/elf"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What can be checked of the image without a Docker engine: the binary it
// copies is statically linked, the base has no shell or libc to need, and
// the image runs as a non-root user.
func TestImage(t *testing.T) {
	bin, err := elf.Open(otelcol)
	require.NoError(t, err)
	defer bin.Close()
	for _, p := range bin.Progs {
		assert.NotEqual(t, elf.PT_INTERP, p.Type, "the binary asks for a dynamic loader")
	}
	libs, err := bin.ImportedLibraries()
	require.NoError(t, err)
	assert.Empty(t, libs, "the binary needs shared libraries")

	raw, err := os.ReadFile("../Dockerfile")
	require.NoError(t, err)
	var from, user, copied string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "FROM":
			from = f[1]
		case "USER":
			user = f[1]
		case "COPY":
			copied = f[1]
		}
	}
	assert.True(t, strings.HasPrefix(from, "gcr.io/distroless/static"), "base %s", from)
	assert.True(t, strings.HasSuffix(from, ":nonroot"), "base %s", from)
	require.NotEmpty(t, user)
	assert.NotContains(t, []string{"0", "root", "0:0"}, user)
	assert.Equal(t, "bin/otelcol-embedded-ta", copied)
}
