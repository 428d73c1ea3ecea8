package allocation

import (
	"fmt"
	"slices"
	"testing"
)

// Targets go to the member on their node, or stay unassigned while their
// node runs none, fallback or not; the fallback places only the targets
// without a node.
func TestPerNode(t *testing.T) {
	members := []Member{{Identity: "a", Node: "n1"}, {Identity: "b", Node: "n2"}, {Identity: "c", Node: "n2"}, {Identity: "d"}}
	// 100 targets on each of n1, n2, n3 (no member) and on no node.
	var targets []Target
	for i, node := range []string{"n1", "n2", "n3", ""} {
		for _, tg := range testTargets(100, fmt.Sprint("node", i)) {
			tg.Node = node
			targets = append(targets, tg)
		}
	}
	onNode := func(node string) []Target {
		var out []Target
		for _, tg := range targets {
			if tg.Node == node {
				out = append(out, tg)
			}
		}
		return out
	}
	checkUnassigned := func(t *testing.T, a Allocator, want []Target) {
		t.Helper()
		got := a.Unassigned()
		slices.Sort(got)
		w := hashes(want)
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Fatalf("%d targets unassigned, want %d", len(got), len(w))
		}
		for _, tg := range want {
			if o, ok := a.MemberOf(tg.Hash); ok {
				t.Fatalf("an unassigned target is with %s", o)
			}
		}
	}

	for _, fallback := range []string{"", ConsistentHashing, LeastWeighted} {
		t.Run("fallback="+fallback, func(t *testing.T) {
			a := mustNew(t, PerNode, WithFallback(fallback))
			if err := a.SetMembers(members); err != nil {
				t.Fatal(err)
			}
			a.SetTargets(targets)

			for _, tg := range onNode("n1") {
				if o, _ := a.MemberOf(tg.Hash); o != "a" {
					t.Fatalf("a target on n1 went to %q, want a, the member on n1", o)
				}
			}
			shared := map[string]int{}
			for _, tg := range onNode("n2") {
				o, _ := a.MemberOf(tg.Hash)
				shared[o]++
			}
			if len(shared) != 2 || shared["b"] < 30 || shared["c"] < 30 {
				t.Fatalf("targets on n2 went to %v, want them shared by b and c", shared)
			}

			if fallback == "" {
				checkUnassigned(t, a, append(onNode("n3"), onNode("")...))
				return
			}
			checkUnassigned(t, a, onNode("n3"))
			spread := map[string]int{}
			for _, tg := range onNode("") {
				o, _ := a.MemberOf(tg.Hash)
				spread[o]++
			}
			if len(spread) != len(members) {
				t.Fatalf("the fallback gave the targets without a node to %v, want all %d members", spread, len(members))
			}

			// A member joins on n3: it takes the targets on n3, and targets
			// placed by node do not move.
			was := membersOf(a, targets)
			if err := a.SetMembers(append(slices.Clone(members), Member{Identity: "e", Node: "n3"})); err != nil {
				t.Fatal(err)
			}
			for i, o := range membersOf(a, targets) {
				switch node := targets[i].Node; {
				case node == "n3" && o != "e":
					t.Fatalf("a target on n3 went to %s, want e, the member now on n3", o)
				case node == "n1" || node == "n2":
					if o != was[i] {
						t.Fatalf("a target on %s moved from %s to %s", node, was[i], o)
					}
				}
			}
			checkComplete(t, a, targets)

			// a leaves: its targets on n1 stay unassigned, not with the fallback.
			if err := a.SetMembers(append(slices.Clone(members[1:]), Member{Identity: "e", Node: "n3"})); err != nil {
				t.Fatal(err)
			}
			checkUnassigned(t, a, onNode("n1"))
			for _, tg := range onNode("") {
				if o, ok := a.MemberOf(tg.Hash); !ok || o == "a" {
					t.Fatalf("a target without a node is with %q after a left", o)
				}
			}
		})
	}
}

// Members sharing a node share its targets the same way in every process,
// and the fallback places the targets without a node the same way too.
func TestPerNodeDeterministic(t *testing.T) {
	var members []Member
	for i := range 6 {
		members = append(members, Member{Identity: fmt.Sprint("m", i), Node: fmt.Sprint("n", i%2)})
	}
	targets := testTargets(600, "pn")
	for i := range targets {
		if i%4 > 0 { // a quarter without a node, for the fallback
			targets[i].Node = fmt.Sprint("n", i%3)
		}
	}
	var got [][]string
	for seed := range uint64(2) {
		a := mustNew(t, PerNode, WithFallback(ConsistentHashing))
		a.SetTargets(shuffled(targets, seed))
		if err := a.SetMembers(shuffled(members, seed)); err != nil {
			t.Fatal(err)
		}
		got = append(got, membersOf(a, targets))
	}
	if !slices.Equal(got[0], got[1]) {
		t.Fatalf("assignments differ in %d targets", differences(got[0], got[1]))
	}
}

// Targets as Kubernetes SD labels them reach the member on their node as the
// Target Allocator finds it: by the pod's, the node's or the endpoint's node
// name, or by an EndpointSlice address whose target is a Node. A target
// without a node goes to the fallback; one whose node runs no member stays
// unassigned, fallback or not.
func TestPerNodeReadsTheNodeAsTheTargetAllocator(t *testing.T) {
	const fallback = "fallback" // want: where the fallback alone puts it
	members := []Member{
		{Identity: "collector-a", Node: "node-a"},
		{Identity: "collector-b", Node: "node-b"},
		{Identity: "collector-x"}, // no node: it takes fallback targets only
	}
	for _, tc := range []struct {
		name   string
		job    string
		labels map[string]string
		node   string // NodeOf
		want   string // a member, fallback, or "" for unassigned
	}{
		{"kubelet from the kubelet Service's EndpointSlice, as the Prometheus Operator writes it", "serviceMonitor/monitoring/kubelet/0", map[string]string{
			"__address__":                                               "10.0.1.11:10250",
			"__meta_kubernetes_namespace":                               "kube-system",
			"__meta_kubernetes_service_name":                            "kubelet",
			"__meta_kubernetes_service_label_k8s_app":                   "kubelet",
			"__meta_kubernetes_endpointslice_name":                      "kubelet-7x2kq",
			"__meta_kubernetes_endpointslice_address_type":              "IPv4",
			"__meta_kubernetes_endpointslice_address_target_kind":       "Node",
			"__meta_kubernetes_endpointslice_address_target_name":       "node-a",
			"__meta_kubernetes_endpointslice_endpoint_node_name":        "node-a",
			"__meta_kubernetes_endpointslice_endpoint_conditions_ready": "true",
			"__meta_kubernetes_endpointslice_port":                      "10250",
			"__meta_kubernetes_endpointslice_port_name":                 "https-metrics",
			"__meta_kubernetes_endpointslice_port_protocol":             "TCP",
		}, "node-a", "collector-a"},
		{"cAdvisor from an EndpointSlice whose address names its Node but no node name", "serviceMonitor/monitoring/kubelet/1", map[string]string{
			"__address__":                                               "10.0.1.12:10250",
			"__metrics_path__":                                          "/metrics/cadvisor",
			"__meta_kubernetes_namespace":                               "kube-system",
			"__meta_kubernetes_service_name":                            "kubelet",
			"__meta_kubernetes_endpointslice_name":                      "kubelet-7x2kq",
			"__meta_kubernetes_endpointslice_address_type":              "IPv4",
			"__meta_kubernetes_endpointslice_address_target_kind":       "Node",
			"__meta_kubernetes_endpointslice_address_target_name":       "node-b",
			"__meta_kubernetes_endpointslice_endpoint_conditions_ready": "true",
			"__meta_kubernetes_endpointslice_port":                      "10250",
			"__meta_kubernetes_endpointslice_port_name":                 "https-metrics",
		}, "node-b", "collector-b"},
		{"pod from pod SD", "podMonitor/apps/web/0", map[string]string{
			"__address__":                               "10.244.1.7:8080",
			"__meta_kubernetes_namespace":               "apps",
			"__meta_kubernetes_pod_name":                "web-5d9c7b-2xk4q",
			"__meta_kubernetes_pod_ip":                  "10.244.1.7",
			"__meta_kubernetes_pod_node_name":           "node-b",
			"__meta_kubernetes_pod_host_ip":             "10.0.1.12",
			"__meta_kubernetes_pod_phase":               "Running",
			"__meta_kubernetes_pod_ready":               "true",
			"__meta_kubernetes_pod_container_name":      "web",
			"__meta_kubernetes_pod_container_port_name": "metrics",
			"__meta_kubernetes_pod_label_app":           "web",
		}, "node-b", "collector-b"},
		{"pod behind a Service, from EndpointSlice SD", "serviceMonitor/apps/web/0", map[string]string{
			"__address__":                                         "10.244.0.9:8080",
			"__meta_kubernetes_namespace":                         "apps",
			"__meta_kubernetes_service_name":                      "web",
			"__meta_kubernetes_endpointslice_name":                "web-abcde",
			"__meta_kubernetes_endpointslice_address_target_kind": "Pod",
			"__meta_kubernetes_endpointslice_address_target_name": "web-5d9c7b-8mzq1",
			"__meta_kubernetes_endpointslice_endpoint_node_name":  "node-a",
			"__meta_kubernetes_endpointslice_port_name":           "metrics",
			"__meta_kubernetes_pod_name":                          "web-5d9c7b-8mzq1",
			"__meta_kubernetes_pod_node_name":                     "node-a",
			"__meta_kubernetes_pod_ready":                         "true",
		}, "node-a", "collector-a"},
		{"kubelet from the kubelet Service's Endpoints", "kubelet", map[string]string{
			"__address__":                                    "10.0.1.12:10250",
			"__meta_kubernetes_namespace":                    "kube-system",
			"__meta_kubernetes_service_name":                 "kubelet",
			"__meta_kubernetes_endpoints_name":               "kubelet",
			"__meta_kubernetes_endpoint_node_name":           "node-b",
			"__meta_kubernetes_endpoint_address_target_kind": "Node",
			"__meta_kubernetes_endpoint_address_target_name": "node-b",
			"__meta_kubernetes_endpoint_ready":               "true",
			"__meta_kubernetes_endpoint_port_name":           "https-metrics",
		}, "node-b", "collector-b"},
		{"node from node SD", "kubernetes-nodes", map[string]string{
			"__address__":                                   "10.0.1.11:10250",
			"__meta_kubernetes_node_name":                   "node-a",
			"__meta_kubernetes_node_address_InternalIP":     "10.0.1.11",
			"__meta_kubernetes_node_label_kubernetes_io_os": "linux",
		}, "node-a", "collector-a"},
		{"static target: no node, to the fallback", "blackbox", map[string]string{
			"__address__": "example.com:443",
		}, "", fallback},
		{"pod not scheduled yet: no node, to the fallback", "podMonitor/apps/batch/0", map[string]string{
			"__address__":                     "10.244.9.9",
			"__meta_kubernetes_namespace":     "apps",
			"__meta_kubernetes_pod_name":      "batch-x",
			"__meta_kubernetes_pod_node_name": "",
			"__meta_kubernetes_pod_phase":     "Pending",
		}, "", fallback},
		{"EndpointSlice address with a node name but no Node or Pod target: to the fallback, as in the TA", "serviceMonitor/apps/external/0", map[string]string{
			"__address__":                                        "10.0.1.11:9100",
			"__meta_kubernetes_namespace":                        "apps",
			"__meta_kubernetes_service_name":                     "external",
			"__meta_kubernetes_endpointslice_name":               "external-1",
			"__meta_kubernetes_endpointslice_endpoint_node_name": "node-a",
			"__meta_kubernetes_endpointslice_port_name":          "metrics",
		}, "", fallback},
		{"pod on a node that runs no member: unassigned, though there is a fallback", "podMonitor/apps/web/0", map[string]string{
			"__address__":                     "10.244.2.3:8080",
			"__meta_kubernetes_namespace":     "apps",
			"__meta_kubernetes_pod_name":      "web-5d9c7b-q8w2e",
			"__meta_kubernetes_pod_node_name": "node-c",
		}, "node-c", ""},
		{"kubelet on a node that runs no member: unassigned, though there is a fallback", "serviceMonitor/monitoring/kubelet/0", map[string]string{
			"__address__": "10.0.1.13:10250",
			"__meta_kubernetes_endpointslice_address_target_kind": "Node",
			"__meta_kubernetes_endpointslice_address_target_name": "node-c",
			"__meta_kubernetes_endpointslice_endpoint_node_name":  "node-c",
		}, "node-c", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := NodeOf(func(name string) string { return tc.labels[name] })
			if node != tc.node {
				t.Fatalf("NodeOf = %q, want %q", node, tc.node)
			}
			target := Target{Hash: fnv1a(tc.job + "/" + tc.labels["__address__"]), Node: node, Job: tc.job}
			for _, fb := range []string{ConsistentHashing, ""} {
				want := tc.want
				if want == fallback {
					want = "" // without a fallback, unassigned
					if fb != "" {
						alone := mustNew(t, fb)
						if err := alone.SetMembers(members); err != nil {
							t.Fatal(err)
						}
						alone.SetTargets([]Target{target})
						want, _ = alone.MemberOf(target.Hash)
					}
				}
				a := mustNew(t, PerNode, WithFallback(fb))
				if err := a.SetMembers(members); err != nil {
					t.Fatal(err)
				}
				a.SetTargets([]Target{target})
				if got, ok := a.MemberOf(target.Hash); got != want || ok != (want != "") {
					t.Fatalf("fallback %q: the target went to %q, want %q", fb, got, want)
				}
				wantUnassigned := 0
				if want == "" {
					wantUnassigned = 1
				}
				if got := len(a.Unassigned()); got != wantUnassigned {
					t.Fatalf("fallback %q: %d targets unassigned, want %d", fb, got, wantUnassigned)
				}
			}
		})
	}
}
