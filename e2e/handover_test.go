package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/embedded-ta/embedded-ta/internal/demotarget"
	"github.com/embedded-ta/embedded-ta/internal/kubetest"
	"github.com/embedded-ta/embedded-ta/internal/testaddr"
)

// The hand-over measurements count data where it is exported: numbered
// targets (each data point's value is the number of its scrape interval) and
// an OTLP/HTTP endpoint that records every data point with the replica that
// exported it.
const (
	handoverInterval = 2 * time.Second
	handoverRefresh  = 5 * time.Second
	// fenceBound is how long after its share changed a member may still
	// export a target's data: the time for it to learn the change (at once on
	// the leader; one round trip at its leader and one relayed share on a
	// follower) and for the test to see the change at the leader (it polls
	// every 100 ms), with room for a loaded machine. Without the fence, the
	// old owner exports until its stock receiver has polled and reloaded:
	// up to refresh_interval + 10 s.
	fenceBound = time.Second
	// handoverSlack is how much longer than one interval two exported
	// points of a moved target may lie apart: the members scrape a target
	// at the same offset within its interval (one host), so the points lie
	// one interval apart but for the scrape loops' timing jitter.
	handoverSlack = time.Second
	// handoverLease is the members' lease.duration, and stopBound how long a
	// graceful stop may take: the hand-over of its share, bounded by its
	// receiver's refresh_interval + 30 s.
	handoverLease = 5 * time.Second
	stopBound     = handoverRefresh + 30*time.Second + 5*time.Second
)

// exportedPoint is one data point of scrape_number as a replica exported it.
type exportedPoint struct {
	replica string
	target  string // instance
	number  int64
	at      time.Time // the scrape's timestamp
}

// otlpSink is the test's OTLP/HTTP endpoint. Each replica's otlphttp
// exporter names itself in the X-Replica header.
type otlpSink struct {
	*httptest.Server
	mu     sync.Mutex
	points []exportedPoint
}

func newOTLPSink(t *testing.T) *otlpSink {
	s := &otlpSink{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err != nil || r.URL.Path != "/v1/metrics" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		md, err := (&pmetric.ProtoUnmarshaler{}).UnmarshalMetrics(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.record(r.Header.Get("X-Replica"), md)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK) // an empty ExportMetricsServiceResponse
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *otlpSink) record(replica string, md pmetric.Metrics) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rm := range md.ResourceMetrics().All() {
		instance, _ := rm.Resource().Attributes().Get("service.instance.id")
		for _, sm := range rm.ScopeMetrics().All() {
			for _, m := range sm.Metrics().All() {
				if m.Name() != "scrape_number" || m.Type() != pmetric.MetricTypeGauge {
					continue
				}
				for _, dp := range m.Gauge().DataPoints().All() {
					if dp.Flags().NoRecordedValue() {
						continue // a staleness marker carries no number
					}
					number := dp.IntValue()
					if dp.ValueType() == pmetric.NumberDataPointValueTypeDouble {
						number = int64(dp.DoubleValue())
					}
					s.points = append(s.points, exportedPoint{replica: replica, target: instance.Str(), number: number, at: dp.Timestamp().AsTime()})
				}
			}
		}
	}
}

// since returns the points of scrapes at or after from.
func (s *otlpSink) since(from time.Time) []exportedPoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []exportedPoint
	for _, p := range s.points {
		if !p.at.Before(from) {
			out = append(out, p)
		}
	}
	return out
}

// ownerChange is when the test saw a target's member change at the leader.
type ownerChange struct {
	at    time.Time
	owner string
}

// owners polls a member's allocator API (the member at endpoint, which may
// change) for who owns each target of job, and records every change.
type owners struct {
	mu      sync.Mutex
	current map[string]string
	changes map[string][]ownerChange
}

func watchOwners(t *testing.T, endpoint func() string, job string) *owners {
	o := &owners{current: map[string]string{}, changes: map[string][]ownerChange{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		client := &http.Client{Timeout: time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			resp, err := client.Get("http://" + endpoint() + "/jobs/" + job + "/targets")
			if err != nil {
				continue
			}
			var byMember map[string]struct {
				Targets []struct {
					Targets []string `json:"targets"`
				} `json:"targets"`
			}
			err = json.NewDecoder(resp.Body).Decode(&byMember)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				continue
			}
			now := time.Now()
			o.mu.Lock()
			for member, entry := range byMember {
				for _, g := range entry.Targets {
					for _, addr := range g.Targets {
						if o.current[addr] != member {
							o.current[addr] = member
							o.changes[addr] = append(o.changes[addr], ownerChange{at: now, owner: member})
						}
					}
				}
			}
			o.mu.Unlock()
		}
	}()
	return o
}

func (o *owners) snapshot() map[string]string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.current)
}

// movedSince returns, for each target whose member changed after from, its
// member before, its member after, and when the change was seen.
func (o *owners) movedSince(from time.Time) map[string]ownerChange {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]ownerChange{}
	for addr, changes := range o.changes {
		for i, c := range changes {
			if i > 0 && c.at.After(from) {
				out[addr] = ownerChange{at: c.at, owner: changes[i-1].owner}
				break
			}
		}
	}
	return out
}

// waitExportedByOwners waits until every target is owned by one of procs at
// the leader, and its last three scrapes since since were exported by its
// owner alone.
func waitExportedByOwners(t *testing.T, sink *otlpSink, o *owners, addrs []string, procs []*process, since time.Time, within time.Duration) {
	t.Helper()
	members := names(procs)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		owner := o.snapshot()
		exported := map[string][]exportedPoint{}
		for _, p := range sink.since(since) {
			exported[p.target] = append(exported[p.target], p)
		}
		for _, addr := range addrs {
			if !assert.Contains(c, members, owner[addr], "%s is owned by no member", addr) {
				continue
			}
			points := exported[addr]
			slices.SortFunc(points, func(a, b exportedPoint) int { return a.at.Compare(b.at) })
			var by []string
			for _, p := range points[max(0, len(points)-3):] {
				by = append(by, p.replica)
			}
			assert.Equal(c, []string{owner[addr], owner[addr], owner[addr]}, by, "%s: its last scrapes exported by, owned by %s", addr, owner[addr])
		}
	}, within, 250*time.Millisecond)
}

// waitHandedOver waits until every member of procs owns a target and the
// leader has no move under way.
func waitHandedOver(t *testing.T, leader *process, o *owners, procs []*process, within time.Duration) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		owning := map[string]bool{}
		for _, m := range o.snapshot() {
			owning[m] = true
		}
		for _, p := range procs {
			assert.True(c, owning[p.name], "%s owns no target yet", p.name)
		}
		n, err := handoffs(leader)
		if assert.NoError(c, err) {
			assert.Zero(c, n, "moves under way")
		}
	}, within, 250*time.Millisecond)
}

// handoffs reads from the leader's /status how many moves, made before they
// are broken, are under way.
func handoffs(leader *process) (int, error) {
	resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + leader.endpoint + "/status")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var doc struct {
		Allocation *struct {
			Handoffs int `json:"handoffs"`
		} `json:"allocation"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return 0, err
	}
	if doc.Allocation == nil {
		return 0, fmt.Errorf("%s does not lead", leader.name)
	}
	return doc.Allocation.Handoffs, nil
}

// handoverFigures are one target's figures through one change.
type handoverFigures struct {
	from, to   string        // members before and after, "" if it did not move
	missing    int           // scrape numbers nobody exported
	longestGap time.Duration // the longest run of missing numbers
	duplicates int           // scrape numbers exported by two replicas
	// lastOld is when, after the move was seen at the leader, the old member
	// last exported the target's data (the scrape's time): negative when it
	// had stopped before.
	lastOld time.Duration
	// sequence is who exported each number, for the log: "member:number".
	sequence []string
	// longestSilence is the longest time between two exported points of
	// the target (their scrapes' times).
	longestSilence time.Duration
}

// figures counts each target's exported scrape numbers from the scrapes in
// [from, to], for a change that began at change.
func figures(sink *otlpSink, o *owners, addrs []string, change, from, to time.Time) map[string]handoverFigures {
	moved := o.movedSince(change)
	after := o.snapshot()
	out := map[string]handoverFigures{}
	for _, addr := range addrs {
		byNumber := map[int64]map[string]bool{}
		var lastOld time.Time
		for _, p := range sink.since(from) {
			if p.target != addr || p.at.After(to) {
				continue
			}
			if byNumber[p.number] == nil {
				byNumber[p.number] = map[string]bool{}
			}
			byNumber[p.number][p.replica] = true
			if m, ok := moved[addr]; ok && p.replica == m.owner && p.at.After(lastOld) {
				lastOld = p.at
			}
		}
		f := handoverFigures{}
		if m, ok := moved[addr]; ok {
			f.from, f.to = m.owner, after[addr]
			f.lastOld = lastOld.Sub(m.at)
			if lastOld.IsZero() {
				f.lastOld = from.Sub(m.at) // nothing since from: at least that long before
			}
		}
		var times []time.Time
		for _, p := range sink.since(from) {
			if p.target == addr && !p.at.After(to) {
				times = append(times, p.at)
			}
		}
		slices.SortFunc(times, time.Time.Compare)
		for i := 1; i < len(times); i++ {
			f.longestSilence = max(f.longestSilence, times[i].Sub(times[i-1]))
		}
		numbers := slices.Sorted(maps.Keys(byNumber))
		for _, n := range numbers {
			for _, r := range slices.Sorted(maps.Keys(byNumber[n])) {
				f.sequence = append(f.sequence, fmt.Sprintf("%s:%d", strings.TrimPrefix(r, "otcta-collector-"), n))
			}
		}
		for i, n := range numbers {
			if len(byNumber[n]) > 1 {
				f.duplicates++
			}
			if i > 0 && n-numbers[i-1] > 1 {
				run := n - numbers[i-1] - 1
				f.missing += int(run)
				f.longestGap = max(f.longestGap, time.Duration(run)*handoverInterval)
			}
		}
		out[addr] = f
	}
	return out
}

// handoverConfig is the members' configuration: one job of the numbered
// targets, scraped every 2 s, exported over OTLP/HTTP to the sink with the
// member's name in a header.
func handoverConfig(t *testing.T, addrs []string, sink string, receiver ...string) string {
	quoted := make([]string, len(addrs))
	for i, a := range addrs {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	cfg := fmt.Sprintf(`
extensions:
  target_allocator:
    auth_type: kubeConfig
    endpoint: ${env:ALLOCATOR_ENDPOINT}
    lease: {duration: 5s, renew_deadline: 3s, retry_period: 1s}
    config:
      global: {scrape_interval: %[1]s, scrape_timeout: %[1]s}
      scrape_configs:
        - job_name: numbered
          static_configs: [{targets: [%[2]s]}]
          metric_relabel_configs: [{source_labels: [__name__], regex: scrape_number, action: keep}]
receivers:
  prometheus_allocated:
    interval: %[3]s
    http_sd_config: {refresh_interval: %[3]s}
    %[5]s
exporters:
  otlp_http:
    endpoint: %[4]s
    compression: none
    headers:
      X-Replica: ${env:POD_NAME}
service:
  extensions: [target_allocator]
  pipelines:
    metrics: {receivers: [prometheus_allocated], exporters: [otlp_http]}
  telemetry:
    logs: {encoding: json}
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: ${env:TELEMETRY_PORT}
`, handoverInterval, strings.Join(quoted, ", "), handoverRefresh, sink, strings.Join(receiver, "\n    "))
	path := filepath.Join(t.TempDir(), "handover.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

// handoverChange is one change of the group and its figures.
type handoverChange struct {
	name string
	// planned counts the planned moves a target makes in the change, each
	// made before it is broken: 1 for a graceful leave or a join, 2 for a
	// restart (a leave and a join), 0 for a crash.
	planned int
	// fenced: the old member's export is bounded by the move's cut-over
	// (at most 4 s and an interval) + fenceBound after the move (false when
	// the target comes back to it, as in a restart).
	fenced  bool
	figures map[string]handoverFigures
}

// Through a graceful leave, a join, a rolling restart and a SIGKILL at a 2 s
// scrape interval, counted where data is exported. Planned changes are made
// before they are broken: a moved target's new member scrapes it first and
// drops its data (it warms) while its old member exports it; once the new
// member has seen its first scrape, one allocation moves it, and the two
// split its data at the move's cut-over. So a moved target misses no
// interval and is exported once, and its exported points lie an interval
// apart. A target that stays misses nothing and is never exported twice. A member that loses a target stops exporting
// its data as soon as it learns of the change (the fence). A SIGKILL costs
// its targets the lease, the new member's HTTP SD poll and the stock
// receiver's delays.
func TestHandoverExportsEachScrapeOnce(t *testing.T) {
	var addrs []string
	for range 12 {
		target, err := demotarget.StartNumbered(testaddr.Free(t), handoverInterval)
		require.NoError(t, err)
		t.Cleanup(func() { _ = target.Close() })
		addrs = append(addrs, target.Addr)
	}
	slices.Sort(addrs)
	sink := newOTLPSink(t)
	cfg := handoverConfig(t, addrs, sink.URL)
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	procs := startGroup(t, kubeconfig, "otcta-collector", 3, cfg)
	leader := settled(t, procs, 60*time.Second)
	var watched atomic.Pointer[process] // the leader, which answers at once
	watched.Store(leader)
	o := watchOwners(t, func() string { return watched.Load().endpoint }, "numbered")
	waitExportedByOwners(t, sink, o, addrs, procs, time.Now(), 90*time.Second)

	stop := func(p *process) {
		t.Helper()
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		select {
		case <-p.done:
		case <-time.After(stopBound):
			t.Fatalf("%s did not stop within %s", p.name, stopBound)
		}
	}
	follower := func(procs []*process) *process {
		for _, p := range slices.Backward(procs) {
			if p != leader {
				return p
			}
		}
		return nil
	}
	var changes []handoverChange
	var measured time.Time // the end of the last change's figures
	measure := func(name string, planned int, fenced bool, start time.Time, after []*process) {
		t.Helper()
		leader = settled(t, after, 60*time.Second)
		watched.Store(leader)
		waitHandedOver(t, leader, o, after, 90*time.Second)
		waitExportedByOwners(t, sink, o, addrs, after, start, 90*time.Second)
		from := start.Add(-3 * handoverInterval)
		if from.Before(measured) {
			from = measured
		}
		measured = time.Now()
		changes = append(changes, handoverChange{name: name, planned: planned, fenced: fenced,
			figures: figures(sink, o, addrs, start, from, measured)})
	}

	// A graceful leave: a follower gets SIGTERM, as a StatefulSet scales down.
	leaving := follower(procs)
	procs = slices.DeleteFunc(slices.Clone(procs), func(p *process) bool { return p == leaving })
	start := time.Now()
	stop(leaving)
	measure("graceful leave of "+leaving.name, 1, true, start, procs)

	// A join: a new member, as a StatefulSet scales up.
	start = time.Now()
	procs = append(procs, startProcess(t, kubeconfig, "otcta-collector-3", cfg))
	measure("join of otcta-collector-3", 1, true, start, procs)

	// A rolling restart, from the highest ordinal, the leader among them:
	// each member leaves and comes back under its name.
	slices.SortFunc(procs, func(a, b *process) int { return strings.Compare(a.name, b.name) })
	for i := len(procs) - 1; i >= 0; i-- {
		old := procs[i]
		start = time.Now()
		stop(old)
		procs[i] = startProcess(t, kubeconfig, old.name, cfg)
		measure("restart of "+old.name, 2, false, start, procs)
	}

	// A SIGKILL of a follower, in steady state (no stock receiver still
	// scrapes a target it had before the restarts: it has polled and
	// reloaded since): its targets wait for its Lease to expire.
	time.Sleep(handoverRefresh + 10*time.Second + handoverInterval)
	killed := follower(procs)
	procs = slices.DeleteFunc(slices.Clone(procs), func(p *process) bool { return p == killed })
	start = time.Now()
	killed.kill(t)
	measure("SIGKILL of "+killed.name, 0, false, start, procs)
	// Its Lease, the new member's HTTP SD poll, the stock receiver's delays
	// (discovery 5 s, scrape reload 5 s) and two intervals.
	crashBound := handoverLease + handoverRefresh + 10*time.Second + 2*handoverInterval

	for _, change := range changes {
		var lines []string
		moved, missing, duplicates := 0, 0, 0
		var silence time.Duration
		for _, addr := range addrs {
			f := change.figures[addr]
			if f.from == "" {
				lines = append(lines, fmt.Sprintf("%-16s %-38s missing %2d  longest silence %5s  duplicates %d  %s", addr, "(stayed)", f.missing, f.longestSilence, f.duplicates, strings.Join(f.sequence, " ")))
				assert.Zero(t, f.duplicates, "%s: %s did not move, yet scrapes of it were exported twice", change.name, addr)
				assert.Zero(t, f.missing, "%s: %s did not move, yet scrapes of it are missing", change.name, addr)
				continue
			}
			moved++
			missing += f.missing
			duplicates += f.duplicates
			silence = max(silence, f.longestSilence)
			lines = append(lines, fmt.Sprintf("%-16s %-38s missing %2d  longest silence %5s  duplicates %d  old member's last export %+.3fs after the move  %s",
				addr, f.from+" -> "+f.to, f.missing, f.longestSilence.Round(time.Millisecond), f.duplicates, f.lastOld.Seconds(), strings.Join(f.sequence, " ")))
			if change.planned > 0 {
				// Make before break, split at the cut-over: each interval
				// exported once, by one member.
				assert.Zero(t, f.duplicates, "%s: %s: scrape numbers exported twice", change.name, addr)
				assert.Zero(t, f.missing, "%s: %s: scrape numbers nobody exported", change.name, addr)
				assert.LessOrEqual(t, f.longestSilence, handoverInterval+handoverSlack, "%s: %s: exported points lie too far apart", change.name, addr)
			} else {
				assert.LessOrEqual(t, f.longestSilence, crashBound, "%s: %s: its data came back too late", change.name, addr)
			}
			if change.fenced {
				// The old member exports a moved target until the cut-over
				// (at most 4 s and an interval after the move), then its
				// fence drops its data.
				assert.LessOrEqual(t, f.lastOld, 4*time.Second+handoverInterval+fenceBound, "%s: %s: %s exported its data %s after the target moved", change.name, addr, f.from, f.lastOld)
			}
		}
		t.Logf("measured: %s at a %s scrape interval, refresh_interval %s: %d of %d targets moved, %d scrape numbers missing, %d exported twice, longest silence of a moved target %s\n%s",
			change.name, handoverInterval, handoverRefresh, moved, len(addrs), missing, duplicates, silence.Round(time.Millisecond), strings.Join(lines, "\n"))
		assert.Positive(t, moved, "%s moved no target: nothing measured", change.name)
	}
	for _, p := range procs {
		fenced, err := p.metric("otelcol_receiver_prometheus_allocated_fenced_metric_points")
		if err != nil {
			fenced = 0 // never fenced anything: the counter is not exposed yet
		}
		t.Logf("measured: %s fenced %.0f data points", p.name, fenced)
	}
}

// With hot_standby, each member also scrapes the targets it would take if
// their member died, and drops their data: in steady state no scrape is
// exported twice, and a SIGKILL costs the dead member's targets the lease
// and at most two intervals (the stock receiver of their new member already
// scrapes them), not its poll and delays.
func TestHotStandbyFailover(t *testing.T) {
	var addrs []string
	for range 12 {
		target, err := demotarget.StartNumbered(testaddr.Free(t), handoverInterval)
		require.NoError(t, err)
		t.Cleanup(func() { _ = target.Close() })
		addrs = append(addrs, target.Addr)
	}
	slices.Sort(addrs)
	sink := newOTLPSink(t)
	cfg := handoverConfig(t, addrs, sink.URL, "hot_standby: true")
	ns := controlPlane.Namespace(t)
	kubeconfig := kubetest.WriteKubeconfig(t, controlPlane.Config, ns)
	procs := startGroup(t, kubeconfig, "otcta-collector", 3, cfg)
	leader := settled(t, procs, 60*time.Second)
	var watched atomic.Pointer[process]
	watched.Store(leader)
	o := watchOwners(t, func() string { return watched.Load().endpoint }, "numbered")
	waitHandedOver(t, leader, o, procs, 90*time.Second)
	waitExportedByOwners(t, sink, o, addrs, procs, time.Now(), 90*time.Second)

	// Steady state: the standbys scrape (their fences drop data), and
	// nothing is exported twice or missing.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, p := range procs {
			fenced, err := p.metric("otelcol_receiver_prometheus_allocated_fenced_metric_points")
			if assert.NoError(c, err, "%s has dropped nothing yet", p.name) {
				assert.Positive(c, fenced, "%s drops no standby data", p.name)
			}
		}
	}, 60*time.Second, time.Second)
	steady := time.Now()
	time.Sleep(6 * handoverInterval)
	for addr, f := range figures(sink, o, addrs, steady, steady, time.Now()) {
		assert.Empty(t, f.from, "%s moved in steady state", addr)
		assert.Zero(t, f.duplicates, "%s: a standby's data reached the exporter: %v", addr, f.sequence)
		assert.Zero(t, f.missing, "%s: %v", addr, f.sequence)
	}

	// A SIGKILL of a follower.
	var killed *process
	for _, p := range slices.Backward(procs) {
		if p != leader {
			killed = p
			break
		}
	}
	survivors := slices.DeleteFunc(slices.Clone(procs), func(p *process) bool { return p == killed })
	start := time.Now()
	killed.kill(t)
	leader = settled(t, survivors, 60*time.Second)
	watched.Store(leader)
	waitHandedOver(t, leader, o, survivors, 60*time.Second)
	waitExportedByOwners(t, sink, o, addrs, survivors, start, 60*time.Second)
	// The lease, two intervals, and handoverSlack.
	bound := handoverLease + 2*handoverInterval + handoverSlack
	var lines []string
	moved := 0
	for _, addr := range addrs {
		f := figures(sink, o, addrs, start, start.Add(-3*handoverInterval), time.Now())[addr]
		lines = append(lines, fmt.Sprintf("%-16s %-38s missing %2d  longest silence %5s  duplicates %d  %s", addr, f.from+" -> "+f.to, f.missing, f.longestSilence.Round(time.Millisecond), f.duplicates, strings.Join(f.sequence, " ")))
		if f.from == "" {
			assert.Zero(t, f.missing, "%s did not move, yet scrapes of it are missing", addr)
			assert.Zero(t, f.duplicates, "%s did not move, yet scrapes of it were exported twice", addr)
			continue
		}
		if f.from != killed.name {
			// A target of a survivor the load bounds move: a planned move.
			assert.Zero(t, f.missing, "%s: moved from a survivor, yet scrapes of it are missing", addr)
			assert.LessOrEqual(t, f.duplicates, 1, "%s: a planned move adds at most one extra data point", addr)
			continue
		}
		moved++
		assert.LessOrEqual(t, f.longestSilence, bound, "%s: its data came back too late", addr)
		assert.Zero(t, f.duplicates, "%s: exported twice", addr)
	}
	t.Logf("measured: SIGKILL of %s with hot_standby at a %s scrape interval, lease %s: %d of its targets moved among %d (bound %s)\n%s",
		killed.name, handoverInterval, handoverLease, moved, len(addrs), bound, strings.Join(lines, "\n"))
	assert.Positive(t, moved, "the killed member had no target: nothing measured")
}
