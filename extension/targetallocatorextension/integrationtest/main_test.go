// Package integrationtest runs target_allocator replicas in process against a
// real control plane. It is a package of its own because its TestMain starts
// and stops that control plane, and the component's package has mdatagen's.
package integrationtest

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

// controlPlane is the real etcd and kube-apiserver the tests share; each
// test works in a namespace of its own.
var controlPlane *kubetest.Env

func TestMain(m *testing.M) {
	var err error
	if controlPlane, err = kubetest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Goroutines of the control plane's process management predate the
	// tests; every goroutine a test leaves behind is a leak.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent(), goleak.Cleanup(func(code int) {
		if err := controlPlane.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop control plane:", err)
		}
		os.Exit(code)
	}))
}
