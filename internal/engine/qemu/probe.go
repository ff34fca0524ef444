package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// ProbeTimeout is how long ProbeKVM waits for a sign of life from the guest
// kernel. Under a working KVM the probe kernel panics (no root disk) well
// within a second.
const ProbeTimeout = 15 * time.Second

// Lines on the probe's serial console that only a kernel that booted far
// prints; the panic over the missing root filesystem is the usual one.
var probeBooted = []string{
	"Kernel panic",
	"VFS: Unable to mount root",
	"VFS: Cannot open root device",
	"Run /init",
	"Freeing unused kernel",
}

// Lines on QEMU's stderr that mean KVM cannot run this guest.
var probeFailed = []string{
	"KVM internal error",
	"emulation failure",
	"Could not access KVM kernel module",
	"failed to initialize kvm",
	"failed to initialize KVM",
}

// ProbeKVM checks that KVM can actually boot a guest here, which an existing
// /dev/kvm does not prove: a nested or paravirtual KVM may fail on the first
// unusual instruction. It boots vmlinux under KVM with no disks and no
// initramfs (console on ttyS0, panic=-1, -no-reboot) and watches:
//
//   - the kernel reaching the panic over its missing root filesystem (or
//     another late-boot line) means KVM works: ok=true;
//   - /dev/kvm failing to open, QEMU reporting "KVM internal error" or
//     "emulation failure", QEMU exiting first, or nothing within
//     ProbeTimeout means it does not: ok=false, with the reason in detail.
//
// err is non-nil only when the probe could not be run (no kernel, no QEMU,
// ctx ended). The probe VMM is always killed before ProbeKVM returns.
func ProbeKVM(ctx context.Context, qemuBinary, vmlinux string) (ok bool, detail string, err error) {
	return probeKVM(ctx, qemuBinary, vmlinux, "/dev/kvm", ProbeTimeout)
}

// KVMDeviceProblem says why /dev/kvm cannot be opened read-write by this
// process ("" when it can). It is instant, unlike a probe boot, and its
// answer changes when the user's groups do: never cache it.
func KVMDeviceProblem() string { return openKVM("/dev/kvm") }

func openKVM(dev string) string {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Sprintf("cannot open %s: %v", dev, err)
	}
	f.Close()
	return ""
}

func probeKVM(ctx context.Context, qemuBinary, vmlinux, kvmDevice string, timeout time.Duration) (ok bool, detail string, err error) {
	if _, err := os.Stat(vmlinux); err != nil {
		return false, "", fmt.Errorf("probe kvm: kernel: %w", err)
	}
	if detail := openKVM(kvmDevice); detail != "" {
		return false, detail, nil
	}
	if qemuBinary, err = findBinary(qemuBinary); err != nil {
		return false, "", fmt.Errorf("probe kvm: %w", err)
	}

	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Own pipes rather than exec's: QEMU's last words (the panic line)
	// arrive right before it exits and must not be lost to Wait closing
	// the read ends.
	outR, outW, err := os.Pipe()
	if err != nil {
		return false, "", fmt.Errorf("probe kvm: %w", err)
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return false, "", fmt.Errorf("probe kvm: %w", err)
	}
	defer errR.Close()
	cmd := exec.CommandContext(pctx, qemuBinary, probeArgs(vmlinux)...)
	cmd.Stdout, cmd.Stderr = outW, errW
	start := time.Now()
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		return false, "", fmt.Errorf("probe kvm: run %s: %w", qemuBinary, err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()

	type line struct {
		stderr bool
		text   string
	}
	lines := make(chan line)
	quit := make(chan struct{})
	defer close(quit)
	var readers sync.WaitGroup
	scan := func(r io.Reader, isErr bool) {
		defer readers.Done()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 4096), 1<<20)
		for sc.Scan() {
			select {
			case lines <- line{isErr, sc.Text()}:
			case <-quit:
				return
			}
		}
	}
	readers.Add(2)
	go scan(outR, false)
	go scan(errR, true)
	eof := make(chan struct{})
	go func() {
		readers.Wait()
		close(eof)
	}()

	var consoleBytes int
	var errLines []string
	for {
		select {
		case l := <-lines:
			text := strings.TrimSpace(l.text)
			if l.stderr {
				errLines = append(errLines, text)
				if matchAny(text, probeFailed) {
					return false, fmt.Sprintf("qemu under kvm: %s (after %s)", text, since(start)), nil
				}
				continue
			}
			consoleBytes += len(l.text) + 1
			if matchAny(text, probeBooted) {
				return true, fmt.Sprintf("guest kernel booted under kvm in %s (%q)", since(start), trimLogPrefix(text)), nil
			}
		case <-eof:
			// Both pipes hit EOF: QEMU has exited (or closed its
			// output) without the kernel getting far.
			msg := strings.Join(errLines, "; ")
			if msg == "" {
				msg = "no error message"
			}
			return false, fmt.Sprintf("qemu exited under kvm before the kernel booted: %s", msg), nil
		case <-pctx.Done():
			if err := ctx.Err(); err != nil {
				return false, "", fmt.Errorf("probe kvm: %w", err)
			}
			return false, fmt.Sprintf("no sign of the guest kernel booting under kvm within %s (%d bytes of console output)", timeout, consoleBytes), nil
		}
	}
}

func probeArgs(vmlinux string) []string {
	return []string{
		"-machine", MachineKVM, "-accel", "kvm", "-cpu", "host",
		"-smp", "1", "-m", "256M",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", vmlinux, "-append", "console=ttyS0 panic=-1",
		"-serial", "stdio",
	}
}

func matchAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// trimLogPrefix drops a printk timestamp ("[    0.123456] ").
func trimLogPrefix(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		if i := strings.IndexByte(s, ']'); i > 0 {
			s = strings.TrimSpace(s[i+1:])
		}
	}
	return s
}

func since(t time.Time) time.Duration { return time.Since(t).Round(10 * time.Millisecond) }

// Version returns the version of qemuBinary as "major.minor.micro", from
// `qemuBinary --version`.
func Version(ctx context.Context, qemuBinary string) (string, error) {
	qemuBinary, err := findBinary(qemuBinary)
	if err != nil {
		return "", fmt.Errorf("qemu version: %w", err)
	}
	out, err := exec.CommandContext(ctx, qemuBinary, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("qemu version: %w", err)
	}
	v, err := parseVersion(string(out))
	if err != nil {
		return "", fmt.Errorf("qemu version: %w", err)
	}
	return v, nil
}

// parseVersion extracts "7.2.22" from "QEMU emulator version 7.2.22 (...)".
func parseVersion(out string) (string, error) {
	const marker = "version "
	first, _, _ := strings.Cut(out, "\n")
	i := strings.Index(first, marker)
	if i < 0 {
		return "", fmt.Errorf("unexpected output %.60q", first)
	}
	v := strings.Fields(first[i+len(marker):])
	if len(v) == 0 {
		return "", fmt.Errorf("unexpected output %.60q", first)
	}
	return v[0], nil
}

// SupportsMicrovm reports whether qemuBinary offers the microvm machine
// type, from `qemuBinary -machine help`.
func SupportsMicrovm(ctx context.Context, qemuBinary string) (bool, error) {
	qemuBinary, err := findBinary(qemuBinary)
	if err != nil {
		return false, fmt.Errorf("qemu machine list: %w", err)
	}
	out, err := exec.CommandContext(ctx, qemuBinary, "-machine", "help").Output()
	if err != nil {
		return false, fmt.Errorf("qemu machine list: %w", err)
	}
	return hasMachine(string(out), "microvm"), nil
}

func hasMachine(list, name string) bool {
	for _, l := range strings.Split(list, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

// KVMCacheFile is the file (under the state dir) where KVM probe verdicts
// are kept: a JSON object mapping KVMCacheKey to a KVMVerdict. The daemon
// writes it; doctor reads it.
const KVMCacheFile = "kvm-probe.json"

// KVMVerdict is one probe's result.
type KVMVerdict struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// KVMCacheKey keys a verdict by kernel file and QEMU binary (as
// configured), each with its size/mtime, so that a new kernel or QEMU
// build is probed again. lookPath resolves the binary (hosttools.Path).
func KVMCacheKey(kernel, qemuBinary string, lookPath func(string) (string, error)) string {
	k := kernel
	if fi, err := os.Stat(kernel); err == nil {
		k += fmt.Sprintf("|%d|%d", fi.Size(), fi.ModTime().UnixNano())
	}
	q := qemuBinary
	if p, err := lookPath(qemuBinary); err == nil {
		if fi, err := os.Stat(p); err == nil {
			q = fmt.Sprintf("%s|%d", p, fi.ModTime().UnixNano())
		}
	}
	return k + "|" + q
}
