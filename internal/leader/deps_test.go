package leader

import (
	"os/exec"
	"strings"
	"testing"
)

// A term's output is data: the leader depends on no package that serves
// HTTP or shows the group (the API, the relay, the status page).
func TestLeaderServesNothing(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "github.com/embedded-ta/embedded-ta/internal/allocatorapi", "github.com/embedded-ta/embedded-ta/internal/status":
			t.Errorf("internal/leader depends on %s", dep)
		}
	}
}
