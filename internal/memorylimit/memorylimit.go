// Package memorylimit sets the Go memory limit of a process that may lead
// from its container's memory limit: a leader holds every target, and Go's
// default lets the heap grow to twice what is live, past the container's
// limit. The target_allocator extension sets it at start, and so does
// bin/loadtest's leader process.
package memorylimit

import (
	"errors"
	"os"
	"runtime/debug"
	"sync"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"go.uber.org/zap"
)

// ratio is the part of the container's memory limit that the Go
// memory limit is set to: the rest is left to what the Go runtime does not
// count (stacks of threads in cgo, the binary, the page cache the cgroup
// charges) so that the collector collects garbage before the kernel kills it.
const ratio = 0.9

// decision is what the collector's Go memory limit becomes at start.
type decision struct {
	// Limit is the limit to set, in bytes; 0 leaves the limit as it is.
	Limit int64
	// From says where the limit comes from, or why it is left alone: one of
	// "GOMEMLIMIT", "cgroup", "no cgroup limit", "cgroup unreadable".
	From string
	// Container is the container's memory limit in bytes, when one was read.
	Container uint64
	// Err is why the container's limit could not be read, for "cgroup unreadable".
	Err error
}

// decide decides the Go memory limit from what the process's
// environment and cgroup say: a GOMEMLIMIT the user set wins (the Go runtime
// has applied it already), otherwise ratio of the cgroup's memory
// limit, otherwise none (Go's default). errNoLimit is the error the cgroup
// reader returns for a cgroup without a memory limit.
func decide(userSet bool, container uint64, readErr, errNoLimit error) decision {
	switch {
	case userSet:
		return decision{From: "GOMEMLIMIT"}
	case errors.Is(readErr, errNoLimit):
		return decision{From: "no cgroup limit"}
	case readErr != nil:
		return decision{From: "cgroup unreadable", Err: readErr}
	case container == 0 || container > 1<<62: // nothing a process could hold: no limit
		return decision{From: "no cgroup limit"}
	}
	return decision{Limit: int64(float64(container) * ratio), From: "cgroup", Container: container}
}

var once sync.Once

// Set sets the process's Go memory limit once, as decide
// decides from the environment and the cgroup (read by automemlimit, cgroup
// v1 and v2), and logs what it did.
func Set(logger *zap.Logger) {
	once.Do(func() {
		v, userSet := os.LookupEnv("GOMEMLIMIT")
		userSet = userSet && v != "" // the Go runtime takes an empty one for none
		var container uint64
		var err error
		if !userSet {
			container, err = memlimit.FromCgroup()
		}
		d := decide(userSet, container, err, memlimit.ErrNoLimit)
		if d.Limit > 0 {
			debug.SetMemoryLimit(d.Limit)
		}
		logDecision(logger, d, debug.SetMemoryLimit(-1))
	})
}

func logDecision(logger *zap.Logger, d decision, current int64) {
	fields := []zap.Field{zap.String("from", d.From), zap.Int64("go_memory_limit_bytes", current)}
	switch d.From {
	case "cgroup":
		logger.Info("Go memory limit set from the container's memory limit",
			append(fields, zap.Uint64("container_limit_bytes", d.Container), zap.Float64("ratio", ratio))...)
	case "GOMEMLIMIT":
		logger.Info("Go memory limit set by GOMEMLIMIT", fields...)
	case "cgroup unreadable":
		logger.Info("Go memory limit left at Go's default: the container's memory limit could not be read",
			append(fields, zap.Error(d.Err))...)
	default:
		logger.Info("Go memory limit left at Go's default: the container sets no memory limit", fields...)
	}
}
