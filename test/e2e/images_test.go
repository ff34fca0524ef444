//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNoInitImage: an image without an init system boots with the agent
// as PID 1, and exec works in it.
func TestNoInitImage(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	tree := filepath.Join(t.TempDir(), "tree")
	// A hardlinked copy of the fixture tree is instant; dropping names
	// from it leaves the fixture untouched.
	if out, err := exec.CommandContext(ctx, "cp", "-al", filepath.Join(os.Getenv("BANGER_FIXTURES"), "rootfs"), tree).CombinedOutput(); err != nil {
		t.Fatalf("copy tree: %v %s", err, out)
	}
	for _, p := range []string{"sbin/init", "usr/sbin/init", "lib/systemd/systemd", "usr/lib/systemd/systemd"} {
		os.Remove(filepath.Join(tree, p))
	}
	must(t, e.cli(ctx, "", "image", "build", "noinit", "--from-dir", tree, "--size", "2G"))
	t.Cleanup(func() { e.cli(ctxFor(t, time.Minute), "", "image", "rm", "noinit") })
	r := must(t, e.cli(ctx, "", "vm", "run", "--rm", "--image", "noinit", "--", "sh", "-c", "cat /proc/1/comm; sleep 0.2 & wait; echo done"))
	if r.stdout != "banger-agent\ndone\n" {
		t.Errorf("PID 1 should be the agent: %q", r.stdout)
	}
}

// TestImageInUse: image and kernel removal is refused while something uses
// them; an unknown image is a clear error that creates nothing.
func TestImageInUse(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	must(t, e.cli(ctx, "", "vm", "create", "--no-start", "--name", "holds-image"))
	t.Cleanup(func() { e.cli(ctxFor(t, time.Minute), "", "vm", "delete", "holds-image") })
	r := e.cli(ctx, "", "image", "rm", "debian")
	if r.code == 0 || !strings.Contains(r.stderr, "used by") {
		t.Errorf("image rm of a used image: %s", r)
	}
	r = e.cli(ctx, "", "kernel", "rm", "debian")
	if r.code == 0 || !strings.Contains(r.stderr, "used by") {
		t.Errorf("kernel rm of a used kernel: %s", r)
	}
	before := len(vmNames(t, ctx))
	r = e.cli(ctx, "", "vm", "create", "--image", "no-such-image", "--name", "orphan")
	if r.code == 0 || !strings.Contains(r.stderr, "not found") || !strings.Contains(r.stderr, "(op ") {
		t.Errorf("unknown image: want not found with an op id, got %s", r)
	}
	if i := strings.Index(r.stderr, "(op "); i >= 0 {
		id := strings.TrimSuffix(strings.Fields(r.stderr[i+4:])[0], ")")
		if !strings.Contains(e.daemonLog(), "op="+id) {
			t.Errorf("op id %s is not in the daemon log", id)
		}
	}
	if len(vmNames(t, ctx)) != before {
		t.Errorf("a failed create left a row")
	}
	r = must(t, e.cli(ctx, "", "image", "list"))
	if !strings.Contains(r.stdout, "debian") {
		t.Errorf("image list: %s", r.stdout)
	}
	r = must(t, e.cli(ctx, "", "kernel", "list"))
	if !strings.Contains(r.stdout, "6.1") {
		t.Errorf("kernel list: %s", r.stdout)
	}
}

// TestRunRmBootFailure: a VM whose boot fails is deleted by --rm, and the
// error says where to look.
func TestRunRmBootFailure(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	// An ext4 image whose group descriptors are destroyed: the magic is
	// fine (register accepts it) but the guest cannot mount it. 4 KiB
	// blocks put the descriptors in block 1 (a small file system would
	// otherwise get 1 KiB blocks, and the overwrite would miss them; an
	// empty but mountable image now boots, with the agent as PID 1).
	img := filepath.Join(t.TempDir(), "broken.ext4")
	if out, err := exec.Command("sh", "-c", "truncate -s 64M "+img+" && mkfs.ext4 -q -F -b 4096 "+img+" && dd if=/dev/urandom of="+img+" bs=4096 seek=1 count=8 conv=notrunc status=none").CombinedOutput(); err != nil {
		t.Fatalf("make broken image: %v %s", err, out)
	}
	must(t, e.cli(ctx, "", "image", "register", "broken", "--rootfs", img, "--kernel", "debian"))
	t.Cleanup(func() { e.cli(ctxFor(t, time.Minute), "", "image", "rm", "broken") })
	r := e.cli(ctx, "", "vm", "run", "--rm", "--image", "broken", "--name", "bootfail", "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "vm logs") {
		t.Errorf("boot failure: want an error pointing at the logs, got %s", r)
	}
	if _, ok := vmNames(t, ctx)["bootfail"]; ok {
		t.Errorf("--rm left the VM whose boot failed")
	}
}

// TestCheckMigrations: bangerd --check-migrations verifies the store and exits.
func TestCheckMigrations(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "bangerd"), "--check-migrations")
	cmd.Env = e.environ
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "migrations ok") {
		t.Errorf("check-migrations: %v %s", err, out)
	}
}

// TestFirecrackerUnavailable: on a host without Firecracker (these), asking
// for it is a clear error that creates nothing, and doctor says why.
func TestFirecrackerUnavailable(t *testing.T) {
	ctx := ctxFor(t, 2*time.Minute)
	if _, err := exec.LookPath("firecracker"); err == nil {
		t.Skip("firecracker is installed here")
	}
	before := len(vmNames(t, ctx))
	r := e.cli(ctx, "", "vm", "create", "--name", "fcvm", "--engine", "firecracker", "--network", "none")
	if r.code == 0 || !strings.Contains(r.stderr, "firecracker") {
		t.Errorf("firecracker create: %s", r)
	}
	if len(vmNames(t, ctx)) != before {
		t.Errorf("refused create left a row")
	}
	d := e.cli(ctx, "", "doctor")
	if !strings.Contains(d.stdout, "WARN  firecracker") {
		t.Errorf("doctor should warn that firecracker is not usable:\n%s", d.stdout)
	}
}

// TestFirecrackerLifecycle runs the engine-independent lifecycle on
// Firecracker where the machine can run it: exec, exit codes, data kept
// across stop/start, delete.
func TestFirecrackerLifecycle(t *testing.T) {
	if _, err := exec.LookPath("firecracker"); err != nil {
		t.Skip("firecracker is not installed here (no reachable registry has it)")
	}
	ctx := ctxFor(t, 10*time.Minute)
	if d := e.cli(ctx, "", "doctor"); !strings.Contains(d.stdout, "PASS  firecracker") || !strings.Contains(d.stdout, "KVM usable") {
		t.Skip("firecracker needs a KVM that boots guests; doctor says:\n" + d.stdout)
	}
	vm := newVM(t, ctx, "fcbox", "--engine", "firecracker", "--network", "none")
	r := must(t, e.cli(ctx, "", "vm", "show", vm))
	if !strings.Contains(r.stdout, "firecracker") {
		t.Errorf("vm show: %s", r.stdout)
	}
	if r := e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", "echo kept > /root/marker; exit 42"); r.code != 42 {
		t.Errorf("exit code: %s", r)
	}
	must(t, e.cli(ctx, "", "vm", "stop", vm))
	must(t, e.cli(ctx, "", "vm", "start", vm))
	if out := must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "cat", "/root/marker")).stdout; out != "kept\n" {
		t.Errorf("data lost across stop/start: %q", out)
	}
}
