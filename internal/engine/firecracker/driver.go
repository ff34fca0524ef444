// Package firecracker is banger's engine.Driver for Firecracker microVMs
// (KVM only).
//
// Firecracker has no -daemonize and writes no pidfile, so Start launches it
// in a session of its own (setsid; stdin from /dev/null, stdout and stderr
// to Spec.VMMLog), writes Spec.PIDFile itself, and never ties it to the
// daemon through a pipe: the VMM outlives the daemon that started it. The
// daemon that started a VMM reaps it; after a daemon restart it is an
// orphan reaped by init. Start and Adopt track a VMM the same way the qemu
// driver does: through the pidfile, a pidfd (exit detection and signals
// that cannot hit a recycled pid) and the control socket. Before a pid is
// trusted, /proc/PID/cmdline must show a Firecracker serving the spec's
// API socket, and the API must answer GET /.
//
// How a Spec maps onto Firecracker:
//
//   - Spec.QMPSocket is Firecracker's API socket (--api-sock): it plays the
//     same role as QEMU's QMP socket, the VMM's control channel;
//   - Kernel (the same ELF vmlinux QEMU boots), Initramfs and Cmdline (plus
//     BootParams, see BootArgs) become the boot source;
//   - RootDisk and WorkDisk are raw images (Firecracker has no qcow2; see
//     CloneDisk), attached as drives "root" and "work" in that order, so
//     they are /dev/vda and /dev/vdb; neither is Firecracker's root device,
//     because banger's initramfs mounts the root itself;
//   - tap NICs become network interfaces eth0, eth1, ...; user-mode NICs
//     are refused (Firecracker has no slirp);
//   - VsockSocket/VsockCID become a hybrid vsock device, which is how the
//     host reaches the guest agent (agent.DialHybridVsock); AgentSocket
//     (a virtio-serial port) is refused, Firecracker has none;
//   - SerialLog receives ttyS0 (PUT /serial); without it the guest console
//     goes to Firecracker's stdout, the VMM log;
//   - Accel must be kvm.
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/engine"
)

// Timeouts the driver applies on top of the caller's context.
const (
	// apiTimeout bounds waiting for a freshly started Firecracker's API
	// socket to answer (it normally takes milliseconds).
	apiTimeout = 10 * time.Second
	// callTimeout bounds one API request during start and adopt.
	callTimeout = 30 * time.Second
	// killWait bounds waiting for a VMM to die after SIGKILL on cleanup.
	killWait = 5 * time.Second
	// quitGrace is how long Quit waits after SIGTERM before SIGKILL.
	quitGrace = 3 * time.Second
)

// MaxVCPU is the largest vcpu_count Firecracker accepts (the API
// definition's MachineConfiguration maximum).
const MaxVCPU = 32

// Drive and interface ids used in the API.
const (
	rootDriveID   = "root"
	workDriveID   = "work"
	defaultBinary = "firecracker"
)

// Driver is the Firecracker engine.Driver.
type Driver struct {
	// Binary is the firecracker executable; "firecracker" (from PATH) if
	// empty. Its file name must contain "firecracker": that is part of
	// how the driver recognises its VMM processes in /proc.
	Binary string
	// Jailer is the jailer executable. Running under the jailer is not
	// supported yet (inputs would have to be linked into its chroot and
	// the sockets would move under it); Start refuses a non-empty Jailer
	// rather than silently running unjailed.
	Jailer string
}

var _ engine.Driver = (*Driver)(nil)

// New returns a Driver running binary ("" for firecracker from PATH),
// optionally under jailer (see Driver.Jailer).
func New(binary, jailer string) *Driver { return &Driver{Binary: binary, Jailer: jailer} }

// Name returns "firecracker".
func (d *Driver) Name() string { return "firecracker" }

func (d *Driver) binary() string {
	if d.Binary == "" {
		return defaultBinary
	}
	return d.Binary
}

func vmName(spec engine.Spec) string {
	if spec.Name != "" {
		return spec.Name
	}
	return spec.ID
}

// instanceID is the --id given to Firecracker (reported by GET /):
// Firecracker accepts 1 to 64 ASCII letters, digits and '-'.
func instanceID(spec engine.Spec) string {
	id := spec.ID
	if id == "" {
		id = spec.Name
	}
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	if len(b) == 0 {
		return "banger"
	}
	return string(b)
}

// Start boots spec under a detached Firecracker and returns once the guest
// has been started (PUT /actions InstanceStart succeeded). The guest itself
// may still be booting.
//
// The API calls, in order: GET / (wait for the socket), PUT
// /machine-config, PUT /boot-source, PUT /serial (with a SerialLog), PUT
// /drives/root and /drives/work, PUT /network-interfaces/ethN per NIC, PUT
// /vsock (with a VsockSocket), PUT /actions InstanceStart. An API error
// carries Firecracker's fault_message verbatim (see APIError).
//
// Start fails without launching anything if the spec is invalid or asks
// for what Firecracker cannot do (TCG, user-mode NICs, a virtio-serial
// agent port, qcow2 disks, more than MaxVCPU vCPUs, a jailer), an input is
// missing, or a VMM for spec is already running. On any later failure, or
// when ctx ends, the VMM is killed and its pidfile and sockets are removed.
func (d *Driver) Start(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := d.start(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("start vm %q: %w", vmName(spec), err)
	}
	return inst, nil
}

func (d *Driver) start(ctx context.Context, spec engine.Spec) (*Instance, error) {
	if err := d.checkSpec(spec); err != nil {
		return nil, err
	}
	args := BootArgs(spec)
	if err := checkBootArgs(args, spec); err != nil {
		return nil, err
	}
	if err := checkInputs(spec); err != nil {
		return nil, err
	}
	// A live Firecracker on the same API socket, pidfile or not, would
	// lose its sockets to the new one.
	if pid, err := readPIDFile(spec.PIDFile); err == nil && isVMMFor(procCmdline(pid), spec.QMPSocket) {
		return nil, fmt.Errorf("already running as pid %d", pid)
	}
	if pids := findVMMs(spec.QMPSocket); len(pids) > 0 {
		return nil, fmt.Errorf("already running as pid %d (its pidfile is missing)", pids[0])
	}
	// Firecracker refuses to bind an existing socket path.
	for _, p := range []string{spec.PIDFile, spec.QMPSocket, spec.VsockSocket} {
		if err := removeIfExists(p); err != nil {
			return nil, fmt.Errorf("remove stale %s: %w", p, err)
		}
	}

	p, waited, err := d.launch(spec)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Instance, error) {
		p.signal(syscall.SIGKILL)
		select {
		case <-waited.done:
		case <-time.After(killWait):
		}
		p.close()
		cleanup(spec)
		return nil, err
	}
	if err := writePIDFile(spec.PIDFile, p.pid); err != nil {
		return fail(fmt.Errorf("write pidfile: %w", err))
	}
	api := NewClient(spec.QMPSocket)
	if err := waitAPI(ctx, api, spec, waited); err != nil {
		api.Close()
		return fail(err)
	}
	if err := configure(ctx, api, spec, args); err != nil {
		api.Close()
		if werr := exitError(waited, spec); werr != nil {
			err = fmt.Errorf("%w (%w)", err, werr)
		}
		return fail(err)
	}
	return newInstance(spec, p, api), nil
}

// checkSpec validates spec and refuses what Firecracker cannot run.
func (d *Driver) checkSpec(spec engine.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if d.Jailer != "" {
		add("running firecracker under the jailer (%s) is not supported yet", d.Jailer)
	}
	if spec.Accel != engine.AccelKVM {
		add("firecracker needs kvm; accelerator %q is not supported", spec.Accel)
	}
	if spec.VCPU > MaxVCPU {
		add("firecracker supports at most %d vcpus, not %d", MaxVCPU, spec.VCPU)
	}
	if spec.Kernel == "" {
		add("firecracker needs a kernel")
	}
	if spec.AgentSocket != "" {
		add("firecracker has no virtio-serial ports: leave the agent socket empty and reach the agent over vsock (VsockSocket)")
	}
	for i, n := range spec.NICs {
		if n.User {
			add("nic %d: firecracker supports tap networking only (user-mode networking is a QEMU feature)", i)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("unsupported by firecracker: %w", errors.Join(errs...))
	}
	return nil
}

// qcow2Magic starts every qcow2 image.
const qcow2Magic = "QFI\xfb"

// checkInputs fails early, with the field named, on input files
// Firecracker would otherwise reject with a terser message (or, for a
// qcow2 disk, accept and hand the guest as raw bytes), and on socket and
// log directories that do not exist.
func checkInputs(spec engine.Spec) error {
	for _, f := range []struct {
		field, path string
		disk        bool
	}{
		{"kernel", spec.Kernel, false},
		{"initramfs", spec.Initramfs, false},
		{"root disk", spec.RootDisk, true},
		{"work disk", spec.WorkDisk, true},
	} {
		if f.path == "" {
			continue
		}
		st, err := os.Stat(f.path)
		if err != nil {
			return fmt.Errorf("%s: %w", f.field, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s %s is not a regular file", f.field, f.path)
		}
		if f.disk {
			if isQcow2(f.path) {
				return fmt.Errorf("%s %s is a qcow2 image; firecracker needs raw images (make one with CloneDisk)", f.field, f.path)
			}
		}
	}
	for _, f := range []struct{ field, path string }{
		{"api socket", spec.QMPSocket},
		{"vsock socket", spec.VsockSocket},
		{"serial log", spec.SerialLog},
		{"pid file", spec.PIDFile},
		{"vmm log", spec.VMMLog},
	} {
		if f.path == "" {
			continue
		}
		dir := filepath.Dir(f.path)
		if st, err := os.Stat(dir); err != nil {
			return fmt.Errorf("%s directory: %w", f.field, err)
		} else if !st.IsDir() {
			return fmt.Errorf("%s directory %s is not a directory", f.field, dir)
		}
	}
	return nil
}

func isQcow2(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(qcow2Magic))
	n, _ := f.ReadAt(b, 0)
	return n == len(b) && string(b) == qcow2Magic
}

// reaped reports the exit of a VMM started by this process: done is
// closed once it has been reaped, and err is then its exit status.
type reaped struct {
	done chan struct{}
	err  error
}

// launch starts Firecracker in its own session and returns a handle on it
// and its reaper's report.
func (d *Driver) launch(spec engine.Spec) (*proc, *reaped, error) {
	var logf *os.File
	if spec.VMMLog != "" {
		f, err := os.OpenFile(spec.VMMLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("open vmm log: %w", err)
		}
		logf = f
		defer logf.Close() // the child has its own copy
	}
	cmd := exec.Command(d.binary(), "--api-sock", spec.QMPSocket, "--id", instanceID(spec))
	cmd.Dir = "/"
	if logf != nil {
		// Files, not pipes: a pipe would tie the VMM to the daemon
		// (SIGPIPE once the daemon is gone).
		cmd.Stdout, cmd.Stderr = logf, logf
	}
	// A session of its own: no controlling terminal, and signals to the
	// daemon's process group (Ctrl-C in a terminal) never reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("run firecracker: %w", err)
	}
	// Open the pidfd before anything can reap the child.
	p, err := openProc(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, fmt.Errorf("track firecracker: %w", err)
	}
	r := &reaped{done: make(chan struct{})}
	// The VMM is our child until we exit: reap it, or it stays a zombie.
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()
	return p, r, nil
}

// waitAPI waits until the API socket answers GET / with a not-yet-started
// instance, the process exits, or ctx or apiTimeout ends.
func waitAPI(ctx context.Context, api *Client, spec engine.Spec, waited *reaped) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if err := exitError(waited, spec); err != nil {
			return err
		}
		info, err := api.DescribeInstance(ctx)
		if err == nil {
			if info.State != StateNotStarted {
				return fmt.Errorf("firecracker on %s is already %q", spec.QMPSocket, info.State)
			}
			return nil
		}
		last = err
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			return err // it answered, with an error: waiting will not help
		}
		select {
		case <-ctx.Done():
			if werr := exitError(waited, spec); werr != nil {
				return werr
			}
			return fmt.Errorf("firecracker api did not answer: %w (last error: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// exitError returns a description of the VMM's exit, with the tail of its
// log, if it has exited; nil while it runs.
func exitError(waited *reaped, spec engine.Spec) error {
	select {
	case <-waited.done:
	default:
		return nil
	}
	status := "exit status 0"
	if waited.err != nil {
		status = waited.err.Error()
	}
	msg := ""
	if spec.VMMLog != "" {
		if b, err := os.ReadFile(spec.VMMLog); err == nil {
			msg = strings.TrimSpace(string(b))
		}
	}
	if msg == "" {
		msg = "no error message"
		if spec.VMMLog == "" {
			msg += " (no vmm log configured)"
		}
	}
	return fmt.Errorf("firecracker exited during start-up (%s): %s", status, lastLines(msg, 5))
}

// configure sends the boot configuration and starts the guest.
func configure(ctx context.Context, api *Client, spec engine.Spec, bootArgs string) error {
	call := func(f func(context.Context) error) error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		return f(cctx)
	}
	if err := call(func(ctx context.Context) error {
		return api.PutMachineConfiguration(ctx, MachineConfiguration{VCPUCount: spec.VCPU, MemSizeMiB: spec.MemoryMiB})
	}); err != nil {
		return err
	}
	if err := call(func(ctx context.Context) error {
		return api.PutGuestBootSource(ctx, BootSource{KernelImagePath: spec.Kernel, InitrdPath: spec.Initramfs, BootArgs: bootArgs})
	}); err != nil {
		return err
	}
	if spec.SerialLog != "" {
		// Truncated here, like QEMU's file chardev does: whether
		// Firecracker creates, truncates or appends is not specified.
		f, err := os.OpenFile(spec.SerialLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("create serial log: %w", err)
		}
		f.Close()
		if err := call(func(ctx context.Context) error {
			return api.PutSerialDevice(ctx, SerialDevice{SerialOutPath: spec.SerialLog})
		}); err != nil {
			return err
		}
	}
	for _, disk := range []struct{ id, path string }{{rootDriveID, spec.RootDisk}, {workDriveID, spec.WorkDisk}} {
		if disk.path == "" {
			continue
		}
		if err := call(func(ctx context.Context) error {
			return api.PutGuestDriveByID(ctx, Drive{
				DriveID:    disk.id,
				PathOnHost: disk.path,
				// banger's initramfs finds and mounts the root itself,
				// so Firecracker adds no root= parameter.
				IsRootDevice: false,
				IsReadOnly:   false,
				// Guest flushes reach the disk (the default, Unsafe,
				// drops them), as with QEMU's cache=writeback.
				CacheType: CacheWriteback,
			})
		}); err != nil {
			return err
		}
	}
	for i, n := range spec.NICs {
		if err := call(func(ctx context.Context) error {
			return api.PutGuestNetworkInterfaceByID(ctx, NetworkInterface{
				IfaceID:     "eth" + strconv.Itoa(i),
				HostDevName: n.Tap,
				GuestMAC:    strings.ToLower(n.MAC),
			})
		}); err != nil {
			return err
		}
	}
	if spec.VsockSocket != "" {
		cid := spec.VsockCID
		if cid == 0 {
			cid = engine.DefaultVsockCID
		}
		if err := call(func(ctx context.Context) error {
			return api.PutGuestVsock(ctx, Vsock{GuestCID: cid, UDSPath: spec.VsockSocket})
		}); err != nil {
			return err
		}
	}
	return call(func(ctx context.Context) error {
		return api.CreateSyncAction(ctx, InstanceActionInfo{ActionType: ActionInstanceStart})
	})
}

// cleanup kills every VMM serving spec's API socket (the pidfile's and
// any other), waits for them to die and removes the pidfile and sockets.
func cleanup(spec engine.Spec) {
	deadline := time.Now().Add(killWait)
	for time.Now().Before(deadline) {
		pids := findVMMs(spec.QMPSocket)
		if pid, err := readPIDFile(spec.PIDFile); err == nil && isVMMFor(procCmdline(pid), spec.QMPSocket) {
			pids = append(pids, pid)
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			p, err := openProc(pid)
			if err != nil {
				continue
			}
			if isVMMFor(procCmdline(pid), spec.QMPSocket) {
				p.signal(syscall.SIGKILL)
				for !p.exited() && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
			}
			p.close()
		}
	}
	for _, path := range []string{spec.PIDFile, spec.PIDFile + ".tmp", spec.QMPSocket, spec.VsockSocket} {
		if path != "" {
			removeIfExists(path)
		}
	}
}

func removeIfExists(path string) error {
	if path == "" {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// Adopt re-attaches to the VMM that an earlier Start (possibly in another
// process) launched for spec, using its pidfile and API socket
// (Spec.QMPSocket). If the pidfile is missing or unreadable, the VMM is
// looked for in /proc by its command line instead. The pid must be a
// Firecracker serving spec's API socket, and GET / must answer with the
// instance id Start gave it.
//
// Adopt fails with an error wrapping engine.ErrNotRunning if the process
// is gone, or the pid now belongs to another process (which is left
// alone). A Firecracker whose guest was never started (its daemon died in
// the middle of Start) is useless: Adopt kills it, removes its files and
// fails with engine.ErrNotRunning too.
func (d *Driver) Adopt(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := adopt(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("adopt vm %q: %w", vmName(spec), err)
	}
	return inst, nil
}

func adopt(ctx context.Context, spec engine.Spec) (*Instance, error) {
	if spec.PIDFile == "" || spec.QMPSocket == "" {
		return nil, errors.New("spec needs a pid file and an api socket")
	}
	pid, err := readPIDFile(spec.PIDFile)
	if err != nil {
		pids := findVMMs(spec.QMPSocket)
		if len(pids) != 1 {
			return nil, fmt.Errorf("read pidfile: %w (%w)", err, engine.ErrNotRunning)
		}
		pid = pids[0]
	}
	p, err := openProc(pid)
	if err != nil {
		return nil, err
	}
	// Check the identity after opening the handle, then that the handle's
	// process is still alive: the cmdline read belongs to it.
	if !isVMMFor(procCmdline(pid), spec.QMPSocket) || p.exited() {
		p.close()
		return nil, fmt.Errorf("pid %d is not the vm's firecracker (gone, or the pid was reused): %w", pid, engine.ErrNotRunning)
	}
	api := NewClient(spec.QMPSocket)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	info, err := api.DescribeInstance(cctx)
	cancel()
	if err != nil {
		api.Close()
		p.close()
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	if want := instanceID(spec); info.ID != want {
		api.Close()
		p.close()
		return nil, fmt.Errorf("pid %d serves instance %q, not %q", pid, info.ID, want)
	}
	if info.State == StateNotStarted {
		api.Close()
		p.signal(syscall.SIGKILL)
		for deadline := time.Now().Add(killWait); !p.exited() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		p.close()
		cleanup(spec)
		return nil, fmt.Errorf("pid %d never started its guest (killed it): %w", pid, engine.ErrNotRunning)
	}
	return newInstance(spec, p, api), nil
}

// Instance is a running Firecracker; it implements engine.Instance.
type Instance struct {
	spec engine.Spec
	proc *proc
	api  *Client

	done      chan struct{}
	watchDone chan struct{}
	closeOnce sync.Once
}

var _ engine.Instance = (*Instance)(nil)

func newInstance(spec engine.Spec, p *proc, api *Client) *Instance {
	inst := &Instance{
		spec:      spec,
		proc:      p,
		api:       api,
		done:      make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	go inst.watch()
	return inst
}

func (i *Instance) watch() {
	defer close(i.watchDone)
	if !i.proc.wait() {
		return // closed
	}
	// Firecracker never removes the pidfile (it did not write it).
	// Remove it only while it still names our pid, so a newer VMM's
	// pidfile is never touched. The sockets are left to the next Start,
	// which removes them before launching.
	if pid, err := readPIDFile(i.spec.PIDFile); err == nil && pid == i.proc.pid {
		removeIfExists(i.spec.PIDFile)
	}
	close(i.done)
}

// PID returns the Firecracker process id.
func (i *Instance) PID() int { return i.proc.pid }

// Done is closed when the Firecracker process has exited (see
// engine.Instance).
func (i *Instance) Done() <-chan struct{} { return i.done }

// API returns the instance's API client, for calls this package has no
// method for. Closing it is Close's job.
func (i *Instance) API() *Client { return i.api }

// Info returns GET / (the instance's id, state and Firecracker version).
func (i *Instance) Info(ctx context.Context) (InstanceInfo, error) {
	return i.api.DescribeInstance(ctx)
}

// SendCtrlAltDel presses Ctrl+Alt+Del on the guest's keyboard (PUT
// /actions SendCtrlAltDel). A systemd guest treats it as a reboot request,
// which ends the VMM (see BootParams, reboot=k): a graceful-stop fallback
// for when the guest agent does not answer. It returns once Firecracker has
// injected the keys; wait on Done for the exit.
func (i *Instance) SendCtrlAltDel(ctx context.Context) error {
	if err := i.api.CreateSyncAction(ctx, InstanceActionInfo{ActionType: ActionSendCtrlAltDel}); err != nil {
		return fmt.Errorf("send ctrl-alt-del: %w", err)
	}
	return nil
}

// Kill sends sig to Firecracker without waiting (see engine.Instance).
// Firecracker installs no SIGTERM handler, so SIGTERM, like SIGKILL, ends
// it at once; its disk writes are in the host page cache either way.
func (i *Instance) Kill(sig syscall.Signal) error {
	if err := i.proc.signal(sig); err != nil {
		return fmt.Errorf("kill vmm: %w", err)
	}
	return nil
}

// Quit stops Firecracker at once, the closest it has to QEMU's "quit" (its
// API has no such action): SIGTERM, then SIGKILL should it still be there
// after a grace period (3 s); it waits until the process is gone or ctx
// ends. Quitting a VMM that has already exited returns nil.
func (i *Instance) Quit(ctx context.Context) error {
	select {
	case <-i.done:
		return nil
	default:
	}
	if err := i.proc.signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("quit vmm: %w", err)
	}
	grace := time.NewTimer(quitGrace)
	defer grace.Stop()
	for {
		select {
		case <-i.done:
			return nil
		case <-i.watchDone:
			return fmt.Errorf("quit vmm: %w", os.ErrClosed)
		case <-grace.C:
			if err := i.proc.signal(syscall.SIGKILL); err != nil {
				return fmt.Errorf("quit vmm: %w", err)
			}
		case <-ctx.Done():
			return fmt.Errorf("quit vmm: wait for exit: %w", ctx.Err())
		}
	}
}

// Close drops the API client and stops watching the process; the VM keeps
// running. It is idempotent.
func (i *Instance) Close() error {
	i.closeOnce.Do(func() {
		i.api.Close()
		i.proc.close()
	})
	<-i.watchDone
	return nil
}
