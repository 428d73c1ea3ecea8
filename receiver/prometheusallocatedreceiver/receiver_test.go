package prometheusallocatedreceiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver/internal/metadata"
)

// member is a target_allocator extension whose allocator API is at
// endpoint.
type member struct {
	component.StartFunc
	component.ShutdownFunc
	endpoint string
	// shares are the member's shares; by default, what the API at endpoint
	// answers.
	shares func() (targetallocatorextension.Shares, <-chan struct{})
}

func (member) Fenced(time.Duration, bool)       {}
func (member) Warmed(string, string, time.Time) {}
func (member) Leave(context.Context) error      { return nil }
func (member) Measured(string, string, int64)   {}

func (m member) View() targetallocatorextension.View {
	return targetallocatorextension.View{Identity: "c-0", Group: "c", Endpoint: m.endpoint}
}

func (m member) Shares() (targetallocatorextension.Shares, <-chan struct{}) {
	if m.shares != nil {
		return m.shares()
	}
	own := targetallocatorextension.Shares{}
	changed := make(chan struct{})
	close(changed) // read the API again every time
	var configs map[string]any
	if json.Unmarshal(apiGet(m.endpoint, "/scrape_configs"), &configs) != nil {
		return own, changed
	}
	for job := range configs {
		body := apiGet(m.endpoint, "/jobs/"+url.QueryEscape(job)+"/targets?collector_id=c-0")
		own[job] = allocatorapi.OwnShareOf(shares.Answer{Body: body})
	}
	return own, changed
}

// apiGet is the body of the API's answer at endpoint, nil if it fails.
func apiGet(endpoint, path string) []byte {
	resp, err := http.Get("http://" + endpoint + path)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	return body
}

type host struct {
	component.Host
	extensions map[component.ID]component.Component
}

func (h host) GetExtensions() map[component.ID]component.Component { return h.extensions }

// statusHost is a host that records the status events the receiver
// reports, as the service's host does.
type statusHost struct {
	host
	mu     sync.Mutex
	events []*componentstatus.Event
}

var _ componentstatus.Reporter = (*statusHost)(nil)

func newStatusHost(allocator component.ID, endpoint string) *statusHost {
	return &statusHost{host: host{Host: componenttest.NewNopHost(), extensions: map[component.ID]component.Component{allocator: member{endpoint: endpoint}}}}
}

func (h *statusHost) Report(ev *componentstatus.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
}

// statuses are the statuses reported so far, in order.
func (h *statusHost) statuses() []componentstatus.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s []componentstatus.Status
	for _, ev := range h.events {
		s = append(s, ev.Status())
	}
	return s
}

func (h *statusHost) last() *componentstatus.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.events) == 0 {
		return nil
	}
	return h.events[len(h.events)-1]
}

// stockWaiter is the stock receiver's goroutine that waits for a first
// configuration; it never returns when the stock Start fails (see
// metadata.yaml).
const stockWaiter = "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver.(*pReceiver).initPrometheusComponents.func3"

// verifyNoLeak checks, when the test ends, that no goroutine started
// during it remains but the stock receiver's waiter.
func verifyNoLeak(t *testing.T) {
	opts := []goleak.Option{goleak.IgnoreCurrent(), goleak.IgnoreTopFunction(stockWaiter)}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

// allocatorAPI stands in for the extension's allocator API. Until ready is
// set it answers 503; then it serves the scrape configs answer.
type allocatorAPI struct {
	*httptest.Server
	ready        atomic.Bool
	scrapeConfig atomic.Value // string
	requests     atomic.Int64
}

func newAllocatorAPI(t *testing.T) *allocatorAPI {
	a := &allocatorAPI{}
	a.scrapeConfig.Store("{}")
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		if !a.ready.Load() {
			http.Error(w, "no answer yet", http.StatusServiceUnavailable)
			return
		}
		switch {
		case r.URL.Path == "/scrape_configs":
			_, _ = w.Write([]byte(a.scrapeConfig.Load().(string)))
		case strings.HasPrefix(r.URL.Path, "/jobs/"):
			// every job's one target is this server's /metrics
			w.Header().Set("Content-Type", "application/json")
			_, _ = fmt.Fprintf(w, `[{"targets":[%q],"labels":{}}]`, r.Host)
		case r.URL.Path == "/metrics":
			_, _ = w.Write([]byte("# TYPE allocated_test_total counter\nallocated_test_total 1\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *allocatorAPI) endpoint() string { return strings.TrimPrefix(a.URL, "http://") }

// budgeted is the stock receiver with its Start bounded by budget: the
// stock Start retries until a retry budget of 15 minutes is spent and then
// returns its last error; a test cannot wait that long, so it ends the
// stock Start's retries itself by cancelling budget.
type budgeted struct {
	receiver.Metrics
	budget context.Context
}

func (b budgeted) Start(ctx context.Context, host component.Host) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(b.budget, func() { cancel(context.Cause(b.budget)) })
	defer stop()
	return b.Metrics.Start(ctx, host)
}

func newTestReceiver(t *testing.T, cfg *Config, logger *zap.Logger) *allocatedReceiver {
	set := receivertest.NewNopSettings(metadata.Type)
	if logger != nil {
		set.Logger = logger
	}
	r, err := NewFactory().CreateMetrics(context.Background(), set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	return r.(*allocatedReceiver)
}

// withBudget makes r's stock Start give up, with cause, when the returned
// function is called.
func withBudget(r *allocatedReceiver) func(cause error) {
	budget, spend := context.WithCancelCause(context.Background())
	create := r.createStock
	r.createStock = func(ctx context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
		stock, err := create(ctx, set, cfg, next)
		if err != nil {
			return nil, err
		}
		return budgeted{Metrics: stock, budget: budget}, nil
	}
	return spend
}

func shutdown(t *testing.T, r component.Component) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.Shutdown(ctx))
}

const startFailed = "The prometheus receiver failed to start: nothing is scraped until the collector restarts or reloads its configuration"

// An error the stock Start returns after Start has gone on is reported as
// a permanent error, and logged once.
func TestLateStartErrorIsReported(t *testing.T) {
	verifyNoLeak(t)
	api := newAllocatorAPI(t)
	// A job whose scrape timeout exceeds its interval: the stock receiver
	// rejects it, and retries.
	api.scrapeConfig.Store(`{"rejected": {"job_name": "rejected", "scrape_interval": "10s", "scrape_timeout": "1m"}}`)
	api.ready.Store(true)

	core, logs := observer.New(zapcore.InfoLevel)
	cfg := createDefaultConfig().(*Config)
	cfg.Timeout = 200 * time.Millisecond
	r := newTestReceiver(t, cfg, zap.New(core))
	spend := withBudget(r)
	h := newStatusHost(cfg.Allocator, api.endpoint())

	require.NoError(t, r.Start(context.Background(), h), "Start goes on after its timeout")
	require.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, h.statuses(),
		"Start reports that the stock receiver has not started yet, and the service keeps it")

	errSpent := errors.New("retry budget spent")
	spend(errSpent)
	require.Eventually(t, func() bool {
		return h.last().Status() == componentstatus.StatusPermanentError
	}, 10*time.Second, 10*time.Millisecond)
	ev := h.last()
	require.ErrorIs(t, ev.Err(), errSpent)
	assert.ErrorContains(t, ev.Err(), "scrape timeout greater than scrape interval", "the stock receiver's last error")

	failed := logs.FilterMessage(startFailed).All()
	require.Len(t, failed, 1)
	assert.Equal(t, zapcore.ErrorLevel, failed[0].Level)
	fields := failed[0].ContextMap()
	assert.Contains(t, fields["error"], errSpent.Error())
	assert.Equal(t, "c-0", fields["collector_id"])

	shutdown(t, r)
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusPermanentError}, h.statuses())
	assert.Len(t, logs.FilterMessage(startFailed).All(), 1)
}

// When the stock Start succeeds after Start has gone on, the receiver
// reports StatusOK.
func TestLateStartSuccessReportsOK(t *testing.T) {
	verifyNoLeak(t)
	api := newAllocatorAPI(t)
	cfg := createDefaultConfig().(*Config)
	cfg.Timeout = 200 * time.Millisecond
	r := newTestReceiver(t, cfg, nil)
	h := newStatusHost(cfg.Allocator, api.endpoint())

	require.NoError(t, r.Start(context.Background(), h))
	require.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, h.statuses())

	api.ready.Store(true)
	require.Eventually(t, func() bool {
		return h.last().Status() == componentstatus.StatusOK
	}, 10*time.Second, 10*time.Millisecond)
	shutdown(t, r)
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError, componentstatus.StatusOK}, h.statuses())
}

// When the stock Start answers within timeout, the receiver reports
// nothing: the service reports StatusOK after Start.
func TestStartInTimeReportsNothing(t *testing.T) {
	verifyNoLeak(t)
	api := newAllocatorAPI(t)
	api.ready.Store(true)
	cfg := createDefaultConfig().(*Config)
	cfg.Timeout = 10 * time.Second
	r := newTestReceiver(t, cfg, nil)
	h := newStatusHost(cfg.Allocator, api.endpoint())

	require.NoError(t, r.Start(context.Background(), h))
	shutdown(t, r)
	assert.Empty(t, h.statuses())
}

// Past its timeout, Start lets the stock receiver go on asking the
// allocator API; Shutdown stops it asking and waits for it, and its
// cancellation is not reported as an error.
func TestShutdownStopsAStartThatStillRetries(t *testing.T) {
	verifyNoLeak(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close()) // refused: the stock client retries

	core, logs := observer.New(zapcore.InfoLevel)
	cfg := createDefaultConfig().(*Config)
	cfg.Timeout = 200 * time.Millisecond
	r := newTestReceiver(t, cfg, zap.New(core))
	h := newStatusHost(cfg.Allocator, closed)
	require.NoError(t, r.Start(context.Background(), h), "Start goes on after its timeout")

	shutdown(t, r)
	select {
	case <-r.done:
	default:
		t.Fatal("Shutdown returned before the stock Start did")
	}
	assert.Equal(t, []componentstatus.Status{componentstatus.StatusRecoverableError}, h.statuses())
	assert.Empty(t, logs.FilterMessage(startFailed).All())
}

func TestShutdownWithoutStart(t *testing.T) {
	verifyNoLeak(t)
	r := newTestReceiver(t, createDefaultConfig().(*Config), nil)
	shutdown(t, r)
}

// A Start that fails before it creates the stock receiver leaves nothing
// for Shutdown to stop.
func TestShutdownAfterAFailedStart(t *testing.T) {
	verifyNoLeak(t)
	cfg := createDefaultConfig().(*Config)
	r := newTestReceiver(t, cfg, nil)
	h := &statusHost{host: host{Host: componenttest.NewNopHost()}}
	require.ErrorContains(t, r.Start(context.Background(), h), "is not configured")
	shutdown(t, r)
	assert.Empty(t, h.statuses())
}

// A configuration reload is Shutdown, then Start of a new instance: a
// first instance whose stock Start still retried does not keep the second
// from starting and scraping.
func TestReload(t *testing.T) {
	verifyNoLeak(t)
	api := newAllocatorAPI(t)
	api.scrapeConfig.Store(`{"up": {"job_name": "up", "scrape_interval": "1s", "scrape_timeout": "1s"}}`)
	cfg := createDefaultConfig().(*Config)
	cfg.Timeout = 200 * time.Millisecond
	cfg.HTTPSDConfig.RefreshInterval = time.Second
	set := receivertest.NewNopSettings(metadata.Type)

	first, err := NewFactory().CreateMetrics(context.Background(), set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	h := newStatusHost(cfg.Allocator, api.endpoint())
	require.NoError(t, first.Start(context.Background(), h))
	shutdown(t, first)

	api.ready.Store(true)
	sink := new(consumertest.MetricsSink)
	second, err := NewFactory().CreateMetrics(context.Background(), set, cfg, sink)
	require.NoError(t, err)
	require.NoError(t, second.Start(context.Background(), h))
	require.Eventually(t, func() bool { return sink.DataPointCount() > 0 }, 30*time.Second, 50*time.Millisecond,
		"the second instance scrapes its target")
	shutdown(t, second)
	assert.NotContains(t, h.statuses(), componentstatus.StatusPermanentError)
}
