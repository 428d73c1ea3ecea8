package memorylimit

import (
	"errors"
	"testing"
)

func TestDecideMemoryLimit(t *testing.T) {
	errNoLimit := errors.New("memory is not limited")
	unreadable := errors.New("open /proc/self/mountinfo: permission denied")
	const gib = 1 << 30
	for _, tc := range []struct {
		name      string
		userSet   bool
		container uint64
		err       error
		want      decision
	}{
		{"the user's GOMEMLIMIT wins over the container's", true, 4 * gib, nil, decision{From: "GOMEMLIMIT"}},
		{"the user's GOMEMLIMIT, no cgroup read", true, 0, nil, decision{From: "GOMEMLIMIT"}},
		{"90 % of a container's 2 GiB", false, 2 * gib, nil, decision{Limit: 1932735283, From: "cgroup", Container: 2 * gib}},
		{"90 % of a container's 1.5 GiB", false, 3 * gib / 2, nil, decision{Limit: 1449551462, From: "cgroup", Container: 3 * gib / 2}},
		{"a cgroup without a limit", false, 0, errNoLimit, decision{From: "no cgroup limit"}},
		{"a wrapped no-limit error", false, 0, errors.Join(errors.New("cgroup v2"), errNoLimit), decision{From: "no cgroup limit"}},
		{"cgroup v1's 'unlimited', a page-rounded 2^63", false, 1<<63 - 4096, nil, decision{From: "no cgroup limit"}},
		{"an unreadable cgroup leaves Go's default", false, 0, unreadable, decision{From: "cgroup unreadable", Err: unreadable}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := decide(tc.userSet, tc.container, tc.err, errNoLimit)
			if got != tc.want {
				t.Errorf("decide(%v, %d, %v) = %+v, want %+v", tc.userSet, tc.container, tc.err, got, tc.want)
			}
		})
	}
}
