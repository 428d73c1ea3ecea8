package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/embedded-ta/embedded-ta/internal/shares"
	"github.com/embedded-ta/embedded-ta/internal/status"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	promdiscovery "github.com/prometheus/prometheus/discovery"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/allocation"
	"github.com/embedded-ta/embedded-ta/internal/allocatorapi"
	"github.com/embedded-ta/embedded-ta/internal/discovery"
	"github.com/embedded-ta/embedded-ta/internal/leader"
	"github.com/embedded-ta/embedded-ta/internal/memorylimit"
)

// The leader process: the real term (internal/leader: Prometheus discovery,
// the relabel filter, allocation, publication) and the real API handler on
// a loopback listener. Its members come from an in-process list, not from
// member Leases. It reads commands on stdin and reports on stdout:
//
//	ready <addr>
//	published <unix ns> <targets> <moved> <pending>
//	changed <unix ns> <targets changed>
//	delivered <unix ns>  (every job's SD mechanism has handed over all its groups)
//	heap <bytes live after a collection>
//
// Its targets come from file_sd (files it writes and rewrites) or from
// "loadtest_sd_configs", an SD mechanism of this program registered with
// Prometheus's discovery, which sends only the groups that changed, as
// Kubernetes SD does; file_sd re-reads every file on every change.

func init() { promdiscovery.RegisterConfig(&sdConfig{}) }

// fleet generates the targets: groups of targets with about ten labels,
// as Kubernetes pod discovery gives them, of which a change restarts some
// (new addresses, new pod names).
type fleet struct {
	jobs, groups, perGroup int
	mu                     sync.Mutex
	gen                    []int // per group: restarts
	r                      *rand.Rand
	updates                chan []*targetgroup.Group
}

func newFleet(jobs, targets, perGroup int) *fleet {
	groups := max(targets/perGroup/jobs, 1)
	return &fleet{jobs: jobs, groups: groups, perGroup: perGroup, gen: make([]int, jobs*groups),
		r: rand.New(rand.NewPCG(1, 1)), updates: make(chan []*targetgroup.Group, 16)}
}

func (f *fleet) group(job, g int) *targetgroup.Group {
	i := job*f.groups + g
	gen := f.gen[i]
	tg := &targetgroup.Group{
		Source: fmt.Sprintf("pods/job-%d/%d", job, g),
		Labels: model.LabelSet{
			"__meta_kubernetes_namespace":                           model.LabelValue(fmt.Sprintf("ns-%d", g%50)),
			"__meta_kubernetes_pod_label_app":                       model.LabelValue(fmt.Sprintf("app-%d", g%200)),
			"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
			"__meta_kubernetes_pod_phase":                           "Running",
		},
	}
	for t := range f.perGroup {
		n := (i*f.perGroup+t)*4 + gen%4 // another address after a restart
		tg.Targets = append(tg.Targets, model.LabelSet{
			"__address__":                          model.LabelValue(fmt.Sprintf("10.%d.%d.%d:%d", n>>16&255, n>>8&255, n&255, 8080+gen)),
			"__meta_kubernetes_pod_name":           model.LabelValue(fmt.Sprintf("app-%d-%d-%d", g, t, gen)),
			"__meta_kubernetes_pod_ip":             model.LabelValue(fmt.Sprintf("10.%d.%d.%d", n>>16&255, n>>8&255, n&255)),
			"__meta_kubernetes_pod_node_name":      model.LabelValue(fmt.Sprintf("node-%d", (i*f.perGroup+t)%500)),
			"__meta_kubernetes_pod_container_name": "app",
			"__meta_kubernetes_pod_uid":            model.LabelValue(fmt.Sprintf("%08x-%d", i*f.perGroup+t, gen)),
		})
	}
	return tg
}

func (f *fleet) all(job int) []*targetgroup.Group {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*targetgroup.Group, f.groups)
	for g := range out {
		out[g] = f.group(job, g)
	}
	return out
}

// restart restarts the pods of a fraction of the groups of every job and
// returns the changed groups by job.
func (f *fleet) restart(fraction float64) map[int][]*targetgroup.Group {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[int][]*targetgroup.Group{}
	k := max(int(fraction*float64(f.groups)+0.5), 1)
	for job := range f.jobs {
		for _, g := range f.r.Perm(f.groups)[:k] {
			f.gen[job*f.groups+g]++
			out[job] = append(out[job], f.group(job, g))
		}
	}
	return out
}

// sdConfig is loadtest_sd_configs: the fleet's groups of one job.
type sdConfig struct {
	Fleet string `yaml:"fleet"` // a name: Prometheus rejects an empty section
	Job   int    `yaml:"job"`
}

var theFleet *fleet

// initialSent is called by each job's SD mechanism once the leader's
// discovery has taken its first groups, all of the job's targets.
var initialSent func()

func (*sdConfig) Name() string { return "loadtest" }
func (c *sdConfig) NewDiscoverer(promdiscovery.DiscovererOptions) (promdiscovery.Discoverer, error) {
	return &sd{job: c.Job, updates: theFleet.subscribe(c.Job)}, nil
}
func (*sdConfig) NewDiscovererMetrics(prometheus.Registerer, promdiscovery.RefreshMetricsInstantiator) promdiscovery.DiscovererMetrics {
	return &promdiscovery.NoopDiscovererMetrics{}
}

var (
	subsMu sync.Mutex
	subs   = map[int]chan []*targetgroup.Group{}
)

func (f *fleet) subscribe(job int) chan []*targetgroup.Group {
	subsMu.Lock()
	defer subsMu.Unlock()
	ch := make(chan []*targetgroup.Group, 16)
	subs[job] = ch
	return ch
}

type sd struct {
	job     int
	updates chan []*targetgroup.Group
}

func (d *sd) Run(ctx context.Context, up chan<- []*targetgroup.Group) {
	select {
	case up <- theFleet.all(d.job):
		initialSent()
	case <-ctx.Done():
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case groups := <-d.updates:
			select {
			case up <- groups:
			case <-ctx.Done():
				return
			}
		}
	}
}

// fileGroup is a group as file_sd reads it.
type fileGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// writeFile writes the groups of one file of one job; file_sd takes a
// group's labels for all its targets, so each target is a group of its own.
func writeFile(dir string, job, file, files int, groups []*targetgroup.Group) error {
	var out []fileGroup
	for g := file; g < len(groups); g += files {
		for _, t := range groups[g].Targets {
			fg := fileGroup{Targets: []string{string(t["__address__"])}, Labels: map[string]string{}}
			for k, v := range groups[g].Labels {
				fg.Labels[string(k)] = string(v)
			}
			for k, v := range t {
				if k != "__address__" {
					fg.Labels[string(k)] = string(v)
				}
			}
			out = append(out, fg)
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".job-%d-%d.tmp", job, file))
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("job-%d-%d.json", job, file)))
}

func runLeader(o options) error {
	// As the target_allocator extension does at start: a Go memory limit
	// from the container's (the cgroup's) unless GOMEMLIMIT is set.
	logger, err := zap.NewProduction() // to stderr
	if err != nil {
		return err
	}
	memorylimit.Set(logger)
	theFleet = newFleet(o.jobs, o.targets, o.perGroup)
	const files = 100
	dir, err := os.MkdirTemp("", "loadtest-sd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var jobs []any
	for j := range o.jobs {
		job := map[string]any{
			"job_name": fmt.Sprintf("job-%d", j),
			"relabel_configs": []any{
				map[string]any{"source_labels": []any{"__meta_kubernetes_pod_annotation_prometheus_io_scrape"}, "regex": "true", "action": "keep"},
				map[string]any{"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
				map[string]any{"source_labels": []any{"__meta_kubernetes_namespace"}, "target_label": "namespace"},
				map[string]any{"source_labels": []any{"__meta_kubernetes_pod_name"}, "target_label": "pod"},
			},
		}
		switch o.source {
		case "file":
			groups := theFleet.all(j)
			for f := range files {
				if err := writeFile(dir, j, f, files, groups); err != nil {
					return err
				}
			}
			job["file_sd_configs"] = []any{map[string]any{"files": []any{filepath.Join(dir, fmt.Sprintf("job-%d-*.json", j))}, "refresh_interval": "1h"}}
		default:
			job["loadtest_sd_configs"] = []any{map[string]any{"fleet": "pods", "job": j}}
		}
		jobs = append(jobs, job)
	}
	cfg, err := discovery.LoadConfig(map[string]any{"scrape_configs": jobs})
	if err != nil {
		return err
	}

	var current atomic.Pointer[shares.Allocation]
	src := &apiSource{current: &current}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: allocatorapi.NewHandler(src, http.DefaultClient, "http", zap.NewNop()), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()

	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
		_ = out.Flush()
	}
	say("memorylimit %d", debug.SetMemoryLimit(-1)) // before ready: the driver waits for it
	var sent atomic.Int32
	initialSent = func() {
		if int(sent.Add(1)) == o.jobs {
			say("delivered %d", time.Now().UnixNano())
		}
	}
	members := make([]allocation.Member, o.members)
	for i := range members {
		members[i] = allocation.Member{Identity: memberName(i)}
	}
	stopProfile := func() {}
	if o.startProfile != "" {
		f, err := os.Create(o.startProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		var once sync.Once
		stopProfile = func() { once.Do(func() { pprof.StopCPUProfile(); _ = f.Close() }) }
		defer stopProfile()
	}
	want := o.jobs * max(o.targets/o.perGroup/o.jobs, 1) * o.perGroup
	term, err := leader.New(leader.Config{
		Epoch: 1, Identity: members[0].Identity, Members: func() []allocation.Member { return members },
		Prometheus: cfg, Filter: discovery.FilterRelabelConfig, Strategy: o.strategy,
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go term.Run(ctx)
	go func() {
		defer close(done)
		for a := range term.Allocations() {
			current.Store(a)
			pending := 0
			if a.Pending {
				pending = 1
			}
			n := a.Summary().Targets
			if !a.Pending && n >= want {
				stopProfile()
			}
			say("published %d %d %d %d", time.Now().UnixNano(), n, a.Moved, pending)
		}
	}()
	say("ready %s", ln.Addr())

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 1 && fields[0] == "heap" {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			say("heap %d", ms.HeapAlloc)
			continue
		}
		if len(fields) == 2 && fields[0] == "heapprofile" {
			if f, err := os.Create(fields[1]); err == nil {
				_ = pprof.WriteHeapProfile(f)
				_ = f.Close()
			}
			continue
		}
		if len(fields) != 2 || fields[0] != "change" {
			continue
		}
		fraction, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			log.Printf("bad command %q", in.Text())
			continue
		}
		changed := theFleet.restart(fraction)
		n := 0
		start := time.Now()
		for job, groups := range changed {
			for _, g := range groups {
				n += len(g.Targets)
			}
			if o.source == "file" {
				all := theFleet.all(job)
				touched := map[int]bool{}
				for _, g := range groups {
					var idx int
					_, _ = fmt.Sscanf(g.Source[strings.LastIndex(g.Source, "/")+1:], "%d", &idx)
					touched[idx%files] = true
				}
				for f := range touched {
					if err := writeFile(dir, job, f, files, all); err != nil {
						return err
					}
				}
				continue
			}
			subsMu.Lock()
			ch := subs[job]
			subsMu.Unlock()
			ch <- groups
		}
		say("changed %d %d", start.UnixNano(), n)
	}
	cancel()
	<-done
	return srv.Close()
}

func memberName(i int) string { return fmt.Sprintf("member-%03d", i) }

// apiSource is the leader as the API handler sees it.
type apiSource struct {
	current *atomic.Pointer[shares.Allocation]
}

func (s *apiSource) Allocation() *shares.Allocation { return s.current.Load() }
func (s *apiSource) View() status.View {
	return status.View{Identity: memberName(0), Group: "loadtest", Leader: memberName(0), IsLeader: true, Epoch: 1}
}
