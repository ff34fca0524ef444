// Package qemu is banger's engine.Driver for QEMU's microvm machine, under
// KVM or TCG (software emulation).
//
// Every VMM runs in the foreground of its own session (setsid), under QEMU's
// seccomp sandbox (no fork or exec, no obsolete system calls, no scheduler
// or resource changes) and, when the daemon runs as root, as a uid and gid
// of its own (-runas, see VMMUser) once its files, sockets and tap are open.
// The daemon reaps it while it lives; when the daemon exits it is reparented
// to init, so a daemon restart never stops a VM. Start and Adopt track a VMM
// the same way: through its pidfile, a pidfd (exit detection and signals that
// cannot hit a recycled pid) and a QMP connection on its control socket.
// Before a pid is trusted, /proc/PID/cmdline must show a QEMU serving the
// spec's QMP socket.
//
// The argv is built by the pure function BuildArgs; KVM usability is checked
// by ProbeKVM, and Version and SupportsMicrovm serve "doctor".
package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/engine"
	"banger/internal/engine/vmmproc"
	"banger/internal/hosttools"
)

// Timeouts the driver applies on top of the caller's context.
const (
	// startTimeout bounds QEMU's own initialisation (the -daemonize parent
	// exits when it is done).
	startTimeout = 60 * time.Second
	// qmpTimeout bounds the QMP handshake. QEMU serves one QMP client at a
	// time and never greets a second one, so a stuck handshake means
	// another client (e.g. an older daemon) still holds the socket.
	qmpTimeout = 10 * time.Second
	// killWait bounds waiting for a VMM to die after SIGKILL on cleanup.
	killWait = 5 * time.Second
)

// Driver is the QEMU engine.Driver. The zero value runs qemu-system-x86_64
// from PATH and hints the guest's TSC rate from the host (see ArgOptions).
type Driver struct {
	// Binary is the QEMU system emulator; "qemu-system-x86_64" (from
	// PATH) if empty. Its file name must contain "qemu": that is part of
	// how the driver recognises its VMM processes in /proc.
	Binary string
	// GuestTSCKHz overrides the TSC rate hinted to TCG guests; 0 reads it
	// from the host (HostTSCKHz) at every start; negative disables the
	// hint.
	GuestTSCKHz int
}

var _ engine.Driver = (*Driver)(nil)

// New returns a Driver running binary ("" for qemu-system-x86_64).
func New(binary string) *Driver { return &Driver{Binary: binary} }

// Name returns "qemu".
func (d *Driver) Name() string { return "qemu" }

// findBinary finds the QEMU binary bin ("" for qemu-system-x86_64) as
// every host tool is found: on PATH, then in the sbin directories.
func findBinary(bin string) (string, error) {
	if bin == "" {
		bin = defaultBinary
	}
	return hosttools.Path(bin)
}

func (d *Driver) binary() string {
	if d.Binary == "" {
		return defaultBinary
	}
	return d.Binary
}

// Start boots spec as a detached QEMU and returns once QEMU has finished
// initialising (its -daemonize parent exited with success), the pid in the
// pidfile is verified to be that QEMU, and QMP answers. The guest itself may
// still be booting.
//
// Start fails without launching anything if the spec is invalid (including
// socket paths over engine.MaxSocketPath bytes), an input file is missing,
// or a VMM for spec is already running. On any later failure, or when ctx
// ends, the VMM is killed and its pidfile and sockets are removed.
func (d *Driver) Start(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := d.start(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("start vm %q: %w", vmmproc.VMName(spec), err)
	}
	return inst, nil
}

func (d *Driver) start(ctx context.Context, spec engine.Spec) (*Instance, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := checkInputs(spec); err != nil {
		return nil, err
	}
	// A live QEMU on the same QMP socket, pidfile or not, would lose its
	// sockets to the new one.
	if pid, err := readPIDFile(spec.PIDFile); err == nil && isVMMFor(procCmdline(pid), spec.QMPSocket) {
		return nil, fmt.Errorf("already running as pid %d", pid)
	}
	if pids := findVMMs(spec.QMPSocket); len(pids) > 0 {
		return nil, fmt.Errorf("already running as pid %d (its pidfile is missing)", pids[0])
	}
	if err := vmmproc.RemoveIfExists(spec.PIDFile); err != nil {
		return nil, fmt.Errorf("remove stale pidfile: %w", err)
	}
	opts := ArgOptions{Sandbox: true, GuestTSCKHz: d.GuestTSCKHz, DiskFDs: true}
	if os.Geteuid() == 0 {
		// A guest that escapes into QEMU must not own what root owns.
		opts.RunAs = VMMUser(spec.ID)
	}
	if opts.GuestTSCKHz == 0 && spec.Accel == engine.AccelTCG {
		opts.GuestTSCKHz, _ = HostTSCKHz()
	}
	args, err := BuildArgs(spec, opts)
	if err != nil {
		return nil, err
	}
	// No live VMM serves the QMP socket (checked above): a leftover file
	// would make the socket look ready before QEMU made its own.
	if err := vmmproc.RemoveIfExists(spec.QMPSocket); err != nil {
		return nil, fmt.Errorf("remove stale qmp socket: %w", err)
	}

	// QEMU runs in the foreground of its own session (-daemonize cannot be
	// combined with the seccomp sandbox, which forbids the fork and setsid
	// it needs); it is reparented to init when the daemon exits, and the
	// daemon reaps it meanwhile. Its stdout and stderr go to a file next to
	// the pidfile, so start-up errors can be reported and nothing QEMU
	// writes later depends on the daemon. That file is the VMM log when
	// there is one: -D opens it only with -d items or -daemonize, neither
	// of which banger uses.
	bin, err := findBinary(d.binary())
	if err != nil {
		return nil, fmt.Errorf("run qemu: %w", err)
	}
	errPath := spec.VMMLog
	if errPath == "" {
		errPath = filepath.Join(filepath.Dir(spec.PIDFile), stderrFile)
	}
	errf, err := os.OpenFile(errPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("qemu stderr file: %w", err)
	}
	disks, err := openDiskFDs(spec)
	if err != nil {
		errf.Close()
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = errf, errf
	cmd.ExtraFiles = disks
	cmd.Dir = "/"
	// Its own session: a signal to the daemon's process group (Ctrl-C in
	// a terminal) never reaches a VMM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	errf.Close()
	for _, f := range disks {
		f.Close() // QEMU has its own copies
	}
	if err != nil {
		return nil, fmt.Errorf("run qemu: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps the VMM whenever it exits

	fail := func(err error) (*Instance, error) {
		cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(killWait):
		}
		cleanup(spec)
		return nil, err
	}
	failed := func(werr error) error {
		msg := strings.TrimSpace(vmmproc.ReadBounded(errPath, 64<<10))
		if msg == "" && spec.VMMLog != "" {
			msg = strings.TrimSpace(vmmproc.ReadBounded(spec.VMMLog, 64<<10))
		}
		if msg == "" {
			msg = "no error message"
		}
		return fmt.Errorf("qemu failed (%v): %s", werr, vmmproc.LastLines(msg, 5))
	}
	// QEMU has made its QMP socket once it has parsed its options and
	// opened its files; attach's handshake then waits for its main loop.
	limit := time.NewTimer(startTimeout)
	defer limit.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(spec.QMPSocket); err == nil {
			break
		}
		select {
		case werr := <-exited:
			cleanup(spec)
			return nil, failed(werr)
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-limit.C:
			return fail(fmt.Errorf("qemu did not create its qmp socket within %s", startTimeout))
		case <-tick.C:
		}
	}
	// The socket file appears at bind(), a moment before QEMU listens on
	// it: a refused connection is retried.
	inst, err := attach(ctx, spec, cmd.Process.Pid)
	for err != nil && errors.Is(err, syscall.ECONNREFUSED) {
		select {
		case werr := <-exited:
			cleanup(spec)
			return nil, failed(werr)
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-limit.C:
			return fail(fmt.Errorf("qemu did not accept qmp connections within %s: %w", startTimeout, err))
		case <-tick.C:
		}
		inst, err = attach(ctx, spec, cmd.Process.Pid)
	}
	if err != nil {
		// A QEMU that made its socket and then gave up (e.g. on a bad
		// disk) hangs up the handshake: report its own message.
		select {
		case werr := <-exited:
			cleanup(spec)
			return nil, failed(werr)
		case <-time.After(2 * time.Second):
		}
		return fail(err)
	}
	return inst, nil
}

// openDiskFDs opens the disk descriptors a QEMU started with
// ArgOptions.DiskFDs expects, in order.
func openDiskFDs(spec engine.Spec) ([]*os.File, error) {
	var files []*os.File
	for _, d := range DiskFDFiles(spec) {
		flag := os.O_RDWR
		if d.ReadOnly {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(d.Path, flag|syscall.O_NOFOLLOW, 0)
		if err != nil {
			for _, g := range files {
				g.Close()
			}
			return nil, fmt.Errorf("open disk: %w", err)
		}
		files = append(files, f)
	}
	return files, nil
}

// stderrFile is the file, next to the pidfile, that gets QEMU's stdout and
// stderr.
const stderrFile = "qemu.stderr"

// VMM ids: when the daemon runs as root, each VM's QEMU drops to a uid and
// gid of its own in [VMMIDBase, VMMIDBase+VMMIDRange), derived from the VM's
// id. No account has these ids, so an escaped VMM owns nothing but what its
// VM's QEMU opened before the drop, and cannot signal or trace the QEMU of
// another VM (unless their ids collide: a 1 in 65536 chance per pair).
const (
	VMMIDBase  = 1 << 30
	VMMIDRange = 1 << 16
)

// VMMUser returns the "UID:GID" a root daemon runs the VM with the given id
// as.
func VMMUser(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	n := VMMIDBase + int(h.Sum32()%VMMIDRange)
	return strconv.Itoa(n) + ":" + strconv.Itoa(n)
}

// checkInputs fails early, with the field named, on input files QEMU would
// otherwise reject with a terser message, and on socket and log
// directories that do not exist.
func checkInputs(spec engine.Spec) error {
	if err := vmmproc.CheckInputs(
		vmmproc.File{Field: "kernel", Path: spec.Kernel},
		vmmproc.File{Field: "initramfs", Path: spec.Initramfs},
		vmmproc.File{Field: "root disk", Path: spec.RootDisk},
		vmmproc.File{Field: "work disk", Path: spec.WorkDisk},
	); err != nil {
		return err
	}
	return vmmproc.CheckDirs(
		vmmproc.File{Field: "agent socket", Path: spec.AgentSocket},
		vmmproc.File{Field: "qmp socket", Path: spec.QMPSocket},
		vmmproc.File{Field: "serial log", Path: spec.SerialLog},
		vmmproc.File{Field: "serial socket", Path: spec.SerialSocket},
		vmmproc.File{Field: "pid file", Path: spec.PIDFile},
		vmmproc.File{Field: "vmm log", Path: spec.VMMLog},
	)
}

// cleanup kills every VMM serving spec's QMP socket (the pidfile's and any
// that a cancelled start left half-daemonized), waits for them to die and
// removes the pidfile and sockets.
func cleanup(spec engine.Spec) {
	vmmproc.KillAll(spec.PIDFile, matcher(spec.QMPSocket), killWait)
	for _, path := range []string{spec.PIDFile, spec.QMPSocket, spec.AgentSocket, spec.SerialSocket} {
		vmmproc.RemoveIfExists(path)
	}
}

// Adopt re-attaches to the VMM that an earlier Start (possibly in another
// process) launched for spec, using its pidfile and QMP socket. If the
// pidfile is missing or unreadable, the VMM is looked for in /proc by its
// command line instead. Adopt fails with an error wrapping
// engine.ErrNotRunning if the process is gone, or the pid now belongs to a
// process other than a QEMU serving spec.QMPSocket. Only one QMP client is
// served at a time, so an Instance still open on the same VM makes Adopt
// fail after a timeout (10 s, or ctx's deadline if sooner).
func (d *Driver) Adopt(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := adopt(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("adopt vm %q: %w", vmmproc.VMName(spec), err)
	}
	return inst, nil
}

func adopt(ctx context.Context, spec engine.Spec) (*Instance, error) {
	if spec.PIDFile == "" || spec.QMPSocket == "" {
		return nil, errors.New("spec needs a pid file and a qmp socket")
	}
	pid, err := vmmproc.FindPID(matcher(spec.QMPSocket), spec.PIDFile)
	if err != nil {
		return nil, err
	}
	return attach(ctx, spec, pid)
}

// attach verifies that pid is spec's VMM and connects to its QMP socket.
func attach(ctx context.Context, spec engine.Spec, pid int) (*Instance, error) {
	p, err := vmmproc.OpenVerified(pid, "qemu", matcher(spec.QMPSocket))
	if err != nil {
		return nil, err
	}
	qctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	q, err := DialQMP(qctx, spec.QMPSocket)
	if err == nil {
		var st struct {
			Status string `json:"status"`
		}
		if err = q.Execute(qctx, "query-status", nil, &st); err != nil {
			q.Close()
		}
	}
	if err != nil {
		p.Close()
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (is another client, such as an older daemon, still connected to %s?)", err, spec.QMPSocket)
		}
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	return newInstance(spec, p, q), nil
}

// Instance is a running QEMU; it implements engine.Instance.
type Instance struct {
	*vmmproc.Handle
	spec engine.Spec
	qmp  *QMP

	eventsDone chan struct{}

	mu             sync.Mutex
	shutdownReason string
}

var _ engine.Instance = (*Instance)(nil)

func newInstance(spec engine.Spec, p *proc, q *QMP) *Instance {
	inst := &Instance{spec: spec, qmp: q, eventsDone: make(chan struct{})}
	go inst.readEvents()
	inst.Handle = vmmproc.Watch(p, func() { inst.exited(p.PID) }, func() { q.Close() })
	return inst
}

// exited cleans up after the QEMU with pid exited.
func (i *Instance) exited(pid int) {
	// QEMU removes its pidfile on a clean exit, not when killed. Remove a
	// leftover only while it still names our pid, so a newer VMM's
	// pidfile is never touched.
	// A VMM that dropped to its own uid cannot remove its pidfile or
	// sockets from the VM's directory either: do it for it.
	if p, err := readPIDFile(i.spec.PIDFile); err == nil && p == pid {
		for _, path := range []string{i.spec.QMPSocket, i.spec.AgentSocket, i.spec.PIDFile} {
			vmmproc.RemoveIfExists(path)
		}
	}
	// The exiting QEMU hangs up its QMP socket; let the last events (the
	// SHUTDOWN reason) be read before reporting the exit.
	select {
	case <-i.eventsDone:
	case <-time.After(time.Second):
	}
}

func (i *Instance) readEvents() {
	defer close(i.eventsDone)
	for ev := range i.qmp.Events() {
		if ev.Name != "SHUTDOWN" {
			continue
		}
		var data struct {
			Reason string `json:"reason"`
		}
		if json.Unmarshal(ev.Data, &data) == nil {
			i.mu.Lock()
			i.shutdownReason = data.Reason
			i.mu.Unlock()
		}
	}
}

// ShutdownReason is the reason from QEMU's last SHUTDOWN event, if one was
// seen on this handle: "guest-shutdown" (guest poweroff), "guest-reset"
// (guest reboot, which ends the VMM under -no-reboot), "guest-panic",
// "host-qmp-quit", "host-signal", ... It is "" if the VMM died without
// saying why (e.g. SIGKILL) or has not stopped.
func (i *Instance) ShutdownReason() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.shutdownReason
}

// QMP returns the instance's QMP connection, for commands this package has
// no method for. Closing it is Close's job.
func (i *Instance) QMP() *QMP { return i.qmp }

// Quit sends QMP "quit" and waits for the process to exit or ctx to end.
// If the QMP connection is gone, SIGTERM (which QEMU also treats as a
// request to quit) stands in. Quitting a VMM that has already exited
// returns nil. (Kill: SIGTERM makes QEMU exit cleanly, removing its pidfile
// and sockets; SIGKILL leaves them, and Done's watcher removes them.)
func (i *Instance) Quit(ctx context.Context) error {
	if i.Exited() {
		return nil
	}
	// QEMU may hang up before its reply arrives; the process exit is what
	// counts.
	err := i.qmp.Execute(ctx, "quit", nil, nil)
	switch {
	case errors.Is(err, ErrQMPClosed):
		select {
		case <-i.Done():
			return nil
		case <-time.After(time.Second):
			if err := i.Signal(syscall.SIGTERM); err != nil {
				return fmt.Errorf("quit vmm: %w", err)
			}
		case <-ctx.Done():
			return fmt.Errorf("quit vmm: %w", ctx.Err())
		}
	case err != nil:
		if i.Exited() {
			return nil
		}
		return fmt.Errorf("quit vmm: %w", err)
	}
	if err := i.WaitExit(ctx); err != nil {
		return fmt.Errorf("quit vmm: %w", err)
	}
	return nil
}

// HostTSCKHz returns the host's TSC rate in kHz, which is the rate a TCG
// guest's TSC runs at, read from /proc/cpuinfo ("cpu MHz" of the first
// CPU). It is exact where the kernel knows the TSC frequency (flag
// tsc_known_freq, usual in VMs) and otherwise the current clock, close
// enough for the boot-time hint it feeds.
func HostTSCKHz() (int, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return parseTSCKHz(f)
}

func parseTSCKHz(r interface{ Read([]byte) (int, error) }) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || mhz <= 0 {
			return 0, fmt.Errorf("cpuinfo: bad cpu MHz %q", val)
		}
		return int(mhz*1000 + 0.5), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read cpuinfo: %w", err)
	}
	return 0, errors.New("cpuinfo: no cpu MHz line")
}
