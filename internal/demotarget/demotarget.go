// Package demotarget is a real scrape target for the demo and the
// end-to-end tests: an HTTP server that exposes a TargetAllocator_total
// counter and records when it is scraped, so a test
// can measure gaps and double scrapes from the target's side.
package demotarget

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Target is one running demo target.
type Target struct {
	Addr string
	srv  *http.Server
	// interval, for a numbered target, is the scrape interval it numbers.
	interval time.Duration

	mu      sync.Mutex
	scrapes []time.Time
	// origin is where the numbered target's first interval begins.
	origin time.Time
}

// Start serves a target at addr (host:port; port 0 picks one).
func Start(addr string) (*Target, error) { return start(addr, 0) }

// StartNumbered serves a target whose only metric, the gauge scrape_number,
// is the number of the scrape: of the interval the scrape falls in, counted
// from the first scrape. Scraped once an interval, it answers 1, 2, 3...;
// an interval nobody scraped is a missing number, and two scrapers in one
// interval get the same number. The first scrape falls in the middle of its
// interval: Prometheus scrapes a target at the same phase of every interval
// (and, on one host with one configuration, every collector at the same
// phase), so a scrape that comes a little early or late keeps its number.
func StartNumbered(addr string, interval time.Duration) (*Target, error) {
	return start(addr, interval)
}

func start(addr string, interval time.Duration) (*Target, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo target %s: %w", addr, err)
	}
	t := &Target{Addr: ln.Addr().String(), interval: interval}
	t.srv = &http.Server{Handler: t, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = t.srv.Serve(ln) }()
	return t, nil
}

// ServeHTTP answers a scrape.
func (t *Target) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	t.mu.Lock()
	t.scrapes = append(t.scrapes, now)
	if t.origin.IsZero() {
		t.origin = now.Add(-t.interval / 2)
	}
	number := 0
	if t.interval > 0 {
		number = int(now.Sub(t.origin)/t.interval) + 1
	}
	t.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	if t.interval > 0 {
		_, _ = fmt.Fprintf(w, "# HELP scrape_number the number of the scrape interval this scrape falls in\n# TYPE scrape_number gauge\nscrape_number %d\n", number)
		return
	}
	_, _ = fmt.Fprint(w, "# HELP TargetAllocator_total a sample counter metric\n# TYPE TargetAllocator_total counter\nTargetAllocator_total 1\n")
}

// Scrapes returns when the target was scraped, in order.
func (t *Target) Scrapes() []time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]time.Time(nil), t.scrapes...)
}

// MaxGap returns the longest time in [from, to] without a scrape.
func (t *Target) MaxGap(from, to time.Time) time.Duration {
	last, gap := from, time.Duration(0)
	for _, s := range t.Scrapes() {
		if s.Before(from) || s.After(to) {
			continue
		}
		gap = max(gap, s.Sub(last))
		last = s
	}
	return max(gap, to.Sub(last))
}

// MaxRate returns the most scrapes seen in any window of length w within
// [from, to]: with one scraper at interval i it is about w/i, with two twice that.
func (t *Target) MaxRate(from, to time.Time, w time.Duration) int {
	var in []time.Time
	for _, s := range t.Scrapes() {
		if !s.Before(from) && !s.After(to) {
			in = append(in, s)
		}
	}
	best, j := 0, 0
	for i := range in {
		for in[i].Sub(in[j]) > w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// DoubleScraped returns the longest stretch within [from, to] during which
// the target was scraped by more than one scraper at the given interval. One
// scraper's scrapes are about an interval apart; two scrapers' interleave, so
// some consecutive scrapes are at most half an interval apart. A stretch is a
// run of such close pairs, each within 1.5 intervals of the last.
func (t *Target) DoubleScraped(from, to time.Time, interval time.Duration) time.Duration {
	var in []time.Time
	for _, s := range t.Scrapes() {
		if !s.Before(from) && !s.After(to) {
			in = append(in, s)
		}
	}
	var start, last time.Time
	longest := time.Duration(0)
	for i := 1; i < len(in); i++ {
		if in[i].Sub(in[i-1]) > interval/2 {
			continue
		}
		if start.IsZero() || in[i-1].Sub(last) > 3*interval/2 {
			start = in[i-1]
		}
		last = in[i]
		longest = max(longest, last.Sub(start))
	}
	return longest
}

// Close stops the target.
func (t *Target) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return t.srv.Shutdown(ctx)
}

// DemoAddrs are the demo's six targets, those of examples/local/replica.yaml.
var DemoAddrs = []string{
	"127.0.0.1:9090", "127.0.0.1:9091", "127.0.0.1:9092",
	"127.0.0.2:9090", "127.0.0.2:9091", "127.0.0.2:9092",
}

// StartDemo starts the demo's six targets.
func StartDemo() ([]*Target, error) {
	var targets []*Target
	for _, addr := range DemoAddrs {
		t, err := Start(addr)
		if err != nil {
			for _, started := range targets {
				_ = started.Close()
			}
			return nil, err
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// StartSeries serves a target that exposes n series of the gauge
// demo_series, labelled i="0" to i="<n-1>": a target of a given size, for
// the series-weighted strategy's tests.
func StartSeries(addr string, n int) (*Target, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo target %s: %w", addr, err)
	}
	t := &Target{Addr: ln.Addr().String()}
	var body strings.Builder
	body.WriteString("# HELP demo_series one of the target's series\n# TYPE demo_series gauge\n")
	for i := range n {
		fmt.Fprintf(&body, "demo_series{i=\"%d\"} 1\n", i)
	}
	page := body.String()
	t.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.mu.Lock()
		t.scrapes = append(t.scrapes, time.Now())
		t.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = io.WriteString(w, page)
	})}
	go func() { _ = t.srv.Serve(ln) }()
	return t, nil
}
