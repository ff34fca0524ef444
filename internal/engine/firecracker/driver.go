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
//   - Balloon becomes an empty balloon device with free page reporting and
//     deflate_on_oom (PUT /balloon);
//   - Accel must be kvm.
//
// With Driver.Jailer set, Firecracker runs under Firecracker's jailer:
// chrooted in <ChrootBase>/<firecracker file name>/<id>/root, as a
// dedicated uid and gid, with the spec's files linked into the chroot and
// its sockets inside it (see jail.go for the layout and the rules, and
// Driver.JailSpec for the socket paths the caller must use; Driver.Layout
// applies it).
package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/engine"
	"banger/internal/engine/vmmproc"
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

// Driver is the Firecracker engine.Driver. Its fields are configuration,
// set before the first call and not changed afterwards.
type Driver struct {
	// Binary is the firecracker executable; "firecracker" (from PATH) if
	// empty. The file name it resolves to must contain "firecracker":
	// that is part of how the driver recognises its VMM processes in
	// /proc, and the jailer insists on it. Under the jailer that file name
	// also names the jail directory (see JailSpec), so point Binary at a
	// path whose resolved name does not change with upgrades while VMs
	// run.
	Binary string
	// Jailer is the jailer executable. Empty: Firecracker runs unjailed,
	// as the daemon's user. Set: every VMM runs under the jailer,
	// chrooted and as JailUID/JailGID; the daemon must be root, and specs
	// must go through JailSpec.
	Jailer string
	// ChrootBase is the jailer's --chroot-base-dir; DefaultChrootBase
	// (/srv/jailer) when empty. It must be absolute and on the filesystem
	// that holds the VMs' disks and serial logs, which are hard-linked
	// into the jails.
	ChrootBase string
	// JailUID and JailGID are the uid and gid Firecracker runs as under
	// the jailer. JailUID 0 (the default) gives every VM a dedicated uid,
	// JailIDBase plus a hash of its id (see DefaultJailIDBase), so that
	// one jailed VMM cannot touch another VM's files or processes. A
	// non-zero JailUID runs every VM as that uid. JailGID 0 means a gid
	// of the uid's number.
	JailUID, JailGID int
	// JailIDBase is the first id of the per-VM range (JailIDCount ids);
	// DefaultJailIDBase when 0.
	JailIDBase int
	// NetNS, if set, is a network namespace handle (e.g.
	// /var/run/netns/NAME) the jailer joins (--netns): the VMs' tap
	// devices must then exist in that namespace. Empty: the host's.
	NetNS string
}

var _ engine.Driver = (*Driver)(nil)

// New returns a Driver running binary ("" for firecracker from PATH),
// under jailer if that is not empty; set the Driver's other fields for
// the jail's layout and ids.
func New(binary, jailer string) *Driver { return &Driver{Binary: binary, Jailer: jailer} }

// Name returns "firecracker".
func (d *Driver) Name() string { return "firecracker" }

func (d *Driver) binary() string {
	if d.Binary == "" {
		return defaultBinary
	}
	return d.Binary
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
// /vsock (with a VsockSocket), PUT /balloon (with Balloon), PUT /actions
// InstanceStart. An API error
// carries Firecracker's fault_message verbatim (see APIError).
//
// Under the jailer (Driver.Jailer), spec must have been through
// JailSpec; Start builds the VM's jail (replacing a stale one), runs the
// jailer in place of firecracker and sends paths inside the jail over the
// API (see jail.go).
//
// Start fails without launching anything if the spec is invalid or asks
// for what Firecracker cannot do (TCG, user-mode NICs, a virtio-serial
// agent port, qcow2 disks, more than MaxVCPU vCPUs), an input is missing
// or cannot be put in the jail, or a VMM for spec is already running. On
// any later failure, or when ctx ends, the VMM is killed and its pidfile,
// sockets and jail are removed.
func (d *Driver) Start(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := d.start(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("start vm %q: %w", vmmproc.VMName(spec), err)
	}
	return inst, nil
}

func (d *Driver) start(ctx context.Context, spec engine.Spec) (*Instance, error) {
	if err := d.checkSpec(spec); err != nil {
		return nil, err
	}
	j, id, err := d.layout(spec)
	if err != nil {
		return nil, err
	}
	if j != nil {
		if err := d.checkJail(j); err != nil {
			return nil, err
		}
	}
	args := BootArgs(spec)
	if err := checkBootArgs(args, spec); err != nil {
		return nil, err
	}
	if err := checkInputs(spec, j != nil); err != nil {
		return nil, err
	}
	// A live Firecracker on the same API socket, pidfile or not, would
	// lose its sockets (or its jail) to the new one.
	if pid, err := readPIDFile(spec.PIDFile); err == nil && isVMMFor(procCmdline(pid), id) {
		return nil, fmt.Errorf("already running as pid %d", pid)
	}
	if pids := findVMMs(id); len(pids) > 0 {
		return nil, fmt.Errorf("already running as pid %d (its pidfile is missing)", pids[0])
	}
	// Firecracker refuses to bind an existing socket path; the jailer
	// refuses an existing pid file or device node in the jail.
	for _, p := range []string{spec.PIDFile, spec.QMPSocket, spec.VsockSocket} {
		if err := vmmproc.RemoveIfExists(p); err != nil {
			return nil, fmt.Errorf("remove stale %s: %w", p, err)
		}
	}
	if spec.SerialLog != "" {
		// Truncated on every start, like QEMU's file chardev: whether
		// Firecracker creates, truncates or appends is not specified.
		f, err := os.OpenFile(spec.SerialLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("create serial log: %w", err)
		}
		f.Close()
	}
	paths := hostPaths(spec)
	if j != nil {
		if err := j.remove(); err != nil {
			return nil, fmt.Errorf("stale jail: %w", err)
		}
		if j.uid, j.gid, err = d.jailIDs(j); err != nil {
			return nil, err
		}
		if paths, err = j.prepare(spec); err != nil {
			j.remove()
			return nil, err
		}
	}

	p, waited, err := d.launch(spec, j)
	if err != nil {
		if j != nil {
			j.remove()
		}
		return nil, err
	}
	fail := func(err error) (*Instance, error) {
		p.Signal(syscall.SIGKILL)
		select {
		case <-waited.done:
		case <-time.After(killWait):
		}
		p.Close()
		cleanup(spec, id, j)
		return nil, err
	}
	if err := writePIDFile(spec.PIDFile, p.PID); err != nil {
		return fail(fmt.Errorf("write pidfile: %w", err))
	}
	api := NewClient(spec.QMPSocket)
	if err := waitAPI(ctx, api, spec, j != nil, waited); err != nil {
		api.Close()
		return fail(err)
	}
	if j != nil {
		// The jailer execs firecracker in place; one that forked would
		// leave the driver tracking the wrong process.
		if pid, err := readPIDFile(j.pidFile()); err == nil && pid != p.PID {
			api.Close()
			return fail(fmt.Errorf("the jailer reports firecracker as pid %d, not the started pid %d: a jailer that forks is not supported", pid, p.PID))
		}
	}
	if err := configure(ctx, api, spec, paths, args); err != nil {
		api.Close()
		if werr := exitError(waited, spec, j != nil); werr != nil {
			err = fmt.Errorf("%w (%w)", err, werr)
		}
		return fail(err)
	}
	return newInstance(spec, p, api, j), nil
}

// layout returns spec's jail (nil without a jailer) and how its VMM is
// recognised among processes.
func (d *Driver) layout(spec engine.Spec) (*jail, vmmID, error) {
	if d.Jailer == "" {
		return nil, vmmID{apiSock: spec.QMPSocket}, nil
	}
	j, err := d.jailFor(spec)
	if err != nil {
		return nil, vmmID{}, err
	}
	return j, vmmID{apiSock: j.api, id: j.id}, nil
}

// checkSpec validates spec and refuses what Firecracker cannot run.
func (d *Driver) checkSpec(spec engine.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
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
// log directories that do not exist (under the jailer the sockets'
// directory is the jail's, made later).
func checkInputs(spec engine.Spec, jailed bool) error {
	disks := []vmmproc.File{{Field: "root disk", Path: spec.RootDisk}, {Field: "work disk", Path: spec.WorkDisk}}
	if err := vmmproc.CheckInputs(append([]vmmproc.File{
		{Field: "kernel", Path: spec.Kernel},
		{Field: "initramfs", Path: spec.Initramfs},
	}, disks...)...); err != nil {
		return err
	}
	for _, f := range disks {
		if f.Path != "" && isQcow2(f.Path) {
			return fmt.Errorf("%s %s is a qcow2 image; firecracker needs raw images (make one with CloneDisk)", f.Field, f.Path)
		}
	}
	var dirs []vmmproc.File
	if !jailed {
		// Under the jailer the sockets' directory is the jail's, made
		// later.
		dirs = append(dirs, vmmproc.File{Field: "api socket", Path: spec.QMPSocket}, vmmproc.File{Field: "vsock socket", Path: spec.VsockSocket})
	}
	return vmmproc.CheckDirs(append(dirs,
		vmmproc.File{Field: "serial log", Path: spec.SerialLog},
		vmmproc.File{Field: "pid file", Path: spec.PIDFile},
		vmmproc.File{Field: "vmm log", Path: spec.VMMLog},
	)...)
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

// launch starts Firecracker, or the jailer that execs it, in its own
// session and returns a handle on it and its reaper's report.
func (d *Driver) launch(spec engine.Spec, j *jail) (*proc, *reaped, error) {
	var logf *os.File
	if spec.VMMLog != "" {
		f, err := os.OpenFile(spec.VMMLog, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("open vmm log: %w", err)
		}
		logf = f
		defer logf.Close() // the child has its own copy
	}
	what := "firecracker"
	var cmd *exec.Cmd
	if j == nil {
		cmd = exec.Command(d.binary(), "--api-sock", spec.QMPSocket, "--id", instanceID(spec))
	} else {
		what = "jailer"
		cmd = exec.Command(d.Jailer, d.jailerArgs(j)...)
	}
	cmd.Dir = "/"
	if logf != nil {
		// Files, not pipes: a pipe would tie the VMM to the daemon
		// (SIGPIPE once the daemon is gone). The jailer hands them on
		// to firecracker (no --daemonize).
		cmd.Stdout, cmd.Stderr = logf, logf
	}
	// A session of its own: no controlling terminal, and signals to the
	// daemon's process group (Ctrl-C in a terminal) never reach it. The
	// jailer execs firecracker in place, which keeps the session.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("run %s: %w", what, err)
	}
	// Open the pidfd before anything can reap the child.
	p, err := openProc(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, fmt.Errorf("track %s: %w", what, err)
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
func waitAPI(ctx context.Context, api *Client, spec engine.Spec, jailed bool, waited *reaped) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if err := exitError(waited, spec, jailed); err != nil {
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
			if werr := exitError(waited, spec, jailed); werr != nil {
				return werr
			}
			return fmt.Errorf("firecracker api did not answer: %w (last error: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// exitError returns a description of the VMM's exit, with the tail of its
// log (where the jailer's errors go too), if it has exited; nil while it
// runs.
func exitError(waited *reaped, spec engine.Spec, jailed bool) error {
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
		msg = strings.TrimSpace(vmmproc.ReadBounded(spec.VMMLog, 64<<10))
	}
	if msg == "" {
		msg = "no error message"
		if spec.VMMLog == "" {
			msg += " (no vmm log configured)"
		}
	}
	what := "firecracker"
	if jailed {
		what = "jailer or firecracker"
	}
	return fmt.Errorf("%s exited during start-up (%s): %s", what, status, vmmproc.LastLines(msg, 5))
}

// configure sends the boot configuration, with the files at paths, and
// starts the guest.
func configure(ctx context.Context, api *Client, spec engine.Spec, paths vmmPaths, bootArgs string) error {
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
		return api.PutGuestBootSource(ctx, BootSource{KernelImagePath: paths.kernel, InitrdPath: paths.initramfs, BootArgs: bootArgs})
	}); err != nil {
		return err
	}
	if paths.serialLog != "" {
		if err := call(func(ctx context.Context) error {
			return api.PutSerialDevice(ctx, SerialDevice{SerialOutPath: paths.serialLog})
		}); err != nil {
			return err
		}
	}
	for _, disk := range []struct{ id, path string }{{rootDriveID, paths.rootDisk}, {workDriveID, paths.workDisk}} {
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
	if paths.vsock != "" {
		cid := spec.VsockCID
		if cid == 0 {
			cid = engine.DefaultVsockCID
		}
		if err := call(func(ctx context.Context) error {
			return api.PutGuestVsock(ctx, Vsock{GuestCID: cid, UDSPath: paths.vsock})
		}); err != nil {
			return err
		}
	}
	if spec.Balloon {
		if err := call(func(ctx context.Context) error {
			return api.PutBalloon(ctx, Balloon{AmountMiB: 0, DeflateOnOOM: true, FreePageReporting: true})
		}); err != nil {
			return err
		}
	}
	return call(func(ctx context.Context) error {
		return api.CreateSyncAction(ctx, InstanceActionInfo{ActionType: ActionInstanceStart})
	})
}

// cleanup kills every VMM that id matches (the pidfile's and any other),
// waits for them to die and removes the pidfile, the sockets and the jail
// (j nil: none). It fails if a VMM survived or the jail could not be
// removed.
func cleanup(spec engine.Spec, id vmmID, j *jail) error {
	var errs []error
	if err := vmmproc.KillAll(spec.PIDFile, matcher(id), killWait); err != nil {
		errs = append(errs, err)
	}
	for _, path := range []string{spec.PIDFile, spec.PIDFile + ".tmp", spec.QMPSocket, spec.VsockSocket} {
		vmmproc.RemoveIfExists(path)
	}
	if j != nil {
		if err := j.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Cleanup removes what the driver left on the host for spec: it kills a
// VMM still serving spec (SIGKILL), then removes its pidfile, its sockets
// and, under the jailer, its jail directory <ChrootBase>/<exec>/<id>
// (spec as given to Start, i.e. through JailSpec). The spec's disks, logs
// and kernel are left alone; the jail only held links to them. The daemon
// calls it when it deletes a VM. It is idempotent.
func (d *Driver) Cleanup(spec engine.Spec) error {
	j, id, err := d.layout(spec)
	if err == nil {
		err = cleanup(spec, id, j)
	}
	if err != nil {
		return fmt.Errorf("clean up vm %q: %w", vmmproc.VMName(spec), err)
	}
	return nil
}

// Adopt re-attaches to the VMM that an earlier Start (possibly in another
// process) launched for spec, using its pidfile and API socket
// (Spec.QMPSocket; under the jailer spec must have been through JailSpec,
// as for Start). If the pidfile is missing or unreadable, the VMM's pid is
// taken from the pid file the jailer wrote in the jail, or looked for in
// /proc by its command line. The pid must be a Firecracker serving spec's
// API socket (and, under the jailer, with spec's jail id), and GET / must
// answer with the instance id Start gave it.
//
// Adopt fails with an error wrapping engine.ErrNotRunning if the process
// is gone, or the pid now belongs to another process (which is left
// alone). A Firecracker whose guest was never started (its daemon died in
// the middle of Start) is useless: Adopt kills it, removes its files (and
// jail) and fails with engine.ErrNotRunning too.
func (d *Driver) Adopt(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	inst, err := d.adopt(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("adopt vm %q: %w", vmmproc.VMName(spec), err)
	}
	return inst, nil
}

func (d *Driver) adopt(ctx context.Context, spec engine.Spec) (*Instance, error) {
	if spec.PIDFile == "" || spec.QMPSocket == "" {
		return nil, errors.New("spec needs a pid file and an api socket")
	}
	j, id, err := d.layout(spec)
	if err != nil {
		return nil, err
	}
	pidFiles := []string{spec.PIDFile}
	if j != nil {
		pidFiles = append(pidFiles, j.pidFile())
	}
	pid, err := vmmproc.FindPID(matcher(id), pidFiles...)
	if err != nil {
		return nil, err
	}
	p, err := vmmproc.OpenVerified(pid, "firecracker", matcher(id))
	if err != nil {
		return nil, err
	}
	api := NewClient(spec.QMPSocket)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	info, err := api.DescribeInstance(cctx)
	cancel()
	if err != nil {
		api.Close()
		p.Close()
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	if want := instanceID(spec); info.ID != want {
		api.Close()
		p.Close()
		return nil, fmt.Errorf("pid %d serves instance %q, not %q", pid, info.ID, want)
	}
	if info.State == StateNotStarted {
		api.Close()
		p.Signal(syscall.SIGKILL)
		for deadline := time.Now().Add(killWait); !p.Exited() && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		p.Close()
		cleanup(spec, id, j)
		return nil, fmt.Errorf("pid %d never started its guest (killed it): %w", pid, engine.ErrNotRunning)
	}
	return newInstance(spec, p, api, j), nil
}

// Instance is a running Firecracker; it implements engine.Instance.
type Instance struct {
	*vmmproc.Handle
	spec engine.Spec
	api  *Client
	jail *jail // nil when not jailed
}

var _ engine.Instance = (*Instance)(nil)

func newInstance(spec engine.Spec, p *proc, api *Client, j *jail) *Instance {
	inst := &Instance{spec: spec, api: api, jail: j}
	inst.Handle = vmmproc.Watch(p, func() { inst.exited(p.PID) }, func() { api.Close() })
	return inst
}

// exited cleans up after the Firecracker with pid exited.
func (i *Instance) exited(pid int) {
	// Firecracker never removes the pidfile (it did not write it).
	// Remove it only while it still names our pid, so a newer VMM's
	// pidfile is never touched. The sockets are left to the next Start,
	// which removes them before launching. The jail goes too, on the
	// same condition (or while the jailer's pid file in it names our
	// pid, for an instance adopted without the driver's pidfile).
	ours := false
	if p, err := readPIDFile(i.spec.PIDFile); err == nil && p == pid {
		ours = true
		vmmproc.RemoveIfExists(i.spec.PIDFile)
	}
	if j := i.jail; j != nil {
		if p, err := readPIDFile(j.pidFile()); err == nil && p == pid {
			ours = true
		}
		if ours {
			j.remove()
		}
	}
}

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

// Quit stops Firecracker at once, the closest it has to QEMU's "quit" (its
// API has no such action): SIGTERM, then SIGKILL should it still be there
// after a grace period (3 s); it waits until the process is gone or ctx
// ends. Quitting a VMM that has already exited returns nil.
func (i *Instance) Quit(ctx context.Context) error {
	if i.Exited() {
		return nil
	}
	if err := i.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("quit vmm: %w", err)
	}
	grace := time.AfterFunc(quitGrace, func() { i.Signal(syscall.SIGKILL) })
	defer grace.Stop()
	if err := i.WaitExit(ctx); err != nil {
		return fmt.Errorf("quit vmm: %w", err)
	}
	return nil
}
