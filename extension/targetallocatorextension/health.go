package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// health turns the results of the Kubernetes calls, and of the start of the
// leader's term, into component status:
// StatusOK while every operation's last call succeeded, RecoverableError
// (with one error log line) when one starts failing, and StatusOK again,
// logged once, when all recover.
type health struct {
	ext  *allocatorExtension
	host component.Host

	mu       sync.Mutex
	failed   map[string]error // by operation
	reported bool             // a status after Starting was reported
	lastMsg  string           // the reported error, "" for StatusOK
}

func newHealth(ext *allocatorExtension, host component.Host) *health {
	h := &health{ext: ext, host: host, failed: map[string]error{}}
	componentstatus.ReportStatus(host, componentstatus.NewEvent(componentstatus.StatusStarting))
	return h
}

// set records the result of a call of operation op.
func (h *health) set(op string, err error) {
	h.mu.Lock()
	prev, had := h.failed[op]
	if err == nil {
		delete(h.failed, op)
	} else {
		h.failed[op] = err
	}
	combined := h.combined()
	msg := ""
	if combined != nil {
		msg = combined.Error()
	}
	changed := !h.reported || msg != h.lastMsg
	wasDown := h.lastMsg != ""
	h.reported, h.lastMsg = true, msg
	h.mu.Unlock()
	if !changed {
		return
	}

	logger := h.ext.set.Logger
	switch {
	case err != nil && (!had || prev.Error() != err.Error()):
		fields := []zap.Field{zap.String("operation", op), zap.Error(err)}
		if apierrors.IsForbidden(err) {
			fields = append(fields, zap.String("hint", fmt.Sprintf(
				"grant get, list, watch, create, update and delete on leases.coordination.k8s.io in namespace %s", h.ext.s.namespace)))
		}
		failed := "Kubernetes call failed; retrying"
		if op == opTerm {
			failed = "Cannot start allocating targets while leading; retrying"
		}
		logger.Error(failed, fields...)
	case combined == nil && wasDown:
		logger.Info("Kubernetes calls and the leader's term succeed again", zap.String("operation", op))
	}
	if combined != nil {
		componentstatus.ReportStatus(h.host, componentstatus.NewRecoverableErrorEvent(combined))
	} else {
		componentstatus.ReportStatus(h.host, componentstatus.NewEvent(componentstatus.StatusOK))
	}
}

func (h *health) combined() error {
	ops := make([]string, 0, len(h.failed))
	for op := range h.failed {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	errs := make([]error, 0, len(ops))
	for _, op := range ops {
		errs = append(errs, fmt.Errorf("%s: %w", op, h.failed[op]))
	}
	return errors.Join(errs...)
}

func (h *health) fatal(err error) {
	componentstatus.ReportStatus(h.host, componentstatus.NewFatalErrorEvent(err))
}
