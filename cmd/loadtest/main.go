// Command loadtest measures a leader at scale: `make loadtest` (not part of
// `make test`).
//
// It starts itself again as the leader process (leader.go: the real
// discovery, allocation and API code, members from an in-process list) and
// polls it as M members' stock receivers would: every member asks for its
// share of every job every -poll over loopback HTTP. It prints the leader's
// resident memory, its CPU per second of steady state, the latency and size
// of the answers with and without If-None-Match, and, for changes of a
// fraction of the targets, the time from the discovery mechanism sending the
// change to the allocation that holds it and to every member's answer
// holding it. With -member-leases it then runs a group of as many members
// with real member Leases on a local control plane and measures the Lease
// writes and each follower's watch events (leases.go). With -json its last
// line is one JSON object of the figures (result).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

type options struct {
	role                   string
	targets, members, jobs int
	perGroup               int
	source, strategy       string
	poll, steady           time.Duration
	changes                int
	fraction               float64
	gomaxprocs             int
	heapProfile            string
	startProfile           string
	json                   bool
	memberLeases           bool
	containerMemory        string
}

func main() {
	var o options
	flag.StringVar(&o.role, "role", "driver", "driver, or leader (started by the driver)")
	flag.IntVar(&o.targets, "targets", 10_000, "targets in all")
	flag.IntVar(&o.members, "members", 10, "members of the group (in-process, no member Leases)")
	flag.IntVar(&o.jobs, "jobs", 1, "scrape jobs the targets are spread over")
	flag.IntVar(&o.perGroup, "per-group", 10, "targets per target group (a Kubernetes EndpointSlice holds up to 100)")
	flag.StringVar(&o.source, "source", "inprocess", "inprocess (an SD mechanism that sends the changed groups, as Kubernetes SD does) or file (file_sd)")
	flag.StringVar(&o.strategy, "strategy", "consistent-hashing", "allocation strategy")
	flag.DurationVar(&o.poll, "poll", 5*time.Second, "how often each member asks for each job's share (http_sd refresh_interval)")
	flag.DurationVar(&o.steady, "steady", 20*time.Second, "length of each steady-state window")
	flag.IntVar(&o.changes, "changes", 5, "changes to measure")
	flag.Float64Var(&o.fraction, "change", 0.01, "fraction of the targets a change restarts")
	flag.IntVar(&o.gomaxprocs, "leader-gomaxprocs", 0, "GOMAXPROCS of the leader process; 0 leaves Go's default")
	flag.StringVar(&o.heapProfile, "heap-profile", "", "write the leader's heap profile here at the end")
	flag.StringVar(&o.startProfile, "start-cpu-profile", "", "write the leader's CPU profile from its start to its first allocation with every target here")
	flag.BoolVar(&o.json, "json", false, "print the figures as one JSON object on the last line")
	flag.StringVar(&o.containerMemory, "leader-container-memory", "", "run the leader process in a memory cgroup of this limit, as resources.limits.memory gives a collector's container (a Kubernetes quantity, e.g. 1536Mi; needs root): it sets its Go memory limit from it as the target_allocator extension does, and the kernel stops it above it")
	flag.BoolVar(&o.memberLeases, "member-leases", false, "then run a group of -members members with real Leases on a local control plane (bin/kube-apiserver and etcd) and measure its Lease writes and each follower's watch events")
	flag.Parse()
	log.SetFlags(0)
	var err error
	if o.role == "leader" {
		err = runLeader(o)
	} else {
		var r result
		r, err = drive(o, os.Stdout)
		if err == nil && o.memberLeases {
			var f leaseFigures
			f, err = memberLeases(o.members, max(o.steady, time.Minute), os.Stdout)
			r.LeaseWrites, r.WatchEvents, r.WatchEventsMax = &f.writes, &f.events, &f.eventsMax
		}
		if err == nil && o.json {
			err = json.NewEncoder(os.Stdout).Encode(r)
		}
	}
	if err != nil {
		log.Fatal(err)
	}
}

// child is the leader process and what it reports.
type child struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	addr      string
	published chan event
	changed   chan event
	heap      chan int64
	delivered chan time.Time
	// memoryLimit is the Go memory limit the leader set at start (as the
	// extension does), math.MaxInt64 for none.
	memoryLimit chan int64
}

type event struct {
	at      time.Time
	n       int // targets
	moved   int
	pending bool
}

func start(o options, in *container) (*child, error) {
	name := os.Args[0]
	args := []string{"-role=leader", "-targets=" + strconv.Itoa(o.targets), "-members=" + strconv.Itoa(o.members),
		"-jobs=" + strconv.Itoa(o.jobs), "-per-group=" + strconv.Itoa(o.perGroup), "-source=" + o.source, "-strategy=" + o.strategy,
		"-start-cpu-profile=" + o.startProfile}
	if in != nil {
		name, args = in.wrap(name, args)
	}
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	if o.gomaxprocs > 0 {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(o.gomaxprocs))
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: stdin, published: make(chan event, 64), changed: make(chan event, 64), heap: make(chan int64, 1), delivered: make(chan time.Time, 1), memoryLimit: make(chan int64, 1)}
	ready := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			f := strings.Fields(s.Text())
			switch {
			case len(f) == 2 && f[0] == "ready":
				ready <- f[1]
			case len(f) == 5 && f[0] == "published":
				c.published <- event{at: unixNano(f[1]), n: atoi(f[2]), moved: atoi(f[3]), pending: f[4] == "1"}
			case len(f) == 2 && f[0] == "memorylimit":
				n, _ := strconv.ParseInt(f[1], 10, 64)
				c.memoryLimit <- n
			case len(f) == 2 && f[0] == "heap":
				n, _ := strconv.ParseInt(f[1], 10, 64)
				c.heap <- n
			case len(f) == 2 && f[0] == "delivered":
				c.delivered <- unixNano(f[1])
			case len(f) == 3 && f[0] == "changed":
				c.changed <- event{at: unixNano(f[1]), n: atoi(f[2])}
			}
		}
		// The leader process stopped (or was stopped: a memory cgroup's
		// limit), or its reports cannot be read: whoever waits for it
		// learns so.
		if err := s.Err(); err != nil {
			log.Printf("reading the leader process's reports: %v", err)
		}
		close(ready)
		close(c.published)
		close(c.changed)
		close(c.heap)
	}()
	addr, ok := <-ready
	if !ok {
		return nil, fmt.Errorf("the leader process stopped before it was ready: %v", cmd.Wait())
	}
	c.addr = addr
	return c, nil
}

// send sends the leader process a command; a leader that stopped is
// reported as such.
func (c *child) send(command string) error {
	if _, err := fmt.Fprintln(c.stdin, command); err != nil {
		return errors.Join(err, c.stopped())
	}
	return nil
}

// stopped is the error for a leader process that stopped before the end.
func (c *child) stopped() error {
	_ = c.stdin.Close() // a leader still running ends at the end of its commands
	return fmt.Errorf("the leader process stopped: %v", c.cmd.Wait())
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func unixNano(s string) time.Time { n, _ := strconv.ParseInt(s, 10, 64); return time.Unix(0, n) }

// usage is the leader process's resources.
type usage struct {
	rss, hwm int64 // bytes
	cpu      time.Duration
}

func (c *child) usage() usage {
	var u usage
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				if f[0] == "VmRSS:" {
					u.rss = kb << 10
				} else {
					u.hwm = kb << 10
				}
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid)); err == nil {
		// Fields after the command name, which is in parentheses: utime and
		// stime are the 12th and 13th, in clock ticks (100 a second on Linux).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) > 12 {
			ticks := atoi(f[11]) + atoi(f[12])
			u.cpu = time.Duration(ticks) * 10 * time.Millisecond
		}
	}
	return u
}

// poller is the members' stock receivers: each member asks for its share of
// every job every poll interval, optionally with If-None-Match.
type poller struct {
	addr    string
	members int
	jobs    int
	client  *http.Client

	mu        sync.Mutex
	etags     map[string]string
	latencies []time.Duration
	bytes     int64
	polls     int
	status    map[int]int
}

func newPoller(addr string, members, jobs int) *poller {
	return &poller{addr: addr, members: members, jobs: jobs, etags: map[string]string{},
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: members * jobs, DisableCompression: true}, Timeout: time.Minute}}
}

func (p *poller) url(member, job int) string {
	return fmt.Sprintf("http://%s/jobs/job-%d/targets?collector_id=%s", p.addr, job, memberName(member))
}

// get asks once and records it; it returns the status and the time taken.
func (p *poller) get(member, job int, conditional bool) (int, time.Duration, error) {
	u := p.url(member, job)
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	p.mu.Lock()
	etag := p.etags[u]
	p.mu.Unlock()
	if conditional && etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return 0, 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if resp.StatusCode == http.StatusOK {
		p.etags[u] = resp.Header.Get("ETag")
	}
	p.latencies = append(p.latencies, took)
	p.bytes += n
	p.polls++
	p.status[resp.StatusCode]++
	return resp.StatusCode, took, nil
}

func (p *poller) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latencies, p.bytes, p.polls, p.status = nil, 0, 0, map[int]int{}
}

// run polls until stop is closed, each member's polls spread over the interval.
func (p *poller) run(interval time.Duration, conditional bool, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for m := range p.members {
		wg.Go(func() {
			offset := time.Duration(float64(interval) * float64(m) / float64(p.members))
			select {
			case <-time.After(offset):
			case <-stop:
				return
			}
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				for j := range p.jobs {
					if _, _, err := p.get(m, j, conditional); err != nil {
						log.Printf("poll: %v", err)
					}
				}
				select {
				case <-t.C:
				case <-stop:
					return
				}
			}
		})
	}
	wg.Wait()
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(math.Ceil(q*float64(len(s))))-1, len(s)-1)]
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// result is the figures of a run, as -json prints them. Durations are in
// seconds (_s) or milliseconds (_ms), sizes in bytes; a figure the run did
// not measure is left out.
type result struct {
	Targets int    `json:"targets"`
	Members int    `json:"members"`
	Jobs    int    `json:"jobs"`
	Source  string `json:"source"`
	// FirstAllocation is from the start of the leader process to the first
	// allocation with every target; AfterDiscovery from the moment the SD
	// mechanism had handed over every group (-source=inprocess only).
	FirstAllocation              float64  `json:"first_allocation_s"`
	FirstAllocationAfterDelivery *float64 `json:"first_allocation_after_discovery_s,omitempty"`
	// Answers of the steady state with the stock client (no If-None-Match),
	// and with If-None-Match (mostly 304s).
	AnswerP50          float64  `json:"answer_p50_ms"`
	AnswerP99          float64  `json:"answer_p99_ms"`
	NotModifiedP99     float64  `json:"answer_if_none_match_p99_ms"`
	AnswerBytes        float64  `json:"answer_bytes"`
	SteadyCPU          float64  `json:"leader_cpu_steady_s_per_s"`
	ChangeToAllocP50   *float64 `json:"change_to_allocation_p50_s,omitempty"`
	ChangeToAllocMax   *float64 `json:"change_to_allocation_max_s,omitempty"`
	ChangeToAnswersP50 *float64 `json:"change_to_all_answers_p50_s,omitempty"`
	ChangeToAnswersMax *float64 `json:"change_to_all_answers_max_s,omitempty"`
	LeaderRSS          int64    `json:"leader_rss_bytes"`
	LeaderRSSPeak      int64    `json:"leader_rss_peak_bytes"`
	LeaderLiveHeap     int64    `json:"leader_live_heap_bytes"`
	LeaderCPU          float64  `json:"leader_cpu_s"`
	// With -leader-container-memory: the Go memory limit the leader set
	// from its cgroup, and the most memory the cgroup was charged.
	LeaderGoMemoryLimit *int64 `json:"leader_go_memory_limit_bytes,omitempty"`
	ContainerPeak       *int64 `json:"leader_container_peak_bytes,omitempty"`
	// With -member-leases: the group's Lease writes a second, and the
	// watch events a follower receives a second (mean, and the most).
	LeaseWrites    *float64 `json:"lease_writes_per_s,omitempty"`
	WatchEvents    *float64 `json:"watch_events_per_follower_per_s,omitempty"`
	WatchEventsMax *float64 `json:"watch_events_per_follower_max_per_s,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func seconds(d time.Duration) *float64 { s := d.Seconds(); return &s }

// drive runs the leader process and measures it, writing what it finds to w.
func drive(o options, w io.Writer) (result, error) {
	r := result{Targets: o.targets, Members: o.members, Jobs: o.jobs, Source: o.source}
	fmt.Fprintf(w, "loadtest: %d targets in %d job(s), groups of %d, ~10 labels a target; %d members (in-process list, no member Leases); source %s; strategy %s\n",
		o.targets, o.jobs, o.perGroup, o.members, o.source, o.strategy)
	fmt.Fprintf(w, "machine: %s, %d CPUs, %s; driver and leader share it\n", cpuModel(), runtime.NumCPU(), memTotal())
	if o.gomaxprocs > 0 {
		fmt.Fprintf(w, "leader GOMAXPROCS=%d\n", o.gomaxprocs)
	}
	for _, k := range []string{"GOGC", "GOMEMLIMIT"} {
		if v := os.Getenv(k); v != "" {
			fmt.Fprintf(w, "%s=%s\n", k, v)
		}
	}
	var in *container
	if o.containerMemory != "" {
		limit, err := resource.ParseQuantity(o.containerMemory)
		if err != nil {
			return r, fmt.Errorf("-leader-container-memory=%s: %w", o.containerMemory, err)
		}
		if limit.Value() <= 0 {
			return r, fmt.Errorf("-leader-container-memory=%s: want a positive quantity such as 1536Mi", o.containerMemory)
		}
		if in, err = newContainer(limit.Value()); err != nil {
			return r, err
		}
		defer func() { // after the leader process has ended, below
			if err := in.remove(); err != nil {
				log.Printf("the leader's memory cgroup is left: %v", err)
			}
		}()
		fmt.Fprintf(w, "leader in a memory cgroup limited to %s (%s)\n", o.containerMemory, in.dir)
	}
	began := time.Now()
	c, err := start(o, in)
	if err != nil {
		return r, err
	}
	defer func() {
		_ = c.stdin.Close()
		_ = c.cmd.Wait()
	}()
	if limit := <-c.memoryLimit; limit != math.MaxInt64 {
		r.LeaderGoMemoryLimit = &limit
		fmt.Fprintf(w, "leader Go memory limit: %s\n", mib(limit))
	}
	// The first allocation with every target (file_sd delivers its files
	// over several updates).
	want := o.jobs * max(o.targets/o.perGroup/o.jobs, 1) * o.perGroup
	var first event
	for first = range c.published {
		if !first.pending && first.n >= want {
			break
		}
	}
	if first.pending || first.n < want {
		return r, c.stopped()
	}
	u := c.usage()
	r.FirstAllocation = first.at.Sub(began).Seconds()
	select {
	case at := <-c.delivered:
		r.FirstAllocationAfterDelivery = seconds(first.at.Sub(at))
		fmt.Fprintf(w, "discovery had handed over every group %.2fs after the leader process started\n", at.Sub(began).Seconds())
	default: // file_sd: no moment when everything was handed over
	}
	fmt.Fprintf(w, "first allocation: %d targets, %.2fs after the leader process started; leader RSS %s\n", first.n, first.at.Sub(began).Seconds(), mib(u.rss))

	p := newPoller(c.addr, o.members, o.jobs)
	p.reset()
	// Every member asks once: every answer is encoded.
	var wg sync.WaitGroup
	t0 := time.Now()
	for m := range o.members {
		wg.Go(func() {
			for j := range o.jobs {
				if _, _, err := p.get(m, j, false); err != nil {
					log.Printf("first poll: %v", err)
				}
			}
		})
	}
	wg.Wait()
	u = c.usage()
	fmt.Fprintf(w, "first answers: %d in %.2fs (each encoded on its first request), %.0f bytes an answer; leader RSS %s\n",
		p.polls, time.Since(t0).Seconds(), float64(p.bytes)/float64(max(p.polls, 1)), mib(u.rss))

	for _, conditional := range []bool{false, true} {
		name := "stock client (no If-None-Match)"
		if conditional {
			name = "with If-None-Match"
		}
		p.reset()
		before := c.usage()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { p.run(o.poll, conditional, stop); close(done) }()
		time.Sleep(o.steady)
		close(stop)
		<-done
		after := c.usage()
		p.mu.Lock()
		fmt.Fprintf(w, "steady state, %s, every member polls every job every %s for %s: %d polls %v, answer p50 %s p99 %s, %.0f bytes a poll, leader CPU %.3f s/s, RSS %s\n",
			name, o.poll, o.steady, p.polls, p.status, percentile(p.latencies, 0.5).Round(10*time.Microsecond), percentile(p.latencies, 0.99).Round(10*time.Microsecond),
			float64(p.bytes)/float64(max(p.polls, 1)), (after.cpu-before.cpu).Seconds()/o.steady.Seconds(), mib(after.rss))
		if !conditional {
			r.AnswerP50, r.AnswerP99 = ms(percentile(p.latencies, 0.5)), ms(percentile(p.latencies, 0.99))
			r.AnswerBytes = float64(p.bytes) / float64(max(p.polls, 1))
			r.SteadyCPU = (after.cpu - before.cpu).Seconds() / o.steady.Seconds()
		} else {
			r.NotModifiedP99 = ms(percentile(p.latencies, 0.99))
		}
		p.mu.Unlock()
	}

	// Changes: the discovery mechanism sends them; the leader publishes; then
	// every member asks (conditionally), as their next polls would.
	var toAlloc, toAnswers []time.Duration
	for i := range o.changes {
		time.Sleep(6 * time.Second) // changes apart, as in every run measured
		if err := c.send(fmt.Sprintf("change %g", o.fraction)); err != nil {
			return r, err
		}
		ch, ok := <-c.changed
		if !ok {
			return r, c.stopped()
		}
		var pub event
		for pub = range c.published {
			if pub.at.After(ch.at) {
				break
			}
		}
		if !pub.at.After(ch.at) {
			return r, c.stopped()
		}
		p.reset()
		for m := range o.members {
			wg.Go(func() {
				for j := range o.jobs {
					if _, _, err := p.get(m, j, true); err != nil {
						log.Printf("poll after change: %v", err)
					}
				}
			})
		}
		wg.Wait()
		answered := time.Now()
		toAlloc = append(toAlloc, pub.at.Sub(ch.at))
		toAnswers = append(toAnswers, answered.Sub(ch.at))
		p.mu.Lock()
		fmt.Fprintf(w, "change %d: %d targets restarted; allocation after %s (%d targets moved between members); every member's answer after %s (%v)\n",
			i+1, ch.n, pub.at.Sub(ch.at).Round(time.Millisecond), pub.moved, answered.Sub(ch.at).Round(time.Millisecond), p.status)
		p.mu.Unlock()
	}
	u = c.usage()
	if len(toAlloc) > 0 {
		r.ChangeToAllocP50, r.ChangeToAllocMax = seconds(percentile(toAlloc, 0.5)), seconds(slices.Max(toAlloc))
		r.ChangeToAnswersP50, r.ChangeToAnswersMax = seconds(percentile(toAnswers, 0.5)), seconds(slices.Max(toAnswers))
		fmt.Fprintf(w, "changes of %g %%: discovery to allocation median %s max %s; to every member's answer median %s max %s\n",
			100*o.fraction, percentile(toAlloc, 0.5).Round(time.Millisecond), slices.Max(toAlloc).Round(time.Millisecond),
			percentile(toAnswers, 0.5).Round(time.Millisecond), slices.Max(toAnswers).Round(time.Millisecond))
	}
	r.LeaderRSS, r.LeaderRSSPeak, r.LeaderCPU = u.rss, u.hwm, u.cpu.Seconds()
	fmt.Fprintf(w, "leader RSS %s, peak %s, CPU %.1f s in all\n", mib(u.rss), mib(u.hwm), u.cpu.Seconds())
	if in != nil {
		if peak, err := in.peak(); err != nil {
			log.Printf("the leader's memory cgroup's peak is not known: %v", err)
		} else {
			r.ContainerPeak = &peak
			fmt.Fprintf(w, "leader's memory cgroup: peak %s\n", mib(peak))
		}
	}
	if err := c.send("heap"); err != nil {
		return r, err
	}
	var ok bool
	if r.LeaderLiveHeap, ok = <-c.heap; !ok {
		return r, c.stopped()
	}
	fmt.Fprintf(w, "leader live heap after a collection: %s\n", mib(r.LeaderLiveHeap))
	if o.heapProfile != "" {
		if err := c.send("heapprofile " + o.heapProfile); err != nil {
			return r, err
		}
	}
	return r, nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	return "unknown RAM"
}
