// Package integrationtest runs target_allocator replicas in process against a
// real control plane. It is a package of its own because its TestMain starts
// and stops that control plane, and the component's package has mdatagen's.
package integrationtest

import (
	"testing"

	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

// controlPlane is the real etcd and kube-apiserver the tests share; each
// test works in a namespace of its own.
var controlPlane *kubetest.Env

func TestMain(m *testing.M) { kubetest.MainLeakChecked(m, &controlPlane) }
