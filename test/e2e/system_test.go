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

// TestSystemInstall: `banger system install` under a real systemd — the
// one in a guest, since this host's PID 1 is not systemd. The services
// start with their hardening, bangerd runs as the owner and reaches the
// root helper (which builds its bridge inside the guest), the owner's CLI
// finds the service's socket, a restart keeps the daemon's answers coming,
// and uninstall --purge removes banger but never the owner's ssh files.
func TestSystemInstall(t *testing.T) {
	ctx := ctxFor(t, 15*time.Minute)
	// The helper lists banger's nftables rules: the guest needs the
	// kernel's networking modules, which debootstrap images lack. They
	// come from the fixture's kernel package.
	deb := t.TempDir()
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", filepath.Join(os.Getenv("BANGER_FIXTURES"), "kernel/linux-image.deb"), deb).CombinedOutput(); err != nil {
		t.Fatalf("unpack the kernel package: %v %s", err, out)
	}
	kvers, _ := filepath.Glob(filepath.Join(deb, "lib/modules/*"))
	if len(kvers) != 1 {
		t.Fatalf("kernel package modules: %v", kvers)
	}
	mods, kver := kvers[0], filepath.Base(kvers[0])
	args := []string{"image", "build", "sysd", "--from-image", "debian", "--copy", e.bin + ":/usr/local/src/banger"}
	for _, m := range []string{"kernel/net", "kernel/lib", "kernel/drivers/net/tun.ko", "modules.builtin", "modules.order"} {
		args = append(args, "--copy", filepath.Join(mods, m)+":/lib/modules/"+kver+"/"+m)
	}
	must(t, e.cli(ctx, "", append(args,
		"--run", "depmod "+kver,
		"--run", "useradd --create-home --shell /bin/sh alice",
		"--run", "mkdir -p /home/alice/.ssh && echo keep > /home/alice/.ssh/config && chown -R alice: /home/alice/.ssh")...))
	t.Cleanup(func() { e.cli(ctxFor(t, time.Minute), "", "image", "rm", "sysd") })
	vm := newVM(t, ctx, "sysd", "--image", "sysd", "--network", "none")
	sh := func(script string) result {
		t.Helper()
		return e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", script)
	}
	mustSh := func(script string) string {
		t.Helper()
		r := sh(script)
		if r.code != 0 {
			t.Fatalf("%s: %s\nguest journal:\n%s", script, r, sh("journalctl -b --no-pager -u bangerd -u banger-helper | tail -40").stdout)
		}
		return r.stdout
	}
	// The guest's systemd must be up before we talk to it.
	mustSh("for i in $(seq 300); do s=$(systemctl is-system-running 2>/dev/null); case $s in running|degraded) exit 0;; esac; sleep 1; done; echo $s; exit 1")

	out := mustSh("/usr/local/src/banger/banger system install --dry-run --owner alice")
	for _, want := range []string{"/etc/systemd/system/bangerd.service", "/etc/systemd/system/banger-helper.service",
		"/usr/local/bin/banger-helper", "/etc/banger/install.json", "systemctl daemon-reload", "root"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run does not mention %q:\n%s", want, out)
		}
	}
	if sh("test -e /etc/systemd/system/bangerd.service || test -e /usr/local/bin/banger").code == 0 {
		t.Fatal("--dry-run wrote files")
	}

	mustSh("/usr/local/src/banger/banger system install --owner alice")
	mustSh("systemctl is-active bangerd.service banger-helper.service")
	// The dry run showed the units root now runs, in full, as installed.
	for _, unit := range []string{"banger-helper.service", "bangerd.service"} {
		path := "/etc/systemd/system/" + unit
		if text := mustSh("cat " + path); !strings.Contains(out, "==> "+path+" <==\n"+text) {
			t.Errorf("the dry run did not show %s as installed:\n%s", path, text)
		}
	}
	if u := strings.TrimSpace(mustSh("stat -c %U /proc/$(systemctl show -P MainPID bangerd.service)")); u != "alice" {
		t.Errorf("bangerd runs as %q, want alice", u)
	}
	// The owner's CLI finds the service (no XDG_RUNTIME_DIR games), and
	// the daemon uses the helper for bridge networking.
	mustSh("su alice -c 'banger daemon status'")
	if out := mustSh("journalctl -b --no-pager -u bangerd"); !strings.Contains(out, "through the privileged helper") {
		t.Errorf("bangerd does not use the helper:\n%s", out)
	}
	// As root: without D-Bus in this guest, only root reaches systemd.
	if out := mustSh("banger system status"); !strings.Contains(out, "active") {
		t.Errorf("system status:\n%s", out)
	}
	// A stand-in for a VMM: a process in bangerd's cgroup, as the QEMU
	// processes bangerd starts are. Restarting or stopping the service
	// must leave it alone (KillMode=process, SendSIGKILL=no).
	cg := strings.TrimSpace(mustSh("systemctl show -P ControlGroup bangerd.service"))
	mustSh("sleep 600 </dev/null >/dev/null 2>&1 & echo $! > /run/fake-vmm.pid; echo $! > /sys/fs/cgroup" + cg + "/cgroup.procs")
	pid := strings.TrimSpace(mustSh("systemctl show -P MainPID bangerd.service"))
	mustSh("/usr/local/bin/banger system restart")
	mustSh("for i in $(seq 120); do su alice -c 'banger daemon status' >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1")
	if p := strings.TrimSpace(mustSh("systemctl show -P MainPID bangerd.service")); p == pid {
		t.Errorf("system restart did not restart bangerd (pid %s)", p)
	}
	if r := sh("kill -0 $(cat /run/fake-vmm.pid)"); r.code != 0 {
		t.Errorf("restarting bangerd killed a process of its cgroup (a VMM would have died)")
	}
	mustSh("systemctl stop bangerd.service")
	if r := sh("kill -0 $(cat /run/fake-vmm.pid)"); r.code != 0 {
		t.Errorf("stopping bangerd killed a process of its cgroup (a VMM would have died)")
	}
	mustSh("systemctl start bangerd.service && kill $(cat /run/fake-vmm.pid)")

	// The helper's bridge (made here by hand, as a bridged VM would have it
	// made) goes with the uninstall.
	mustSh("ip link add banger0 type bridge")
	if r := sh("/usr/local/bin/banger system uninstall --purge"); r.code != 0 || strings.Contains(r.stderr, "warning") {
		t.Fatalf("uninstall: %s", r)
	}
	if sh("ip link show banger0").code == 0 {
		t.Error("uninstall left the bridge banger0")
	}
	if r := sh("test -e /etc/systemd/system/bangerd.service || test -e /usr/local/bin/banger || test -e /etc/banger || test -e /home/alice/.local/state/banger"); r.code == 0 {
		t.Errorf("uninstall --purge left files behind")
	}
	if out := mustSh("cat /home/alice/.ssh/config"); out != "keep\n" {
		t.Errorf("uninstall touched the owner's ssh config: %q", out)
	}
	if sh("systemctl is-active bangerd.service").code == 0 {
		t.Error("bangerd still active after uninstall")
	}
}
