// Package engine defines the seam between banger's VM lifecycle code and the
// virtual machine monitors (VMMs) that run guests.
//
// A Driver turns a Spec into a running VMM process (an Instance) and can
// re-attach to one that an earlier daemon process started. VMM processes are
// always detached from the daemon that launched them, so restarting the daemon
// never stops a VM; Instance values are therefore cheap handles that can be
// dropped (Close) and re-created (Driver.Adopt) at will.
//
// Each engine is one package implementing Driver (qemu, firecracker); the
// code both share for tracking VMM processes is in vmmproc. This package
// holds only the driver-independent types and helpers (the engine names,
// the Registry, Spec validation, accelerator resolution) and links no
// driver, so that the CLI can use it and callers can be tested against a
// fake Driver.
package engine

import (
	"context"
	"errors"
	"net"
	"os"
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

// Dirs are the two directories banger gives every VM; a driver decides
// which files of the VM live where (see Driver.Layout). File names a driver
// chose once must never change: a daemon upgraded in place finds existing
// VMs' disks and running VMMs' sockets by them.
type Dirs struct {
	// State holds what outlives a boot: disks and logs. Removed when the
	// VM is deleted.
	State string
	// Run holds what lives while the VMM runs: control socket, pidfile,
	// agent socket. Removed whenever the VM stops.
	Run string
}

// Traits are what an engine needs from the host and what it offers, as
// data: the lifecycle code checks them instead of branching on names.
type Traits struct {
	// NeedsKVM: the engine cannot run guests under TCG.
	NeedsKVM bool
	// UserNetworking: the engine has user-mode (slirp) NICs.
	UserNetworking bool
}

// Driver is one engine: everything that differs between VMMs. A driver
// lives in a package of its own (qemu, firecracker); optional capabilities
// are the small interfaces below, found once by NewRegistry.
type Driver interface {
	// Name identifies the engine; one of Names() for the built-in ones.
	Name() string
	// Traits describes the engine's requirements and features.
	Traits() Traits
	// Layout completes spec, whose engine-independent fields (resources,
	// kernel, work disk, serial log, VMM log, accelerator, NICs) are set,
	// with the engine's files in dirs: the root disk, the control socket,
	// the pidfile and the guest agent's channel (and whatever the kernel
	// command line needs to find it). It touches nothing on disk and
	// always returns the same paths for the same dirs.
	Layout(spec Spec, dirs Dirs) Spec
	// PrepareRootDisk makes the VM's root disk, Layout(spec, dirs).RootDisk,
	// from image (a raw ext4 file that must not change) and returns how it
	// was made (recorded as the VM's disk clone method).
	PrepareRootDisk(ctx context.Context, image string, dirs Dirs) (method string, err error)
	// DialAgent connects to the guest agent of the VM spec runs (spec as
	// returned by Layout): one stream to speak the agent protocol on. It
	// does not wait for the guest beyond ctx.
	DialAgent(ctx context.Context, spec Spec) (net.Conn, error)
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

// Optional capabilities. A driver implements those it has; NewRegistry
// looks them up once and the lifecycle code uses Engine's fields, never
// type assertions of its own.

// Cleaner is a driver that keeps per-VM state outside the VM's directories
// (Firecracker's jail), removed when the VM is deleted.
type Cleaner interface {
	// Cleanup kills a VMM still serving spec and removes what the driver
	// keeps for it outside dirs. It is idempotent.
	Cleanup(spec Spec) error
}

// CtrlAltDeler is a driver that can press Ctrl+Alt+Del on a guest's
// keyboard: a graceful-stop fallback when the guest agent does not answer.
type CtrlAltDeler interface {
	// SendCtrlAltDel returns once the keys are injected; wait on
	// inst.Done for the exit.
	SendCtrlAltDel(ctx context.Context, inst Instance) error
}

// Checker is a driver whose VMM may be missing on this host. Engines
// without it are assumed present (their absence shows at start).
type Checker interface {
	// Available reports, cheaply (no VMM is run), why the engine cannot be
	// used here; nil if it can.
	Available() error
}

// Pauser is a driver that can stop and continue a guest's vCPUs while its
// VMM, memory and devices stay as they are.
type Pauser interface {
	// Pause stops the vCPUs of inst; pausing a paused VM is a no-op.
	Pause(ctx context.Context, inst Instance) error
	// Resume continues a paused inst; resuming a running VM is a no-op.
	Resume(ctx context.Context, inst Instance) error
	// Paused reports whether inst's vCPUs are stopped (as the VMM says,
	// whatever the daemon recorded).
	Paused(ctx context.Context, inst Instance) (bool, error)
}

// Snapshotter is a driver that can save a paused VM's memory and device
// state (snapshots; the disks are the lifecycle code's job).
type Snapshotter interface {
	// SaveState writes the state of inst, which must be paused, to f, a
	// file the caller opened for writing (the VMM gets the open file, so
	// it never needs rights on the path). It returns once the state is
	// complete, or fails with the VMM's own reason. A VMM may keep its
	// disks inactive until the next Resume.
	SaveState(ctx context.Context, inst Instance, f *os.File) error
	// VMMVersion is the version of the VMM running inst: state is only
	// restored by the same version.
	VMMVersion(ctx context.Context, inst Instance) (string, error)
}
