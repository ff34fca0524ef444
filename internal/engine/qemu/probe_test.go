package qemu

import (
	"banger/internal/engine/vmmproc"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeQEMU writes a shell script standing in for QEMU: it records its argv
// and pid, then runs body.
func fakeQEMU(t *testing.T, body string) (bin, argvFile, pidFile string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "qemu-fake")
	argvFile = filepath.Join(dir, "argv")
	pidFile = filepath.Join(dir, "pid")
	script := "#!/bin/sh\necho \"$@\" > " + argvFile + "\necho $$ > " + pidFile + "\n" + body + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argvFile, pidFile
}

// probeFixture returns a fake kernel and an openable stand-in for /dev/kvm.
func probeFixture(t *testing.T) (vmlinux, kvm string) {
	t.Helper()
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	dir := t.TempDir()
	vmlinux = filepath.Join(dir, "vmlinux")
	kvm = filepath.Join(dir, "kvm")
	os.WriteFile(vmlinux, []byte("ELF"), 0o644)
	os.WriteFile(kvm, nil, 0o600)
	return vmlinux, kvm
}

func assertProbeKilled(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("fake qemu never ran: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if _, err := vmmproc.StartTime(pid); err == nil {
		t.Errorf("probe vmm %d still running", pid)
	}
}

func TestProbeKVMBooted(t *testing.T) {
	vmlinux, kvm := probeFixture(t)
	// The panic line arrives, and the VMM would linger: it must be killed.
	bin, argvFile, pidFile := fakeQEMU(t, `echo "[    0.000000] Linux version 6.1.0"
echo "[    0.412000] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
exec sleep 60`)
	ok, detail, err := probeKVM(context.Background(), bin, vmlinux, kvm, 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("probe = %v, %q, %v; want ok", ok, detail, err)
	}
	if !strings.Contains(detail, `"Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"`) {
		t.Errorf("detail = %q", detail)
	}
	assertProbeKilled(t, pidFile)
	argv, _ := os.ReadFile(argvFile)
	for _, want := range []string{"-accel kvm", "-cpu host", "-kernel " + vmlinux, "-append console=ttyS0 panic=-1", "-no-reboot", "-serial stdio", "-nodefaults"} {
		if !strings.Contains(string(argv), want) {
			t.Errorf("probe argv %q lacks %q", argv, want)
		}
	}
	if strings.Contains(string(argv), "-drive") || strings.Contains(string(argv), "-initrd") {
		t.Errorf("probe argv has disks or an initramfs: %q", argv)
	}
}

// The panic line is the last thing QEMU prints before exiting: it must not
// be lost.
func TestProbeKVMBootedThenExited(t *testing.T) {
	vmlinux, kvm := probeFixture(t)
	bin, _, _ := fakeQEMU(t, `echo "[    0.4] Kernel panic - not syncing: VFS: Unable to mount root fs"; exit 0`)
	ok, detail, err := probeKVM(context.Background(), bin, vmlinux, kvm, 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("probe = %v, %q, %v; want ok", ok, detail, err)
	}
}

func TestProbeKVMInternalError(t *testing.T) {
	vmlinux, kvm := probeFixture(t)
	bin, _, pidFile := fakeQEMU(t, `echo "KVM internal error. Suberror: 1" >&2
echo "extra data[0]: 0x0000000000000001" >&2
echo "emulation failure" >&2
exec sleep 60`)
	ok, detail, err := probeKVM(context.Background(), bin, vmlinux, kvm, 10*time.Second)
	if err != nil || ok {
		t.Fatalf("probe = %v, %q, %v; want not ok", ok, detail, err)
	}
	if !strings.Contains(detail, "KVM internal error. Suberror: 1") {
		t.Errorf("detail = %q", detail)
	}
	assertProbeKilled(t, pidFile)
}

func TestProbeKVMQEMUFails(t *testing.T) {
	vmlinux, kvm := probeFixture(t)
	bin, _, _ := fakeQEMU(t, `echo "qemu-system-x86_64: -accel kvm: Could not access KVM kernel module: Permission denied" >&2
echo "qemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied" >&2
exit 1`)
	ok, detail, err := probeKVM(context.Background(), bin, vmlinux, kvm, 10*time.Second)
	if err != nil || ok || !strings.Contains(detail, "Could not access KVM kernel module") {
		t.Fatalf("probe = %v, %q, %v", ok, detail, err)
	}
	// Any other early exit is a failure too, with QEMU's words.
	bin, _, _ = fakeQEMU(t, `echo "qemu-system-x86_64: something else broke" >&2; exit 1`)
	ok, detail, err = probeKVM(context.Background(), bin, vmlinux, kvm, 10*time.Second)
	if err != nil || ok || !strings.Contains(detail, "exited under kvm before the kernel booted: qemu-system-x86_64: something else broke") {
		t.Fatalf("probe = %v, %q, %v", ok, detail, err)
	}
}

func TestProbeKVMTimeout(t *testing.T) {
	vmlinux, kvm := probeFixture(t)
	// A wedged guest: some console output, never the end of boot.
	bin, _, pidFile := fakeQEMU(t, `echo "[    0.0] Linux version 6.1.0"; exec sleep 60`)
	start := time.Now()
	ok, detail, err := probeKVM(context.Background(), bin, vmlinux, kvm, 300*time.Millisecond)
	if err != nil || ok || !strings.Contains(detail, "within 300ms") {
		t.Fatalf("probe = %v, %q, %v", ok, detail, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("probe took %s", d)
	}
	assertProbeKilled(t, pidFile)
}

func TestProbeKVMCallerCancel(t *testing.T) {
	vmlinux, kvm := probeFixture(t)
	bin, _, pidFile := fakeQEMU(t, `exec sleep 60`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := probeKVM(ctx, bin, vmlinux, kvm, 10*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	assertProbeKilled(t, pidFile)
}

func TestProbeKVMNoDevice(t *testing.T) {
	vmlinux, _ := probeFixture(t)
	ok, detail, err := probeKVM(context.Background(), "/nonexistent/qemu", vmlinux, filepath.Join(t.TempDir(), "kvm"), time.Second)
	if err != nil || ok || !strings.Contains(detail, "no such file or directory") {
		t.Fatalf("probe = %v, %q, %v", ok, detail, err)
	}
}

func TestProbeKVMMissingKernel(t *testing.T) {
	_, kvm := probeFixture(t)
	if _, _, err := probeKVM(context.Background(), "/bin/true", "/nonexistent/vmlinux", kvm, time.Second); err == nil {
		t.Fatal("missing kernel: no error")
	}
}
