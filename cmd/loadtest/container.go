package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// container is a memory cgroup of the leader process's own, limited as a
// container's resources.limits.memory limits a collector: the leader reads
// the limit from it at start (internal/memorylimit, as the extension does)
// and the kernel stops it if it uses more. cgroup v2 (unified) or v1's
// memory controller, as the machine mounts them; it takes root.
type container struct {
	dir string
	v2  bool
}

const cgroupRoot = "/sys/fs/cgroup"

func newContainer(limit int64) (*container, error) {
	c := containerOf(os.Getpid())
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("a memory cgroup for the leader (needs root and a mounted memory controller): %w", err)
	}
	// The limit, and no swap beyond it (as a Kubernetes node runs), where
	// the cgroup accounts for swap.
	type setting struct {
		file, value string
		optional    bool
	}
	n := strconv.FormatInt(limit, 10)
	settings := []setting{{"memory.limit_in_bytes", n, false}, {"memory.memsw.limit_in_bytes", n, true}}
	if c.v2 {
		settings = []setting{{"memory.max", n, false}, {"memory.swap.max", "0", true}}
	}
	for _, st := range settings {
		path := filepath.Join(c.dir, st.file)
		if _, err := os.Stat(path); err != nil {
			if st.optional {
				continue
			}
			return nil, errors.Join(fmt.Errorf("no %s in %s: the memory controller is not enabled there (cgroup v2: the parent's cgroup.subtree_control)", st.file, c.dir), c.remove())
		}
		if err := os.WriteFile(path, []byte(st.value), 0o644); err != nil {
			return nil, errors.Join(fmt.Errorf("set the leader's memory limit (%s): %w", st.file, err), c.remove())
		}
	}
	return c, nil
}

// containerOf is the cgroup of the leader of the driver process pid.
func containerOf(pid int) *container {
	name := fmt.Sprintf("embedded-ta-loadtest-%d", pid)
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return &container{dir: filepath.Join(cgroupRoot, name), v2: true}
	}
	return &container{dir: filepath.Join(cgroupRoot, "memory", name)}
}

// wrap returns the command that runs name with args inside the cgroup from
// its first instruction: a shell joins it, then becomes the command.
func (c *container) wrap(name string, args []string) (string, []string) {
	return "/bin/sh", append([]string{"-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(c.dir, "cgroup.procs"), name}, args...)
}

// peak is the most memory the cgroup was charged (v1 counts the page
// cache its processes cause besides what they map).
func (c *container) peak() (int64, error) {
	file := "memory.max_usage_in_bytes"
	if c.v2 {
		file = "memory.peak"
	}
	b, err := os.ReadFile(filepath.Join(c.dir, file))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// remove removes the cgroup once no process is left in it.
func (c *container) remove() error { return os.Remove(c.dir) }
