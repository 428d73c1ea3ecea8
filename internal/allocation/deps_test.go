package allocation

import (
	"os/exec"
	"strings"
	"testing"
)

// The allocator core is pure: it imports neither Kubernetes nor Prometheus,
// nor anything of this module.
func TestAllocationImportsNoFramework(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"k8s.io/", "github.com/prometheus/", "github.com/embedded-ta/embedded-ta/"} {
			if strings.HasPrefix(dep, banned) && dep != "github.com/embedded-ta/embedded-ta/internal/allocation" {
				t.Errorf("internal/allocation depends on %s", dep)
			}
		}
	}
}
