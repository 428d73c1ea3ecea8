package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"fmt"
	"math"
	"time"

	promconfig "github.com/prometheus/prometheus/config"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/embedded-ta/embedded-ta/internal/kube"
	"github.com/embedded-ta/embedded-ta/internal/promcr"
)

// promCRBackoff is how long the leader waits before it tries again to watch
// Prometheus Operator resources: 5 s, doubling up to 5 minutes.
var promCRBackoff = wait.Backoff{Duration: 5 * time.Second, Factor: 2, Cap: 5 * time.Minute, Steps: math.MaxInt}

// preparePrometheusCR resolves, at Start, what the leader needs to watch
// Prometheus Operator resources (prometheus_cr).
func (e *allocatorExtension) preparePrometheusCR() error {
	if !e.cfg.PrometheusCR.Enabled {
		return nil
	}
	rest, err := e.s.auth.RESTConfig()
	if err != nil {
		return fmt.Errorf("%s: %w", e.s.authSetting(), err)
	}
	rest.UserAgent = "otelcol-embedded-ta/" + e.s.identity
	o := promcr.Options{
		Config:    e.cfg.PrometheusCR,
		Namespace: e.s.namespace,
		Name:      e.s.group,
		REST:      rest,
		Logger:    e.set.Logger.With(zap.String("prometheus_cr", e.s.group)),
	}
	// Outside a cluster, the jobs' Kubernetes service discovery reads the
	// same kubeconfig (its current context).
	if e.s.auth.Type == kube.AuthKubeConfig {
		o.KubeconfigFile = e.s.auth.KubeconfigFile()
	}
	e.promCR = &o
	return nil
}

// watchPrometheusCR starts the watch of Prometheus Operator resources for
// one term; it returns their jobs' updates (nil when prometheus_cr is off)
// and a function that stops the watch and waits for it.
func (e *allocatorExtension) watchPrometheusCR(ctx context.Context) (<-chan []*promconfig.ScrapeConfig, func()) {
	if e.promCR == nil {
		return nil, func() {}
	}
	w, err := promcr.New(*e.promCR)
	if err != nil {
		e.set.Logger.Error("Cannot watch Prometheus Operator resources", zap.Error(err))
		return nil, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Run fails only to start (no RBAC on namespaces, say): retry,
		// less and less often.
		backoff := promCRBackoff
		// The next wait is backoff.Duration: Step returns it, then doubles it.
		_ = wait.DelayFunc(backoff.Step).Until(ctx, true, true, func(ctx context.Context) (bool, error) {
			if err := w.Run(ctx); ctx.Err() == nil {
				e.set.Logger.Error("Cannot watch Prometheus Operator resources; retrying", zap.Error(err), zap.Duration("in", backoff.Duration))
			}
			return false, nil
		})
	}()
	return w.Updates(), func() {
		cancel()
		<-done
	}
}
