package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the leader process too: drive starts
// os.Args[0] with -role=leader, as bin/loadtest starts itself.
func TestMain(m *testing.M) {
	if os.Getenv("LOADTEST_TEST_LEADER") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestJSON runs a small load test as `bin/loadtest -json` does and reads its
// last line as a user's script would: one JSON object with every figure.
func TestJSON(t *testing.T) {
	out, fields := runJSON(t)
	positive := []string{
		"first_allocation_s", "first_allocation_after_discovery_s", "answer_p50_ms", "answer_p99_ms",
		"answer_if_none_match_p99_ms", "answer_bytes", "change_to_allocation_p50_s", "change_to_allocation_max_s",
		"change_to_all_answers_p50_s", "change_to_all_answers_max_s", "leader_rss_bytes", "leader_rss_peak_bytes",
		"leader_live_heap_bytes", "leader_cpu_s",
	}
	for _, k := range positive {
		v, ok := fields[k].(float64)
		if !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, fields[k])
		}
	}
	if fields["targets"] != 200.0 || fields["members"] != 3.0 || fields["jobs"] != 1.0 || fields["source"] != "inprocess" {
		t.Errorf("the run's shape = %v %v %v %v, want 200 targets, 3 members, 1 job, inprocess",
			fields["targets"], fields["members"], fields["jobs"], fields["source"])
	}
	// The figures agree with each other and with the human report above.
	if p50, p99 := fields["answer_p50_ms"].(float64), fields["answer_p99_ms"].(float64); p50 > p99 {
		t.Errorf("answer p50 %v ms > p99 %v ms", p50, p99)
	}
	if rss, peak := fields["leader_rss_bytes"].(float64), fields["leader_rss_peak_bytes"].(float64); rss > peak {
		t.Errorf("leader RSS %v > its peak %v", rss, peak)
	}
	if after, first := fields["first_allocation_after_discovery_s"].(float64), fields["first_allocation_s"].(float64); after > first {
		t.Errorf("first allocation %v s after discovery delivered, more than %v s after start", after, first)
	}
	if p50, worst := fields["change_to_all_answers_p50_s"].(float64), fields["change_to_all_answers_max_s"].(float64); p50 > worst || worst > float64(time.Minute/time.Second) {
		t.Errorf("change to every answer p50 %v s, max %v s", p50, worst)
	}
	if !strings.Contains(string(out), "first allocation: 200 targets") {
		t.Errorf("the human report lacks the first allocation of 200 targets:\n%s", out)
	}
}

// runJSON runs a small load test with args besides its own and returns its
// output and its last line, one JSON object, as a user's script reads it.
func runJSON(t *testing.T, args ...string) ([]byte, map[string]any) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"-targets=200", "-members=3", "-steady=1s", "-poll=200ms", "-changes=1", "-change=0.05", "-json"}, args...)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "GOMEMLIMIT=") // the leader's limit is its container's, if any
	}), "LOADTEST_TEST_LEADER=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("loadtest: %v\n%s%s", err, out, stderr.String())
	}
	var lines []string
	for s := bufio.NewScanner(bytes.NewReader(out)); s.Scan(); {
		lines = append(lines, s.Text())
	}
	if len(lines) < 2 {
		t.Fatalf("want the report and a JSON line, got:\n%s", out)
	}
	last := lines[len(lines)-1]
	var fields map[string]any
	if err := json.Unmarshal([]byte(last), &fields); err != nil {
		t.Fatalf("last line is not one JSON object: %v\n%s", err, last)
	}
	for _, line := range lines[:len(lines)-1] {
		if strings.HasPrefix(line, "{") {
			t.Errorf("a JSON line before the last: %s", line)
		}
	}
	return out, fields
}

// TestLeaderInAContainer runs the leader in a memory cgroup of 256 MiB, as a
// collector's container with resources.limits.memory: 256Mi: the leader
// sets its Go memory limit to 90 % of it by itself, as the extension does,
// and stays within it.
func TestLeaderInAContainer(t *testing.T) {
	const limit = 256 << 20
	canContain(t)
	_, fields := runJSON(t, "-leader-container-memory=256Mi")
	if got, want := fields["leader_go_memory_limit_bytes"], float64(241591910); got != want {
		t.Errorf("leader_go_memory_limit_bytes = %v, want %v (90 %% of 256 MiB, rounded down)", got, want)
	}
	if peak, ok := fields["leader_container_peak_bytes"].(float64); !ok || peak <= 0 || peak > limit {
		t.Errorf("leader_container_peak_bytes = %v, want within (0, %d]", fields["leader_container_peak_bytes"], limit)
	}
}

// A leader process its container's limit stops, once it has started
// (300k targets do not fit in 64 MiB), ends the run with an error that
// says so, rather than a harness waiting for it.
func TestLeaderStoppedByItsContainer(t *testing.T) {
	canContain(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-targets=300000", "-members=3", "-steady=1s", "-changes=1", "-json", "-leader-container-memory=64Mi")
	cmd.Env = append(os.Environ(), "LOADTEST_TEST_LEADER=1")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		_ = containerOf(cmd.Process.Pid).remove() // the driver, stopped, could not
		t.Fatalf("the run did not end within a minute:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "the leader process stopped: signal: killed") {
		t.Fatalf("want the run to fail with the leader process killed once started; got %v:\n%s", err, out)
	}
}

// canContain skips a test where this process cannot make a memory cgroup
// (not root, the cgroup file system read-only, cgroup v2 without the memory
// controller delegated).
func canContain(t *testing.T) {
	t.Helper()
	in, err := newContainer(64 << 20)
	if err != nil {
		t.Skipf("no memory cgroup here: %v", err)
	}
	if err := in.remove(); err != nil {
		t.Fatal(err)
	}
}
