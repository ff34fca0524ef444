//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// privUID is the unprivileged user the daemon of TestPrivHelper runs as.
const privUID = 65534

// privInstall is a banger installation owned by privUID, next to the
// shared (root) one, with banger-helper serving it.
type privInstall struct {
	root      string // temp dir: bin/, state/, config/, run/, helper/
	bin       string // copies of the binaries, executable by privUID
	environ   []string
	helperPID int // its network namespace is the installation's
	helperLog string
	daemonLog string
}

// TestPrivHelper: bridge mode for a daemon that is not root. In a network
// namespace of its own, the test runs banger-helper as root, allowing uid
// 65534, and bangerd as 65534 with its own XDG dirs; a bridge-mode VM
// created through that daemon boots (QEMU as 65534 on a tap the helper made
// and gave to 65534), its name resolves through the bridge DNS (port 53
// bound by the helper, served by the daemon), and its sshd answers at that
// address. Deleting it hands the tap back.
func TestPrivHelper(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 12*time.Minute)
	p := newPrivInstall(t)
	p.startHelper(t)
	p.startDaemon(t)

	// Artifacts: the kernel imported by 65534 itself, the shared image's
	// root filesystem registered from a copy 65534 owns.
	fixtures := os.Getenv("BANGER_FIXTURES")
	if fixtures == "" {
		fixtures = "/var/cache/banger-fixtures"
	}
	p.must(t, ctx, "kernel", "import", "debian", "--from", filepath.Join(fixtures, "kernel/linux-image.deb"))
	var shared string
	for _, line := range strings.Split(must(t, e.cli(ctx, "", "image", "show", "debian")).stdout, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "rootfs" {
			shared = f[1]
		}
	}
	if shared == "" {
		t.Fatal("image show debian: no rootfs line")
	}
	rootfs := filepath.Join(p.root, "rootfs.ext4")
	if r := e.command(ctx, "", "cp", "--sparse=always", shared, rootfs); r.code != 0 {
		t.Fatalf("copy rootfs: %s", r)
	}
	if err := os.Chown(rootfs, privUID, privUID); err != nil {
		t.Fatal(err)
	}
	p.must(t, ctx, "image", "register", "debian", "--rootfs", rootfs, "--kernel", "debian")

	const name = "privvm"
	p.must(t, ctx, "vm", "create", "--name", name, "--network", "bridge")
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		p.cli(c, "vm", "delete", name)
	})
	var v struct {
		IP      string `json:"ip"`
		Network string `json:"network"`
		PID     int    `json:"pid"`
	}
	jsonUnmarshal(t, p.must(t, ctx, "vm", "show", "--json", name).stdout, &v)
	if v.Network != "bridge" || !strings.HasPrefix(v.IP, "172.16.0.") {
		t.Fatalf("vm %s: network %q ip %q, want bridge in 172.16.0.0/24", name, v.Network, v.IP)
	}
	if uid := procUID(t, v.PID); uid != privUID {
		t.Errorf("the VMM (pid %d) runs as uid %d, want %d", v.PID, uid, privUID)
	}

	// The VM's tap: made by the helper, owned by 65534, held open by QEMU.
	p.inNS(t, func() {
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		var held []string
		for _, l := range links {
			tt, ok := l.(*netlink.Tuntap)
			if !ok || tt.Attrs().RawFlags&unix.IFF_LOWER_UP == 0 {
				continue // not held open
			}
			held = append(held, tt.Name)
			if tt.Owner != privUID {
				t.Errorf("tap %s in use, owned by %d, want %d", tt.Name, tt.Owner, privUID)
			}
		}
		if len(held) != 1 {
			t.Errorf("taps held open: %v, want exactly the VM's", held)
		}
	})

	// By name: the bridge DNS answers inside the namespace, and the guest
	// itself resolves through it.
	var resolved string
	p.inNS(t, func() {
		for _, proto := range []string{"udp", "tcp"} {
			m := new(dns.Msg).SetQuestion(name+".vm.", dns.TypeA)
			r, _, err := (&dns.Client{Net: proto, Timeout: 3 * time.Second}).Exchange(m, "172.16.0.1:53")
			if err != nil {
				t.Fatalf("%s query %s.vm at the bridge address: %v\nhelper log:\n%s\ndaemon log:\n%s", proto, name, err, p.log(p.helperLog), p.log(p.daemonLog))
			}
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok {
					resolved = a.A.String()
				}
			}
		}
	})
	if resolved != v.IP {
		t.Fatalf("%s.vm resolves to %q at the bridge address, want %s", name, resolved, v.IP)
	}
	if out := p.must(t, ctx, "vm", "exec", name, "--", "getent", "hosts", name+".vm").stdout; !strings.Contains(out, v.IP) {
		t.Errorf("the guest resolves %s.vm to %q, want %s", name, out, v.IP)
	}
	// Reachable at that address: sshd answers (it may still be starting).
	var banner string
	p.inNS(t, func() {
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) && !strings.HasPrefix(banner, "SSH-") {
			if c, err := net.DialTimeout("tcp", net.JoinHostPort(resolved, "22"), 2*time.Second); err == nil {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				banner, _ = bufio.NewReader(c).ReadString('\n')
				c.Close()
			}
			if !strings.HasPrefix(banner, "SSH-") {
				time.Sleep(time.Second)
			}
		}
	})
	if !strings.HasPrefix(banner, "SSH-") {
		t.Fatalf("no sshd at %s:22 (read %q)", resolved, banner)
	}

	// Delete: the tap goes back to the helper (nothing holds it any more).
	p.must(t, ctx, "vm", "delete", name)
	p.inNS(t, func() {
		links, _ := netlink.LinkList()
		for _, l := range links {
			if tt, ok := l.(*netlink.Tuntap); ok && tt.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 {
				t.Errorf("tap %s still in use after the vm was deleted", tt.Name)
			}
		}
	})
	if !strings.Contains(p.log(p.helperLog), "op=release_tap uid=65534") {
		t.Errorf("no release_tap from uid 65534 in the helper log:\n%s", p.log(p.helperLog))
	}
}

// newPrivInstall makes the directories (owned by privUID) and copies the
// binaries, building banger-helper unless $BANGER_BIN has it.
func newPrivInstall(t *testing.T) *privInstall {
	t.Helper()
	root, err := os.MkdirTemp("", "banger-e2e-priv-")
	if err != nil {
		t.Fatal(err)
	}
	p := &privInstall{root: root, bin: filepath.Join(root, "bin"),
		helperLog: filepath.Join(root, "helper.log"), daemonLog: filepath.Join(root, "bangerd.log")}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("BANGER_E2E_KEEP") != "" {
			t.Logf("kept %s", root)
			return
		}
		os.RemoveAll(root)
	})
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "helper"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"home", "state", "config", "config/banger", "run"} {
		dir := filepath.Join(root, d)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, privUID, privUID); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(root, "config/banger/config.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(
		"vcpu = 2\nmemory_mib = 512\ndisk_size = \"1G\"\nstop_timeout = \"20s\"\nnetwork = \"bridge\"\nhelper_socket = %q\n",
		p.helperSocket())), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(cfg, privUID, privUID); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"banger", "bangerd", "banger-agent"} {
		copyExecutable(t, filepath.Join(e.bin, b), filepath.Join(p.bin, b))
	}
	if _, err := os.Stat(filepath.Join(e.bin, "banger-helper")); err == nil {
		copyExecutable(t, filepath.Join(e.bin, "banger-helper"), filepath.Join(p.bin, "banger-helper"))
	} else {
		buildHelper(t, filepath.Join(p.bin, "banger-helper"))
	}
	p.environ = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + filepath.Join(root, "home"),
		"XDG_STATE_HOME=" + filepath.Join(root, "state"),
		"XDG_CONFIG_HOME=" + filepath.Join(root, "config"),
		"XDG_RUNTIME_DIR=" + filepath.Join(root, "run"),
		"BANGER_NO_DAEMON_RESTART=1",
		"NO_COLOR=1",
	}
	return p
}

func (p *privInstall) helperSocket() string { return filepath.Join(p.root, "helper", "helper.sock") }

// startHelper runs banger-helper as root in a new network namespace, which
// lives as long as it (or the daemon and VMMs that join it) runs.
func (p *privInstall) startHelper(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(p.helperLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "--net", "--", "sh", "-c", `ip link set lo up && exec "$0" "$@"`,
		filepath.Join(p.bin, "banger-helper"), "--allow-uid", fmt.Sprint(privUID), "--socket", p.helperSocket())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.helperPID = cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// SIGTERM: the helper leaves taps alone; the namespace, and with it
		// bridge and taps, goes away with the last process in it.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("banger-helper exited with %v after SIGTERM\n%s", err, p.log(p.helperLog))
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Errorf("banger-helper ignored SIGTERM")
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if fi, err := os.Stat(p.helperSocket()); err == nil && fi.Mode().Type() == os.ModeSocket {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("banger-helper did not come up:\n%s", p.log(p.helperLog))
}

// startDaemon runs bangerd as privUID in the helper's network namespace.
// Where /dev/net/tun is root-only (some CI containers), the daemon gets its
// own mount namespace with a world-usable tun node bound over it, as on a
// stock distribution: opening a tap the user owns still goes through
// /dev/net/tun.
func (p *privInstall) startDaemon(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(p.daemonLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	if err := os.Chown(p.daemonLog, privUID, privUID); err != nil {
		t.Fatal(err)
	}
	script := `exec setpriv --reuid 65534 --regid 65534 --clear-groups "$0"`
	if fi, err := os.Stat("/dev/net/tun"); err == nil && fi.Mode().Perm()&0o006 != 0o006 {
		tun := filepath.Join(p.root, "tun")
		script = fmt.Sprintf(`set -e; mkdir -p %[1]s; mount -t tmpfs -o mode=755 tmpfs %[1]s; mknod %[1]s/tun c 10 200; chmod 666 %[1]s/tun; mount --bind %[1]s/tun /dev/net/tun; `, tun) + script
	}
	cmd := exec.Command("nsenter", "-t", fmt.Sprint(p.helperPID), "-n", "--", "unshare", "--mount", "--", "sh", "-c", script, filepath.Join(p.bin, "bangerd"))
	cmd.Env = p.environ
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p.cli(c, "daemon", "stop")
		// No VMM of this installation may outlive the test.
		out, _ := exec.Command("pgrep", "-f", p.root).Output()
		for _, f := range strings.Fields(string(out)) {
			var pid int
			fmt.Sscan(f, &pid)
			if pid > 0 && pid != os.Getpid() && pid != p.helperPID {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if r := p.cli(context.Background(), "daemon", "status"); r.code == 0 {
			if !strings.Contains(p.log(p.daemonLog), "through the privileged helper") {
				t.Fatalf("bangerd as uid %d does not use the helper:\n%s", privUID, p.log(p.daemonLog))
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("bangerd (uid %d) did not come up:\n%s\nhelper log:\n%s", privUID, p.log(p.daemonLog), p.log(p.helperLog))
}

// cli runs banger as privUID against the installation.
func (p *privInstall) cli(ctx context.Context, args ...string) result {
	cmd := exec.CommandContext(ctx, filepath.Join(p.bin, "banger"), args...)
	cmd.Env = p.environ
	cmd.Dir = filepath.Join(p.root, "home")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: privUID, Gid: privUID}}
	return runCmd(cmd)
}

func (p *privInstall) must(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	r := p.cli(ctx, args...)
	if r.code != 0 {
		t.Fatalf("banger %s (uid %d): %s\ndaemon log tail:\n%s\nhelper log tail:\n%s",
			strings.Join(args, " "), privUID, r, tail(p.log(p.daemonLog), 30), tail(p.log(p.helperLog), 30))
	}
	return r
}

func (p *privInstall) log(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// inNS runs f on a thread switched into the installation's network
// namespace; sockets made there stay in it.
func (p *privInstall) inNS(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromPid(p.helperPID)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	f()
}

// buildHelper builds banger-helper from this module into out.
func buildHelper(t *testing.T, out string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-o", out, "banger/cmd/banger-helper")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build banger-helper: %v\n%s", err, b)
	}
}

func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// procUID returns the real uid of a process.
func procUID(t *testing.T, pid int) int {
	t.Helper()
	uid, ok := realUID(pid)
	if !ok {
		t.Fatalf("no uid for pid %d", pid)
	}
	return uid
}
