package prometheusallocatedreceiver // import "github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver"

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/report"
	"github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver/internal/metadata"
)

// allocatedReceiver runs the stock prometheus receiver with its
// target_allocator client pointed at this member's own allocator API, with
// collector_id = this member's identity. The local API relays to whichever
// replica leads and keeps this member's share while none does, so the
// receiver follows leader changes and outages without a restart. The stock
// receiver's data goes through a fence (fence.go), which passes on only the
// data of the targets of this member's share as it is now.
type allocatedReceiver struct {
	cfg  *Config
	set  receiver.Settings
	next consumer.Metrics
	// createStock creates the stock receiver: the prometheus receiver
	// factory's CreateMetrics; tests wrap it.
	createStock func(context.Context, receiver.Settings, component.Config, consumer.Metrics) (receiver.Metrics, error)

	stock receiver.Metrics
	// group is the extension's, once started.
	group targetallocatorextension.Group
	// telemetry counts what the fence drops.
	telemetry *metadata.TelemetryBuilder
	// stop cancels the stock receiver's Start, which retries until the
	// allocator API answers, and gives up after about 15 minutes of failures.
	stop context.CancelFunc
	// done is closed when the stock receiver's Start has returned and its
	// result is handled, following when the fence no longer follows the
	// share (stop ends both).
	done, following chan struct{}

	// mu orders what Start, the goroutine running the stock Start and
	// Shutdown decide about the stock Start's result.
	mu sync.Mutex
	// late is set when Start returned before the stock Start did: the
	// goroutine then reports the stock Start's result itself.
	late bool
}

func newReceiver(cfg *Config, set receiver.Settings, next consumer.Metrics) *allocatedReceiver {
	return &allocatedReceiver{cfg: cfg, set: set, next: next, createStock: prometheusreceiver.NewFactory().CreateMetrics}
}

// Start creates and starts the stock receiver. It waits at most timeout
// for the stock Start, which returns once the allocator API has answered;
// past that, the stock receiver goes on retrying in the background, until
// Shutdown, and startup continues.
//
// The service reports StatusStarting before Start and StatusOK after it
// only if the component is still starting. So when Start goes on without an
// answer it reports StatusRecoverableError, which the service keeps, and
// the stock Start's late result is reported when it comes: StatusOK, or the
// error as StatusPermanentError.
func (r *allocatedReceiver) Start(ctx context.Context, host component.Host) error {
	ext, ok := host.GetExtensions()[r.cfg.Allocator]
	if !ok {
		return fmt.Errorf("allocator: extension %s is not configured or not in service::extensions", r.cfg.Allocator)
	}
	group, ok := ext.(targetallocatorextension.Group)
	if !ok {
		return fmt.Errorf("allocator: extension %s is not a target_allocator", r.cfg.Allocator)
	}
	view := group.View()
	stockCfg, err := r.stockConfig(view)
	if err != nil {
		return err
	}
	r.telemetry, err = metadata.NewTelemetryBuilder(r.set.TelemetrySettings)
	if err != nil {
		return err
	}
	fence := newFence(group, r.cfg.HTTPSDConfig.RefreshInterval, r.telemetry.ReceiverPrometheusAllocatedFencedMetricPoints, r.set.Logger)
	next, err := fence.consumer(r.next)
	if err != nil {
		return err
	}
	r.group = group
	// The fence drops a warming target's data: the leader may hand this
	// member targets make before break.
	// A report says at most report.MaxWarmWithin (a refresh_interval of
	// nearly 10 minutes): beyond, the leader would refuse every report.
	group.Fenced(min(r.cfg.HTTPSDConfig.RefreshInterval+stockDelays+warmSlack, report.MaxWarmWithin), r.cfg.HotStandby)
	set := r.set
	set.ID = component.NewIDWithName(prometheusreceiver.NewFactory().Type(), r.set.ID.Type().String()+"_"+nameOr(r.set.ID.Name(), "default"))
	stock, err := r.createStock(context.Background(), set, stockCfg, next)
	if err != nil {
		return fmt.Errorf("create the prometheus receiver: %w", err)
	}
	r.stock = stock
	logger := r.set.Logger.With(zap.String("collector_id", view.Identity), zap.String("group", view.Group), zap.String("allocator_api", view.Endpoint))
	logger.Info("Scraping this member's share")

	// The stock Start outlives this one: only Shutdown cancels it.
	stockCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	r.stop = stop
	r.following = make(chan struct{})
	go func() {
		defer close(r.following)
		fence.follow(stockCtx)
	}()
	r.done = make(chan struct{})
	early := make(chan error, 1)
	go func() {
		defer close(r.done)
		err := r.stock.Start(stockCtx, host)
		r.mu.Lock()
		defer r.mu.Unlock()
		if !r.late {
			early <- err
			return
		}
		if stockCtx.Err() != nil {
			// Shutdown cancelled it: nothing to report.
			return
		}
		if err != nil {
			logger.Error("The prometheus receiver failed to start: nothing is scraped until the collector restarts or reloads its configuration", zap.Error(err))
			// Permanent, not fatal: the stock receiver has given up and
			// will not retry, so this receiver needs someone to act (fix
			// what keeps the allocator API from answering, then reload);
			// but a fatal error would stop the whole collector, every
			// other pipeline with it. A permanent error keeps it running,
			// degraded, and health checks see it. The service reports an
			// error returned by Start as a permanent error as well.
			componentstatus.ReportStatus(host, componentstatus.NewPermanentErrorEvent(fmt.Errorf("start the prometheus receiver: %w", err)))
			return
		}
		logger.Info("The allocator API has answered; the prometheus receiver has started")
		componentstatus.ReportStatus(host, componentstatus.NewEvent(componentstatus.StatusOK))
	}()

	timer := time.NewTimer(r.cfg.Timeout)
	defer timer.Stop()
	select {
	case err := <-early:
		return err
	case <-timer.C:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case err := <-early: // returned in the meantime
		return err
	default:
	}
	r.late = true
	logger.Warn("The allocator API has not answered yet; going on, the prometheus receiver keeps retrying",
		zap.Duration("timeout", r.cfg.Timeout))
	componentstatus.ReportStatus(host, componentstatus.NewRecoverableErrorEvent(
		fmt.Errorf("the allocator API has not answered within %s; the prometheus receiver keeps retrying", r.cfg.Timeout)))
	return nil
}

func nameOr(name, def string) string {
	if name == "" {
		return def
	}
	return name
}

// stockConfig is the stock receiver's configuration for this member.
func (r *allocatedReceiver) stockConfig(view targetallocatorextension.View) (component.Config, error) {
	scheme, endpoint := "http", view.Endpoint
	var tls map[string]any
	if r.cfg.usesTLS() {
		scheme = "https"
		if view.HTTPSEndpoint != "" {
			// The member's https listener (https::enabled), which shows
			// secret values to a verified client.
			endpoint = view.HTTPSEndpoint
		}
		m := confmap.New()
		if err := m.Marshal(r.cfg.TLS); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		tls = m.ToStringMap()
	}
	ta := map[string]any{
		"endpoint":       scheme + "://" + endpoint,
		"collector_id":   view.Identity,
		"interval":       r.cfg.Interval,
		"timeout":        r.cfg.Timeout,
		"http_sd_config": map[string]any{"refresh_interval": r.cfg.HTTPSDConfig.RefreshInterval},
	}
	if tls != nil {
		ta["tls"] = tls
	}
	if file := r.cfg.BearerTokenFile; file != "" {
		// The stock client sends target_allocator's headers with its
		// /scrape_configs requests and http_sd_config's authorization with
		// its targets polls.
		token, err := readToken(file)
		if err != nil {
			return nil, fmt.Errorf("bearer_token_file: %w", err)
		}
		ta["headers"] = map[string]any{"Authorization": "Bearer " + token}
		ta["http_sd_config"].(map[string]any)["authorization"] = map[string]any{"type": "Bearer", "credentials_file": file}
	}
	conf := confmap.NewFromStringMap(map[string]any{
		"config": map[string]any{"scrape_configs": []any{}},
		// A (re)started member scrapes its share at once, not after the
		// scrape manager's first 5 s reload.
		"discovery_reload_on_startup": true,
		"trim_metric_suffixes":        r.cfg.TrimMetricSuffixes,
		"scrape_on_shutdown":          r.cfg.ScrapeOnShutdown,
		"target_allocator":            ta,
	})
	cfg := prometheusreceiver.NewFactory().CreateDefaultConfig()
	if err := conf.Unmarshal(cfg); err != nil {
		return nil, fmt.Errorf("configure the prometheus receiver: %w", err)
	}
	if err := confmap.Validate(cfg); err != nil {
		return nil, fmt.Errorf("configure the prometheus receiver: %w", err)
	}
	return cfg, nil
}

// stockDelays is how long the stock receiver may take, after its HTTP SD
// has read a new target, to scrape it: its discovery manager sends target
// groups every 5 s, its scrape manager reloads every 5 s. warmSlack adds room
// for the first scrape's offset within its interval.
const (
	stockDelays = 10 * time.Second
	warmSlack   = 5 * time.Second
)

// Shutdown hands this member's share over (make before break: it goes on
// exporting its targets until their new members scrape them, for a bounded
// time), cancels the stock receiver's Start if it still runs, waits for it
// to return, then stops the stock receiver.
func (r *allocatedReceiver) Shutdown(ctx context.Context) error {
	if r.telemetry != nil {
		defer r.telemetry.Shutdown()
	}
	if r.stock == nil {
		return nil
	}
	if err := r.group.Leave(ctx); err != nil {
		r.set.Logger.Warn("Stopping before this member's share is handed over: its targets may miss a scrape", zap.Error(err))
	}
	r.mu.Lock()
	r.stop() // from now on, the stock Start's result is not reported
	r.mu.Unlock()
	<-r.following
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("the prometheus receiver is still starting: %w", ctx.Err())
	}
	return r.stock.Shutdown(ctx)
}
