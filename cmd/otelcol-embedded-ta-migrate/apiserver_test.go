package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/embedded-ta/embedded-ta/internal/kubetest"
)

var controlPlane *kubetest.Env

func TestMain(m *testing.M) {
	kubetest.Main(m, &controlPlane)
}

// kubectl runs kubectl as a cluster admin, with stdin, and returns its
// combined output.
func kubectl(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	path, err := kubetest.Kubectl()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = []string{"KUBECONFIG=" + kubetest.WriteKubeconfig(t, controlPlane.Config, "default"), "HOME=" + t.TempDir()}
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// namespaces creates namespaces the test's objects live in.
func namespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		_, err := controlPlane.Client.CoreV1().Namespaces().Create(context.Background(),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			require.NoError(t, err)
		}
	}
}

// access is one question to the API server's authorizer about the
// collector's service account.
type access struct {
	verb, group, resource, namespace string
	allowed                          bool
}

func (a access) String() string {
	s := a.verb + " " + a.resource
	if a.group != "" {
		s += "." + a.group
	}
	if a.namespace != "" {
		s += " in " + a.namespace
	}
	return s
}

// can asks whether the service account may do a.
func can(t *testing.T, namespace, serviceAccount string, a access) bool {
	t.Helper()
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:" + namespace + ":" + serviceAccount,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: a.verb, Group: a.group, Resource: a.resource, Namespace: a.namespace,
		},
	}}
	review, err := controlPlane.Client.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), review, metav1.CreateOptions{})
	require.NoError(t, err)
	return review.Status.Allowed
}

// The command's output is what a user applies: with the operator's CRD
// installed, the API server accepts every document of it in a server-side
// dry run (schema, RBAC rules and references checked by the API server
// itself). Applied for real, the RBAC gives the collector's service account
// what the members need, and no more than the output says.
func TestOutputAppliesOnTheAPIServer(t *testing.T) {
	controlPlane.InstallOpenTelemetryOperatorCRD(t)

	// The CRD's schema is enforced: a collector the operator would refuse
	// (spec.config without exporters) is refused here too.
	namespaces(t, "refused")
	out, err := kubectl(t, `apiVersion: opentelemetry.io/v1beta1
kind: OpenTelemetryCollector
metadata: {name: broken, namespace: refused}
spec:
  config:
    receivers: {otlp: {}}
    service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}
`, "apply", "--dry-run=server", "-f", "-")
	require.Error(t, err)
	assert.Contains(t, out, "spec.config.exporters: Required value")

	lease := func(ns string) access { return access{"create", "coordination.k8s.io", "leases", ns, true} }
	for _, tc := range []struct {
		file           string
		namespaces     []string
		serviceAccount string // in the collector's namespace, namespaces[0]
		access         []access
	}{
		{"statefulset.yaml", []string{"observability"}, "metrics-collector", []access{
			lease("observability"),
			{"delete", "coordination.k8s.io", "leases", "observability", true},
			{"watch", "", "pods", "observability", true},
			{"list", "", "pods", "default", false},
			{"create", "coordination.k8s.io", "leases", "default", false},
			{"list", "monitoring.coreos.com", "servicemonitors", "", false},
			{"get", "", "secrets", "observability", false},
		}},
		{"prometheus-cr.yaml", []string{"monitoring", "apps"}, "otel-prom", []access{
			lease("monitoring"),
			{"list", "", "pods", "apps", true},
			{"watch", "discovery.k8s.io", "endpointslices", "", true},
			{"list", "monitoring.coreos.com", "servicemonitors", "", true},
			{"watch", "monitoring.coreos.com", "podmonitors", "", true},
			{"get", "", "secrets", "monitoring", true},
			{"list", "", "nodes", "", false},
			{"create", "coordination.k8s.io", "leases", "apps", false},
		}},
		{"daemonset.yaml", []string{"agents"}, "node-agent-collector", []access{
			lease("agents"),
			{"watch", "", "nodes", "", true},
			{"list", "", "pods", "", true},
			{"list", "monitoring.coreos.com", "podmonitors", "", true},
		}},
		{"bundle.yaml", []string{"telemetry"}, "scraper-collector", []access{
			lease("telemetry"),
			{"list", "monitoring.coreos.com", "servicemonitors", "", true},
			{"list", "", "pods", "telemetry", true}, // prometheus_cr's jobs' service discovery
			{"list", "", "nodes", "", false},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			namespaces(t, tc.namespaces...)
			output, stderr, code := command(t, "", filepath.Join("testdata", tc.file))
			require.Equal(t, 0, code, stderr)

			out, err := kubectl(t, output, "apply", "--dry-run=server", "-f", "-")
			require.NoError(t, err, "kubectl apply --dry-run=server:\n%s\nof:\n%s", out, output)
			t.Logf("kubectl apply --dry-run=server -f -:\n%s", out)
			docs := documents(t, output)
			assert.Equal(t, len(docs), strings.Count(out, "(server dry run)"), "every document accepted")
			assert.Contains(t, out, "opentelemetrycollector.opentelemetry.io/")

			// Before it is applied, the service account may do nothing.
			for _, a := range tc.access {
				assert.False(t, can(t, tc.namespaces[0], tc.serviceAccount, a), "before: %s", a)
			}
			out, err = kubectl(t, output, "apply", "-f", "-")
			require.NoError(t, err, out)
			for _, a := range tc.access {
				assert.Equal(t, a.allowed, can(t, tc.namespaces[0], tc.serviceAccount, a), "%s", a)
			}
		})
	}
}
