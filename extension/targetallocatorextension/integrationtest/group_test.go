package integrationtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	tae "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/kube"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/membership"
	"github.com/embedded-ta/embedded-ta/internal/testaddr"
)

// testLease is short so that failover tests take seconds.
var testLease = tae.LeaseConfig{Duration: 5 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: time.Second}

// replica is one in-process target_allocator talking to the real API server
// through a proxy that the test can cut.
type replica struct {
	identity string
	ext      tae.Group
	endpoint string
	host     *statusHost
	logs     *observer.ObservedLogs
	proxy    *kubetest.Proxy
	once     sync.Once
}

func startReplica(t *testing.T, cfg *rest.Config, namespace, identity, group string, options ...func(*tae.Config)) *replica {
	t.Helper()
	proxy, through := kubetest.NewProxy(t, cfg)
	t.Setenv("KUBECONFIG", kubetest.WriteKubeconfig(t, through, namespace))

	factory := tae.NewFactory()
	c := factory.CreateDefaultConfig().(*tae.Config)
	c.Identity, c.Group = identity, group
	c.AuthType = kube.AuthKubeConfig // the kubeconfig context names the namespace
	c.NetAddr.Endpoint = testaddr.Free(t)
	c.Lease = testLease
	for _, o := range options {
		o(c)
	}
	require.NoError(t, c.Validate())

	core, logs := observer.New(zap.DebugLevel)
	set := extensiontest.NewNopSettings(factory.Type())
	set.Logger = zap.New(core).With(zap.String("replica", identity))
	ext, err := factory.Create(context.Background(), set, c)
	require.NoError(t, err)
	g := ext.(tae.Group)
	r := &replica{identity: identity, ext: g, endpoint: c.NetAddr.Endpoint, host: &statusHost{}, logs: logs, proxy: proxy}
	require.NoError(t, ext.Start(context.Background(), r.host))
	t.Cleanup(r.stop)
	t.Cleanup(func() { // registered last, run first: the logs of a failed test, before the stop
		if t.Failed() {
			for _, e := range logs.All() {
				t.Logf("%s %s %s %s %v", e.Time.Format("15:04:05.000"), identity, e.Level.CapitalString(), e.Message, e.ContextMap())
			}
		}
	})
	return r
}

// stop shuts the replica down gracefully, once.
func (r *replica) stop() {
	r.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.ext.Shutdown(ctx)
	})
}

func (r *replica) url() string { return "http://" + r.endpoint }

// status reads the member's /status over HTTP, as a user would.
func (r *replica) status(t *testing.T) tae.View {
	t.Helper()
	resp, err := http.Get(r.url() + "/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var v tae.View
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
	return v
}

func identities(v tae.View) []string {
	ids := make([]string, 0, len(v.Members))
	for _, m := range v.Members {
		ids = append(ids, m.Identity)
	}
	return ids
}

// settled waits until every member names the same live leader among them,
// the leader lists the members, and each follower the leader and itself
// (the leader alone watches every member Lease) and the group's size as
// the leader wrote it; it returns the leader.
func settled(t *testing.T, replicas []*replica, within time.Duration) *replica {
	t.Helper()
	want := make([]string, 0, len(replicas))
	for _, r := range replicas {
		want = append(want, r.identity)
	}
	slices.Sort(want)
	var leader *replica
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		leader = nil
		first := replicas[0].status(t)
		for _, r := range replicas {
			v := r.status(t)
			assert.Equal(c, first.Leader, v.Leader, "%s names another leader", r.identity)
			assert.Equal(c, len(want), v.GroupSize, "%s counts other members", r.identity)
			if v.IsLeader {
				assert.Nil(c, leader, "two replicas lead")
				leader = r
				assert.Equal(c, want, identities(v), "the leader %s sees other members", r.identity)
			} else {
				assert.Equal(c, slices.Sorted(slices.Values([]string{v.Leader, r.identity})), identities(v), "the follower %s sees other members", r.identity)
			}
		}
		if assert.NotNil(c, leader, "no replica leads") {
			assert.Equal(c, leader.identity, first.Leader)
		}
	}, within, 100*time.Millisecond)
	return leader
}

func without(replicas []*replica, gone *replica) []*replica {
	return slices.DeleteFunc(slices.Clone(replicas), func(r *replica) bool { return r == gone })
}

func startGroup(t *testing.T, namespace, group string, n int, options ...func(*tae.Config)) []*replica {
	replicas := make([]*replica, n)
	for i := range replicas {
		replicas[i] = startReplica(t, controlPlane.Config, namespace, fmt.Sprintf("%s-%d", group, i), group, options...)
	}
	return replicas
}

func TestThreeReplicasElectOneLeader(t *testing.T) {
	ns := controlPlane.Namespace(t)
	replicas := startGroup(t, ns, "otcta-collector", 3)
	leader := settled(t, replicas, 10*time.Second)

	v := leader.status(t)
	assert.Equal(t, "otcta-collector", v.Group)
	assert.Equal(t, ns, v.Namespace)
	assert.Equal(t, leader.endpoint, v.LeaderEndpoint)
	for _, m := range v.Members {
		assert.NotEmpty(t, m.Endpoint, "member %s has no endpoint", m.Identity)
	}
	for _, r := range replicas {
		resp, err := http.Get("http://" + r.endpoint + "/readyz")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, "%s is not ready", r.identity)
		assert.Equal(t, componentstatus.StatusOK, r.host.last().Status(), "%v", r.host.last().Err())
	}

	// The Leases are what kubectl shows: one leader Lease, three member Leases.
	leases, err := controlPlane.Client.CoordinationV1().Leases(ns).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	var names []string
	for _, l := range leases.Items {
		names = append(names, l.Name+"="+*l.Spec.HolderIdentity)
	}
	assert.ElementsMatch(t, []string{
		"otcta-collector=" + leader.identity,
		"otcta-collector-0=otcta-collector-0", "otcta-collector-1=otcta-collector-1", "otcta-collector-2=otcta-collector-2",
	}, names)
}

// newLeader waits until one of replicas leads and returns how long after since.
func newLeader(t *testing.T, replicas []*replica, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	require.Eventually(t, func() bool {
		for _, r := range replicas {
			if r.status(t).IsLeader {
				took = time.Since(since)
				return true
			}
		}
		return false
	}, within, 20*time.Millisecond, "no new leader within %s", within)
	return took
}

func TestLeaderDiesWithoutRelease(t *testing.T) {
	ns := controlPlane.Namespace(t)
	replicas := startGroup(t, ns, "crash", 3)
	leader := settled(t, replicas, 10*time.Second)
	survivors := without(replicas, leader)

	// Cut the leader off the API server: it can neither renew nor release,
	// which is what the group sees of a killed process.
	killed := time.Now()
	leader.proxy.Cut()

	failover := newLeader(t, survivors, killed, 20*time.Second)
	bound := testLease.Duration + testLease.RetryPeriod + time.Second
	t.Logf("measured failover after the leader died: %s (bound %s)", failover.Round(time.Millisecond), bound)
	assert.LessOrEqual(t, failover, bound)

	// The cut-off leader steps down by itself once it cannot renew for
	// renew_deadline, before anyone else may take over: never two leaders.
	assert.False(t, leader.ext.View().IsLeader, "the cut-off leader still leads after %s", time.Since(killed))

	settled(t, survivors, testLease.Duration+time.Second)
	t.Logf("measured: the dead member left the member lists %s after it died", time.Since(killed).Round(time.Millisecond))
}

func TestLeaderStopsGracefully(t *testing.T) {
	ns := controlPlane.Namespace(t)
	replicas := startGroup(t, ns, "graceful", 3)
	leader := settled(t, replicas, 10*time.Second)
	survivors := without(replicas, leader)

	stopped := time.Now()
	leader.stop()
	left := time.Since(stopped)
	for _, r := range survivors {
		assert.EventuallyWithT(t, func(c *assert.CollectT) {
			assert.NotContains(c, identities(r.status(t)), leader.identity)
		}, time.Second, 20*time.Millisecond, "%s still lists the stopped leader", r.identity)
	}
	handover := newLeader(t, survivors, stopped, 3*time.Second)
	t.Logf("measured graceful handover: new leader %s after the stop began (shutdown took %s)", handover.Round(time.Millisecond), left.Round(time.Millisecond))
	settled(t, survivors, time.Second)
}

// Two groups next to each other in one namespace, where two Target
// Allocators would see each other's collectors: each group's members are
// exactly its own replicas.
func TestTwoGroupsInOneNamespace(t *testing.T) {
	ns := controlPlane.Namespace(t)
	a := startGroup(t, ns, "otcta-collector", 2)
	b := startGroup(t, ns, "otcta2-collector", 2)
	leaderA := settled(t, a, 10*time.Second)
	leaderB := settled(t, b, 10*time.Second)
	assert.True(t, strings.HasPrefix(leaderA.identity, "otcta-collector-"))
	assert.True(t, strings.HasPrefix(leaderB.identity, "otcta2-collector-"))
	assert.Equal(t, []string{"otcta2-collector-0", "otcta2-collector-1"}, identities(leaderB.status(t)))
}

// A member whose service account cannot use Leases says which permission
// is missing, keeps retrying, and joins once a Role grants it.
func TestMissingLeasePermissions(t *testing.T) {
	ns := controlPlane.Namespace(t)
	sa := controlPlane.ServiceAccount(t, ns, "collector")
	r := startReplica(t, sa, ns, "rbac-0", "rbac")

	require.Eventually(t, func() bool {
		ev := r.host.last()
		return ev != nil && ev.Status() == componentstatus.StatusRecoverableError
	}, 10*time.Second, 50*time.Millisecond, "no recoverable error reported")
	err := r.host.last().Err().Error()
	assert.Contains(t, err, `cannot get resource "leases" in API group "coordination.k8s.io"`)
	assert.Contains(t, err, "system:serviceaccount:"+ns+":collector")
	logged := r.logs.FilterMessage("Kubernetes call failed; retrying").All()
	require.NotEmpty(t, logged)
	assert.Contains(t, logged[0].ContextMap()["hint"], "leases.coordination.k8s.io in namespace "+ns)
	assert.False(t, r.status(t).Joined)

	// No restart: granting the Role is enough.
	controlPlane.Grant(t, ns, "collector", kubetest.LeaseRole("lease-coordination"))
	settled(t, []*replica{r}, 15*time.Second)
	require.Eventually(t, func() bool { return r.host.last().Status() == componentstatus.StatusOK }, 5*time.Second, 50*time.Millisecond)
	assert.NotEmpty(t, r.logs.FilterMessage("Kubernetes calls and the leader's term succeed again").All())

	// The member Lease carries what the leader needs.
	lease, err2 := controlPlane.Client.CoordinationV1().Leases(ns).Get(context.Background(), "rbac-0", metav1.GetOptions{})
	require.NoError(t, err2)
	assert.Equal(t, "rbac", lease.Labels[membership.LabelGroup])
	assert.Equal(t, r.endpoint, lease.Annotations[membership.AnnotationEndpoint])
}

// statusHost records the component status events a member reports.
type statusHost struct {
	mu     sync.Mutex
	events []*componentstatus.Event
}

func (h *statusHost) GetExtensions() map[component.ID]component.Component { return nil }

func (h *statusHost) Report(ev *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

func (h *statusHost) last() *componentstatus.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.events) == 0 {
		return nil
	}
	return h.events[len(h.events)-1]
}
