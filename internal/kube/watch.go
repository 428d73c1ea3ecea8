package kube

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/cache"
)

// LeaseHandler receives every Lease a watch sees: deleted is true when the
// Lease is gone.
type LeaseHandler func(lease *coordinationv1.Lease, deleted bool)

// WatchLeases runs an informer over the Leases in namespace that match
// selector (field and label selectors in metav1.ListOptions form) until ctx
// is done. onResult receives each failure of the list or watch, naming the
// Leases watched, and nil with each event, which proves the watch works.
func WatchLeases(ctx context.Context, client coordinationclient.LeasesGetter, namespace string, selector metav1.ListOptions, handle LeaseHandler, onResult func(error)) {
	leases := client.Leases(namespace)
	narrow := func(opts metav1.ListOptions) metav1.ListOptions {
		opts.FieldSelector, opts.LabelSelector = selector.FieldSelector, selector.LabelSelector
		return opts
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return leases.List(ctx, narrow(opts))
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return leases.Watch(ctx, narrow(opts))
		},
	}
	informer := cache.NewSharedIndexInformer(lw, &coordinationv1.Lease{}, 0, cache.Indexers{})
	lease := func(obj any) *coordinationv1.Lease {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		l, _ := obj.(*coordinationv1.Lease)
		return l
	}
	event := func(obj any, deleted bool) {
		onResult(nil)
		if l := lease(obj); l != nil {
			handle(l, deleted)
		}
	}
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { event(obj, false) },
		UpdateFunc: func(_, obj any) { event(obj, false) },
		DeleteFunc: func(obj any) { event(obj, true) },
	})
	_ = informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		onResult(fmt.Errorf("watch leases in namespace %s (%s): %w", namespace, describe(selector), err))
	})
	informer.RunWithContext(ctx)
}

func describe(s metav1.ListOptions) string {
	switch {
	case s.FieldSelector != "" && s.LabelSelector != "":
		return s.FieldSelector + "," + s.LabelSelector
	case s.FieldSelector != "":
		return s.FieldSelector
	}
	return s.LabelSelector
}
