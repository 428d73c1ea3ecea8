package kube

import (
	"context"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// LeaseHandler receives every Lease a watch sees: deleted is true when the
// Lease is gone.
type LeaseHandler func(lease *coordinationv1.Lease, deleted bool)

// WatchLeases runs an informer over the Leases in namespace that match
// selector (field and label selectors in metav1.ListOptions form) until ctx
// is done, and returns once the informer's goroutines have. onResult
// receives each failure of the list or watch, naming the Leases watched,
// and nil with each event, which proves the watch works. onSynced, if not
// nil, is called once every Lease of the first list has been handled.
func WatchLeases(ctx context.Context, client kubernetes.Interface, namespace string, selector metav1.ListOptions, handle LeaseHandler, onResult func(error), onSynced func()) {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(opts *metav1.ListOptions) {
			opts.FieldSelector, opts.LabelSelector = selector.FieldSelector, selector.LabelSelector
		}))
	informer := factory.Coordination().V1().Leases().Informer()
	event := func(obj any, deleted bool) {
		onResult(nil)
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if l, ok := obj.(*coordinationv1.Lease); ok {
			handle(l, deleted)
		}
	}
	// Neither call fails before the informer starts.
	handler, _ := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { event(obj, false) },
		UpdateFunc: func(_, obj any) { event(obj, false) },
		DeleteFunc: func(obj any) { event(obj, true) },
	})
	_ = informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		onResult(fmt.Errorf("watch leases in namespace %s (%s): %w", namespace, describe(selector), err))
	})
	factory.StartWithContext(ctx)
	if onSynced != nil && cache.WaitForCacheSync(ctx.Done(), handler.HasSynced) { // the handler has had every Lease
		onSynced()
	}
	<-ctx.Done()
	factory.Shutdown() // waits for the informer's goroutines
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
