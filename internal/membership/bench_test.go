package membership

import (
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// BenchmarkRenewal is what one member Lease renewal, as the group's watch
// delivers it, costs every member: the Lease recorded and the live members
// recomputed. A renewal changes no member, so OnChange, and with it the
// leader's allocation, is not called.
func BenchmarkRenewal(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			changes := 0
			m, err := New(Config{
				Client: fake.NewClientset(), Namespace: "ns", Group: "g",
				Self: Member{Identity: "m-0"}, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RenewPeriod: 2 * time.Second,
				OnChange: func([]Member) { changes++ },
			})
			if err != nil {
				b.Fatal(err)
			}
			m.scope = scopeAll // as the leader, which alone watches every member
			lease := func(i int, renewed time.Time) *coordinationv1.Lease {
				return &coordinationv1.Lease{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("m-%d", i), Annotations: map[string]string{AnnotationEndpoint: "10.0.0.1:8080", AnnotationNode: "node"}},
					Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(fmt.Sprintf("m-%d", i)), LeaseDurationSeconds: ptr.To(int32(15)),
						RenewTime: &metav1.MicroTime{Time: renewed}},
				}
			}
			now := time.Now()
			for i := range n {
				m.observe(lease(i, now), false)
			}
			m.refresh()
			changes = 0
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				m.observe(lease(i%n, now.Add(time.Duration(i)*time.Millisecond)), false)
				m.refresh()
			}
			if changes != 0 {
				b.Fatalf("%d member changes from renewals", changes)
			}
		})
	}
}
