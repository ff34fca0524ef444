package qemu

import (
	"golang.org/x/sys/unix"

	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/engine"
	"banger/internal/engine/vmmproc"
	"banger/internal/testreq"
)

// These tests run the real QEMU, but boot no kernel: a microvm without
// -kernel runs its firmware (qboot), which finds nothing to boot and idles.
// That exercises daemonizing, pidfiles, QMP, adoption and teardown in well
// under a second per VM, without a guest image.

func requireQEMU(t *testing.T) string {
	t.Helper()
	return testreq.RequireTools(t, "apt-get install qemu-system-x86", defaultBinary)[0]
}

// Environment of the tests that boot a real kernel (make integration sets
// both): bootEnv says they must run, vmlinuxEnv names the ELF vmlinux.
const (
	bootEnv    = "BANGER_TEST_BOOT"
	vmlinuxEnv = "BANGER_TEST_VMLINUX"
)

// bootKernel returns the vmlinux for a test that boots one. Unit runs
// never boot a VM: without BANGER_TEST_VMLINUX the test skips, and says
// so, unless BANGER_TEST_BOOT=1 (make integration, part of make test)
// requires it, which makes its absence a failure.
func bootKernel(t *testing.T) string {
	t.Helper()
	vmlinux := os.Getenv(vmlinuxEnv)
	if vmlinux == "" {
		if os.Getenv(bootEnv) == "1" {
			t.Fatalf("%s=1 but %s is not set: make integration extracts it from the fixture kernel package", bootEnv, vmlinuxEnv)
		}
		t.Skipf("skipping: boots a real kernel; set %s to an ELF vmlinux (make integration does, from the fixture kernel)", vmlinuxEnv)
	}
	if _, err := os.Stat(vmlinux); err != nil {
		t.Fatalf("%s: %v", vmlinuxEnv, err)
	}
	return vmlinux
}

// firmwareSpec is a kernel-less VM whose files live in a fresh directory.
func firmwareSpec(t *testing.T) engine.Spec {
	t.Helper()
	dir := t.TempDir()
	s := engine.Spec{
		ID:          "test",
		Name:        "fw-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")),
		VCPU:        1,
		MemoryMiB:   64,
		AgentSocket: filepath.Join(dir, "agent.sock"),
		QMPSocket:   filepath.Join(dir, "qmp.sock"),
		SerialLog:   filepath.Join(dir, "serial.log"),
		PIDFile:     filepath.Join(dir, "qemu.pid"),
		VMMLog:      filepath.Join(dir, "qemu.log"),
		Accel:       engine.AccelTCG,
	}
	// Never leave a VMM behind, whatever the test did.
	t.Cleanup(func() { cleanup(s) })
	return s
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// assertGone checks that no process serves the spec's QMP socket (zombies
// awaiting their reaper, init, count as gone) and nothing is left on disk.
func assertGone(t *testing.T, spec engine.Spec, pid int) {
	t.Helper()
	if pid > 0 {
		if _, err := vmmproc.StartTime(pid); err == nil && isVMMFor(procCmdline(pid), spec.QMPSocket) {
			t.Errorf("vmm pid %d still running", pid)
		}
	}
	if pids := findVMMs(spec.QMPSocket); len(pids) > 0 {
		t.Errorf("vmm processes left: %v", pids)
	}
	for _, p := range []string{spec.PIDFile, spec.QMPSocket, spec.AgentSocket} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s left behind", p)
		}
	}
}

func waitDone(t *testing.T, inst engine.Instance, what string) {
	t.Helper()
	select {
	case <-inst.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Done not closed", what)
	}
}

func TestIntegrationStartAdoptQuit(t *testing.T) {
	bin := requireQEMU(t)
	spec := firmwareSpec(t)
	ctx := testCtx(t)

	d1 := New(bin)
	start := time.Now()
	inst, err := d1.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Start took %s", time.Since(start).Round(time.Millisecond))
	defer inst.Close()
	pid := inst.PID()
	if pid <= 0 {
		t.Fatalf("PID = %d", pid)
	}
	if got, err := readPIDFile(spec.PIDFile); err != nil || got != pid {
		t.Errorf("pidfile = %d, %v; want %d", got, err, pid)
	}
	if !isVMMFor(procCmdline(pid), spec.QMPSocket) {
		t.Errorf("pid %d cmdline %q does not name the qmp socket", pid, procCmdline(pid))
	}
	// Detached: QEMU has a session of its own, so nothing aimed at the
	// daemon's session or process group reaches it.
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Errorf("vmm session = %d, %v; want its own (%d)", sid, err, pid)
	}
	// Confined: QEMU's seccomp filter is on, and under root it runs as
	// the VM's own uid.
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
		if !regexp.MustCompile(`(?m)^Seccomp:\s+2$`).Match(st) {
			t.Errorf("vmm is not under a seccomp filter:\n%s", st)
		}
		if os.Geteuid() == 0 && !regexp.MustCompile(`(?m)^Uid:\s+`+strings.Split(VMMUser(spec.ID), ":")[0]+`\s`).Match(st) {
			t.Errorf("vmm does not run as %s:\n%s", VMMUser(spec.ID), st)
		}
	}
	// The agent socket is listening as soon as Start returns.
	if c, err := net.Dial("unix", spec.AgentSocket); err != nil {
		t.Errorf("agent socket: %v", err)
	} else {
		c.Close()
	}
	// QEMU's stderr goes to the VMM log.
	if link, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/2"); err != nil || link != spec.VMMLog {
		t.Errorf("vmm stderr = %q, %v; want %s", link, err, spec.VMMLog)
	}
	select {
	case <-inst.Done():
		t.Fatal("Done closed for a running vmm")
	case <-time.After(200 * time.Millisecond):
	}

	// QEMU serves one QMP client at a time: adopting while the first
	// handle is open fails (here by the caller's deadline).
	d2 := New(bin)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if extra, err := d2.Adopt(short, spec); err == nil {
		extra.Close()
		t.Error("Adopt succeeded while another QMP client was connected")
	}
	cancel()

	// Dropping the handle leaves the VM running.
	if err := inst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := inst.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := vmmproc.StartTime(pid); err != nil {
		t.Fatalf("vmm died with its handle: %v", err)
	}
	if err := inst.Kill(syscall.SIGKILL); err == nil {
		t.Error("Kill through a closed handle succeeded")
	}

	// A second driver value (a restarted daemon) re-attaches, even
	// without the pidfile.
	pidfile, _ := os.ReadFile(spec.PIDFile)
	os.Remove(spec.PIDFile)
	adopted, err := d2.Adopt(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer adopted.Close()
	if adopted.PID() != pid {
		t.Errorf("adopted PID = %d, want %d", adopted.PID(), pid)
	}
	os.WriteFile(spec.PIDFile, pidfile, 0o644)
	if err := adopted.Quit(ctx); err != nil {
		t.Fatalf("Quit: %v", err)
	}
	waitDone(t, adopted, "after Quit")
	if r := adopted.(*Instance).ShutdownReason(); r != "host-qmp-quit" {
		t.Errorf("ShutdownReason = %q, want host-qmp-quit", r)
	}
	if err := adopted.Quit(ctx); err != nil {
		t.Errorf("Quit of an exited vmm: %v", err)
	}
	if err := adopted.Kill(syscall.SIGKILL); err != nil {
		t.Errorf("Kill of an exited vmm: %v", err)
	}
	assertGone(t, spec, pid)

	if _, err := d2.Adopt(ctx, spec); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("Adopt after quit: %v, want ErrNotRunning", err)
	}
}

func TestIntegrationKill(t *testing.T) {
	bin := requireQEMU(t)
	spec := firmwareSpec(t)
	ctx := testCtx(t)
	inst, err := New(bin).Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	pid := inst.PID()
	if err := inst.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, inst, "after SIGKILL")
	if r := inst.(*Instance).ShutdownReason(); r != "" {
		t.Errorf("ShutdownReason after SIGKILL = %q, want empty", r)
	}
	// SIGKILL leaves QEMU no chance to clean up; the watcher removed the
	// pidfile. The sockets stay until the next Start.
	if _, err := os.Stat(spec.PIDFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pidfile after SIGKILL: %v", err)
	}
	if _, err := New(bin).Adopt(ctx, spec); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("Adopt after kill: %v, want ErrNotRunning", err)
	}
	// A stale socket and pidfile do not stop the next start.
	os.WriteFile(spec.PIDFile, []byte(strconv.Itoa(pid)+"\n"), 0o644)
	again, err := New(bin).Start(ctx, spec)
	if err != nil {
		t.Fatalf("restart over stale files: %v", err)
	}
	defer again.Close()
	if err := again.Kill(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitDone(t, again, "after SIGTERM")
	if r := again.(*Instance).ShutdownReason(); r != "host-signal" {
		t.Errorf("ShutdownReason after SIGTERM = %q, want host-signal", r)
	}
	assertGone(t, spec, again.PID())
}

func TestIntegrationStartTwiceRefused(t *testing.T) {
	bin := requireQEMU(t)
	spec := firmwareSpec(t)
	ctx := testCtx(t)
	inst, err := New(bin).Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if _, err := New(bin).Start(ctx, spec); err == nil || !strings.Contains(err.Error(), "already running as pid "+strconv.Itoa(inst.PID())) {
		t.Errorf("second Start: %v", err)
	}
	if _, err := vmmproc.StartTime(inst.PID()); err != nil {
		t.Error("refused Start harmed the running vmm")
	}
	if err := inst.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, spec, inst.PID())
}

func TestIntegrationStartFailuresLeaveNothing(t *testing.T) {
	bin := requireQEMU(t)
	ctx := testCtx(t)
	d := New(bin)

	t.Run("missing kernel", func(t *testing.T) {
		spec := firmwareSpec(t)
		spec.Kernel = filepath.Join(t.TempDir(), "no-such-vmlinux")
		_, err := d.Start(ctx, spec)
		t.Logf("error: %v", err)
		if err == nil || !strings.Contains(err.Error(), "kernel") || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v", err)
		}
		assertGone(t, spec, 0)
	})
	t.Run("socket path too long", func(t *testing.T) {
		spec := firmwareSpec(t)
		dir := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
		os.MkdirAll(dir, 0o755)
		spec.QMPSocket = filepath.Join(dir, "qmp.sock")
		_, err := d.Start(ctx, spec)
		t.Logf("error: %v", err)
		if err == nil || !strings.Contains(err.Error(), "unix sockets allow at most 107") {
			t.Fatalf("err = %v", err)
		}
		assertGone(t, spec, 0)
	})
	t.Run("qemu rejects the disk", func(t *testing.T) {
		spec := firmwareSpec(t)
		spec.RootDisk = filepath.Join(t.TempDir(), "root.qcow2")
		os.WriteFile(spec.RootDisk, []byte("this is not a qcow2 image"), 0o644)
		_, err := d.Start(ctx, spec)
		// QEMU's own message reaches the caller.
		t.Logf("error: %v", err)
		if err == nil || !strings.Contains(err.Error(), "qcow2") || !strings.Contains(err.Error(), "qemu failed") {
			t.Fatalf("err = %v", err)
		}
		assertGone(t, spec, 0)
	})
	t.Run("bad binary", func(t *testing.T) {
		spec := firmwareSpec(t)
		_, err := New(filepath.Join(t.TempDir(), "no-qemu")).Start(ctx, spec)
		t.Logf("error: %v", err)
		if err == nil {
			t.Fatal("started a missing binary")
		}
		assertGone(t, spec, 0)
	})
	t.Run("cancelled mid-start", func(t *testing.T) {
		// Whatever point of QEMU's start-up the deadline hits, nothing
		// may survive it.
		for _, delay := range []time.Duration{0, 5 * time.Millisecond, 20 * time.Millisecond, 60 * time.Millisecond} {
			spec := firmwareSpec(t)
			cctx, cancel := context.WithTimeout(ctx, delay)
			inst, err := d.Start(cctx, spec)
			cancel()
			t.Logf("deadline %s: %v", delay, err)
			if err == nil {
				// Start won the race; that is fine, but clean up.
				inst.Quit(ctx)
				inst.Close()
			}
			time.Sleep(100 * time.Millisecond) // let any stray fork show up
			assertGone(t, spec, 0)
		}
	})
}

func TestIntegrationAdoptRejects(t *testing.T) {
	bin := requireQEMU(t)
	ctx := testCtx(t)
	d := New(bin)

	spec := firmwareSpec(t)
	if _, err := d.Adopt(ctx, spec); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("no pidfile: %v, want ErrNotRunning", err)
	}

	// A pid that belongs to something else (a recycled pid) is refused.
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	os.WriteFile(spec.PIDFile, []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o644)
	if _, err := d.Adopt(ctx, spec); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("foreign pid: %v, want ErrNotRunning", err)
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Error("Adopt harmed the foreign process")
	}

	// Another VM's QEMU is refused too.
	vm2 := firmwareSpec(t)
	inst2, err := d.Start(ctx, vm2)
	if err != nil {
		t.Fatal(err)
	}
	defer inst2.Close()
	os.WriteFile(spec.PIDFile, []byte(strconv.Itoa(inst2.PID())+"\n"), 0o644)
	if _, err := d.Adopt(ctx, spec); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("other vm's qemu: %v, want ErrNotRunning", err)
	}
	if err := inst2.Quit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationUserNetHostFwd(t *testing.T) {
	bin := requireQEMU(t)
	ctx := testCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	spec := firmwareSpec(t)
	spec.NICs = []engine.NIC{{User: true, Restrict: true, MAC: "52:54:00:00:00:01", HostFwds: []engine.HostFwd{{HostPort: port, GuestPort: 22}}}}
	inst, err := New(bin).Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	// slirp listens on the forwarded host port (loopback only).
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
	if err != nil {
		t.Errorf("hostfwd port %d not listening: %v", port, err)
	} else {
		c.Close()
	}
	if err := inst.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, spec, inst.PID())
}

func TestIntegrationVersionAndMicrovm(t *testing.T) {
	bin := requireQEMU(t)
	ctx := testCtx(t)
	v, err := Version(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(v) {
		t.Errorf("Version = %q", v)
	}
	ok, err := SupportsMicrovm(ctx, bin)
	if err != nil || !ok {
		t.Errorf("SupportsMicrovm = %v, %v", ok, err)
	}
	if _, err := Version(ctx, filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("Version of a missing binary succeeded")
	}
}

// TestBootProbeKVM runs the real KVM probe on a real kernel. Where
// /dev/kvm cannot be opened the probe must say so without booting; the
// boot itself is then a subtest that skips with that reason (it shows in
// make test's list of skipped tests). Where it can be opened the probe
// boots the kernel under KVM and must reach a verdict, with a reason when
// KVM does not work (a nested KVM that cannot run a stock kernel), and
// leave no VMM behind. Needs BANGER_TEST_VMLINUX (see bootKernel).
func TestBootProbeKVM(t *testing.T) {
	vmlinux := bootKernel(t)
	bin := requireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*ProbeTimeout)
	defer cancel()
	start := time.Now()
	ok, detail, err := ProbeKVM(ctx, bin, vmlinux)
	t.Logf("ProbeKVM: ok=%v detail=%q err=%v in %s", ok, detail, err, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if problem := KVMDeviceProblem(); problem != "" {
		if ok || detail != problem {
			t.Errorf("without a usable /dev/kvm: ok=%v detail=%q, want false and %q", ok, detail, problem)
		}
		t.Run("boot under KVM", func(t *testing.T) {
			t.Skipf("skipping: %s: the probe's guest boot under KVM is not exercised on this machine", problem)
		})
		return
	}
	if !ok && detail == "" {
		t.Error("KVM judged unusable without a reason")
	}
	if pids := findProbe(vmlinux); len(pids) > 0 {
		t.Errorf("probe vmm left running: %v", pids)
	}
}

func findProbe(vmlinux string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		argv := procCmdline(pid)
		if len(argv) > 0 && strings.Contains(argv[0], "qemu") && strings.Contains(strings.Join(argv, " "), "-kernel "+vmlinux+" ") && strings.Contains(strings.Join(argv, " "), "-accel kvm") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestBootKernelPanicEndsVMM boots a real kernel under TCG with no root
// disk: the kernel panics, panic=-1 makes it reset, and -no-reboot turns the
// reset into a VMM exit. Needs BANGER_TEST_VMLINUX, like TestBootProbeKVM.
func TestBootKernelPanicEndsVMM(t *testing.T) {
	vmlinux := bootKernel(t)
	bin := requireQEMU(t)
	spec := firmwareSpec(t)
	spec.Kernel = vmlinux
	spec.VCPU, spec.MemoryMiB = 2, 256
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	inst, err := New(bin).Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	select {
	case <-inst.Done():
	case <-ctx.Done():
		inst.Kill(syscall.SIGKILL)
		t.Fatal("guest did not panic and exit in time")
	}
	t.Logf("panic to VMM exit after %s, shutdown reason %q", time.Since(start).Round(time.Millisecond), inst.(*Instance).ShutdownReason())
	serial, _ := os.ReadFile(spec.SerialLog)
	if !strings.Contains(string(serial), "Kernel panic") {
		t.Errorf("serial log has no panic:\n%s", vmmproc.LastLines(string(serial), 5))
	}
	if !strings.Contains(string(serial), "tsc_early_khz=") {
		t.Log("no TSC hint on the command line")
	}
	assertGone(t, spec, inst.PID())
}
