package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension/internal/metadata"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/election"
	"github.com/embedded-ta/embedded-ta/internal/membership"
	"github.com/embedded-ta/embedded-ta/internal/memorylimit"
	"github.com/embedded-ta/embedded-ta/internal/promcr"
	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/status"
)

// allocatorExtension is one member's target_allocator.
type allocatorExtension struct {
	cfg       *Config
	set       extension.Settings
	s         settings
	telemetry *metadata.TelemetryBuilder
	// sd reports the discovery metrics of the leader's term.
	sd *sdMetrics

	health *health
	// metrics are the TA's own, served on the allocator endpoint's /metrics.
	metrics *allocatorapi.Metrics

	elector *election.Elector
	members *membership.Membership
	// membersChanged wakes the leader's term after a change of members.
	membersChanged chan struct{}
	// allocation is what the API serves while this member leads.
	allocation atomic.Pointer[shares.Allocation]
	// peerLeader is the view of the leader its peers found while this
	// member is cut off (see askPeers), nil otherwise.
	peerLeader atomic.Pointer[status.View]
	// promCR is set when prometheus_cr is enabled.
	promCR *promcr.Options
	// reporter keeps and sends this member's report to its leader, and
	// reports is the channel of the term that takes reports while this
	// member leads.
	reporter *reporter
	reports  atomic.Pointer[termReports]
	// measured is what this member's receiver measured of its targets, and
	// seriesReports the last series reports of the members, on the leader
	// (series.go).
	measured      seriesBook
	seriesReports seriesReports
	// api serves the allocator API and hands the receiver this member's shares.
	api    *allocatorapi.Handler
	server *http.Server
	// httpsServer is the https listener's, when https is enabled.
	httpsServer *http.Server
	cancel      context.CancelFunc
	// leave stops the membership, which deletes the member Lease, and left
	// is closed once it has.
	leave context.CancelFunc
	left  chan struct{}
	done  sync.WaitGroup
}

var _ Group = (*allocatorExtension)(nil)

// newExtension reads nothing but cfg: the member's settings are resolved
// from its environment at Start.
func newExtension(cfg *Config, set extension.Settings) (*allocatorExtension, error) {
	tb, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	sd, err := newSDMetrics(tb)
	if err != nil {
		tb.Shutdown()
		return nil, err
	}
	e := &allocatorExtension{cfg: cfg, set: set, telemetry: tb, sd: sd, membersChanged: make(chan struct{}, 1), reporter: newReporter()}
	e.metrics = allocatorapi.NewMetrics(allocatorapi.MetricsSource{Source: e, Strategy: cfg.strategy(), Discovery: sd.gatherer})
	return e, nil
}

// Start resolves this member's settings, joins the group, campaigns for
// leadership and serves the API. It fails only for what a retry cannot mend
// (a setting its environment cannot give, no client configuration, the
// endpoint taken); API errors are reported as a recoverable status and retried.
func (e *allocatorExtension) Start(ctx context.Context, host component.Host) error {
	// Every member must be able to lead, and a leader holds every target:
	// collect before the container's limit is reached.
	memorylimit.Set(e.set.Logger)
	s, err := e.cfg.resolve(processEnvironment())
	if err != nil {
		return err
	}
	e.s = s
	e.report()
	if e.cfg.HTTPS.Enabled {
		if err := e.cfg.HTTPS.check(); err != nil {
			return err
		}
	}
	client, err := e.s.auth.Client("otelcol-embedded-ta/" + e.s.identity)
	if err != nil {
		return fmt.Errorf("%s: %w", s.authSetting(), err)
	}
	e.health = newHealth(e, host)
	if err := e.preparePrometheusCR(); err != nil {
		return err
	}
	if err := e.build(client); err != nil {
		return err
	}
	relay, err := e.cfg.Client.ToClient(ctx, host.GetExtensions(), e.set.TelemetrySettings)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	httpsRelay, err := e.httpsRelay(ctx, host)
	if err != nil {
		return err
	}
	ln, err := e.cfg.ToListener(ctx)
	if err != nil {
		return fmt.Errorf("endpoint %s: %w", e.cfg.NetAddr.Endpoint, err)
	}
	routes := e.routes(relay, httpsRelay)
	e.server, err = e.cfg.ToServer(ctx, host.GetExtensions(), e.set.TelemetrySettings, routes)
	if err != nil {
		_ = ln.Close()
		return err
	}
	if err := e.startHTTPS(ctx, host, routes); err != nil {
		_ = ln.Close()
		return err
	}
	e.set.Logger.Info("Joining group",
		zap.String("identity", e.s.identity), zap.String("group", e.s.group),
		zap.String("namespace", e.s.namespace), zap.String("advertise", e.s.advertise))

	e.telemetry.TargetallocatorLeader.Record(ctx, 0)
	runCtx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done.Go(func() {
		if err := e.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.health.fatal(fmt.Errorf("serve %s: %w", ln.Addr(), err))
		}
	})
	memberCtx, leave := context.WithCancel(runCtx)
	e.leave, e.left = leave, make(chan struct{})
	e.done.Go(func() {
		defer close(e.left)
		e.members.Run(memberCtx)
	})
	e.done.Go(func() { e.elector.Run(runCtx) })
	e.done.Go(func() { e.askPeers(runCtx, relay, e.scheme()) })
	e.done.Go(func() { e.api.Follow(runCtx, e.sharesWait(), e.cfg.Lease.RetryPeriod) })
	e.done.Go(func() { e.sendReports(runCtx, e.cfg.Lease.RetryPeriod) })
	return nil
}

// allocationChanged tells the API that the allocation, the leadership or
// the leader may have changed: followers waiting at this member for a change
// of their shares, and this member's receiver, look again.
func (e *allocatorExtension) allocationChanged() {
	if e.api != nil {
		e.api.AllocationChanged()
	}
}

func (e *allocatorExtension) build(client kubernetes.Interface) error {
	lease := e.cfg.Lease
	var err error
	e.members, err = membership.New(membership.Config{
		Client:        client,
		Namespace:     e.s.namespace,
		Group:         e.s.group,
		Self:          membership.Member{Identity: e.s.identity, Endpoint: e.s.advertise, Node: e.s.node},
		LeaseDuration: lease.Duration,
		RenewDeadline: lease.RenewDeadline,
		RenewPeriod:   lease.RetryPeriod,
		Leader:        func() string { return e.elector.Leader().Identity },
		OnChange: func([]membership.Member) {
			e.telemetry.TargetallocatorMembers.Record(context.Background(), int64(e.members.Size()))
			select {
			case e.membersChanged <- struct{}{}:
			default: // a wake-up is pending: the term reads the members then
			}
		},
		OnAPIResult: e.health.set,
	})
	if err != nil {
		return err
	}
	e.elector, err = election.New(election.Config{
		Client:        client,
		Namespace:     e.s.namespace,
		Name:          e.s.group,
		Identity:      e.s.identity,
		Labels:        map[string]string{membership.LabelGroup: e.s.group, membership.LabelRole: membership.RoleLeader},
		LeaseDuration: lease.Duration,
		RenewDeadline: lease.RenewDeadline,
		RetryPeriod:   lease.RetryPeriod,
		Callbacks: election.Callbacks{
			OnStartedLeading: e.lead,
			OnStoppedLeading: func() {
				e.set.Logger.Info("Stopped leading", zap.String("group", e.s.group))
				e.telemetry.TargetallocatorLeader.Record(context.Background(), 0)
				e.allocationChanged()
			},
			OnNewLeader: func(l election.Leader) {
				e.set.Logger.Info("New leader", zap.String("group", e.s.group), zap.String("leader", l.Identity), zap.Int("epoch", l.Transitions))
				e.members.Follow(l.Identity) // a follower watches the leader's member Lease alone
				e.telemetry.TargetallocatorLeaderChanges.Add(context.Background(), 1)
				e.allocationChanged()
			},
			OnAPIResult: e.health.set,
		},
	})
	return err
}

// lead runs while this member leads: it allocates the group's targets and
// removes the Leases of members that are long gone.
func (e *allocatorExtension) lead(ctx context.Context) {
	e.set.Logger.Info("Started leading", zap.String("group", e.s.group))
	e.telemetry.TargetallocatorLeader.Record(context.Background(), 1)
	e.allocationChanged()
	var allocated sync.WaitGroup
	allocated.Go(func() { e.allocate(ctx) })
	defer allocated.Wait()
	ticker := time.NewTicker(e.cfg.Lease.Duration)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if err := e.members.Sweep(ctx); err != nil {
				e.set.Logger.Warn("Cannot remove expired member leases", zap.Error(err))
			}
		}
	}
}

// Shutdown hands leadership over, leaves the group and stops serving.
func (e *allocatorExtension) Shutdown(ctx context.Context) error {
	defer e.telemetry.Shutdown()
	if e.cancel == nil {
		return nil
	}
	// The member Lease goes first, leadership after: the next leader's
	// first allocation does not count this member in.
	e.leave()
	select {
	case <-e.left:
	case <-ctx.Done():
	case <-time.After(e.cfg.Lease.RenewDeadline):
	}
	e.cancel()
	for _, srv := range []*http.Server{e.server, e.httpsServer} {
		if srv != nil {
			_ = srv.Shutdown(ctx)
		}
	}
	stopped := make(chan struct{})
	go func() {
		e.done.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("leave group %s: %w", e.s.group, ctx.Err())
	}
}
