// Package engine defines the seam between banger's VM lifecycle code and the
// virtual machine monitors (VMMs) that run guests.
//
// A Driver turns a Spec into a running VMM process (an Instance) and can
// re-attach to one that an earlier daemon process started. VMM processes are
// always detached from the daemon that launched them, so restarting the daemon
// never stops a VM; Instance values are therefore cheap handles that can be
// dropped (Close) and re-created (Driver.Adopt) at will.
//
// The QEMU driver lives in the qemu subpackage; this package holds only the
// driver-independent types and helpers (Spec validation, accelerator
// resolution), so that callers can be tested against a fake Driver.
package engine

import (
	"context"
	"errors"
	"syscall"
)

// Accelerator names accepted in Spec.Accel and by ResolveAccel.
const (
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
	AccelAuto = "auto" // only accepted by ResolveAccel
)

// ErrNotRunning reports that the VMM a Spec describes is not running: its
// pidfile is missing or stale, or the pid now belongs to another process.
// Driver.Adopt wraps it; test with errors.Is.
var ErrNotRunning = errors.New("vmm is not running")

// Instance is a handle on a running VMM process.
//
// The VMM process is detached from the daemon: dropping or closing the handle
// never stops the VM. All methods are safe for concurrent use.
type Instance interface {
	// PID is the VMM's process id.
	PID() int
	// Done is closed once the VMM process has exited, whatever the cause
	// (guest poweroff or reboot, Quit, Kill, crash). It is not closed by
	// Close: after Close it only reports an exit observed before Close.
	Done() <-chan struct{}
	// Kill sends sig to the VMM process and returns without waiting; wait
	// on Done. Killing a VMM that already exited is a no-op returning nil.
	// SIGKILL is the only signal guaranteed to stop a wedged VMM; the guest
	// gets no chance to flush anything.
	Kill(sig syscall.Signal) error
	// Quit asks the VMM to exit immediately (QMP "quit" for QEMU: like
	// pulling the power cord, though the VMM still flushes its own disk
	// caches) and waits until the process is gone or ctx ends. A clean
	// guest shutdown goes through the guest agent instead.
	Quit(ctx context.Context) error
	// Close drops the handle's control connection and exit watcher. The
	// VM keeps running and can be re-attached with Driver.Adopt. Close is
	// idempotent.
	Close() error
}

// Driver starts and re-attaches VMM processes.
type Driver interface {
	// Name identifies the driver, e.g. "qemu".
	Name() string
	// Start launches a VMM for spec and returns once the VMM process is
	// running and its control channel answers. On any error nothing is left
	// running and no pidfile is left behind.
	Start(ctx context.Context, spec Spec) (Instance, error)
	// Adopt re-attaches to a VMM that was started for spec earlier,
	// possibly by another daemon process, using spec.PIDFile and
	// spec.QMPSocket. It fails with an error wrapping ErrNotRunning if that
	// VMM is gone, or if the recorded pid now belongs to something else.
	Adopt(ctx context.Context, spec Spec) (Instance, error)
}
