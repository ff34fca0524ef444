//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// debianUserPATH is Debian's default PATH for ordinary users: no sbin
// directory, so mkfs.ext4, debugfs and friends are not on it.
const debianUserPATH = "/usr/local/bin:/usr/bin:/bin:/usr/games"

// rootlessUser is a throwaway ordinary user with its own banger: its own
// copies of the binaries and the kernel package, XDG dirs, config and
// daemon (started on demand by its CLI), all inside a network namespace
// the test made.
type rootlessUser struct {
	name     string
	uid, gid int
	home     string
	bin      string
	env      []string
	nsPID    int // the process holding the network namespace
}

// TestRootless: an ordinary user with Debian's default user PATH (no sbin
// directory), TCG and user-mode networking runs the whole rootless path:
// kernel import, doctor, an image pulled from a local registry, an image
// built from a directory, `vm run --rm` with its exit code, and `vm create
// --publish` followed by `vm ssh` through the port QEMU forwards to the
// guest's sshd.
func TestRootless(t *testing.T) {
	needNetns(t) // creating the user and the namespace needs root
	ctx := ctxFor(t, 25*time.Minute)
	u := newRootlessUser(t)

	// The image: the fixture's debootstrap tree, served by a registry
	// listening inside the user's namespace.
	l := listenInNS(t, true, u.nsPID)
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	img, err := mutate.AppendLayers(empty.Image, fixtureLayer(t, ctx))
	if err != nil {
		t.Fatal(err)
	}
	if img, err = mutate.Config(img, v1.Config{Env: []string{"PATH=/usr/bin:/bin"}, Cmd: []string{"/bin/bash"}}); err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(l.Addr().String()+"/e2e/rootless:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(nsTransportOf(ctx, true, u.nsPID))); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}

	u.must(t, u.cli(ctx, "kernel", "import", "debian", "--from", filepath.Join(u.home, "linux-image.deb")))

	// The CLI started the daemon: as the user, with the user's PATH, in
	// the test's namespace.
	u.checkDaemon(t)

	// doctor finds the tools where they are (sbin), as the daemon does.
	var checks []struct{ Name, Status, Detail string }
	jsonUnmarshal(t, u.cli(ctx, "doctor", "--json").stdout, &checks)
	seen := map[string]bool{}
	for _, c := range checks {
		switch c.Name {
		case "qemu", "qemu-img", "e2fsprogs", "debugfs":
			seen[c.Name] = true
			if c.Status != "PASS" {
				t.Errorf("doctor %s: %s %s", c.Name, c.Status, c.Detail)
			}
		}
	}
	if len(seen) != 4 {
		t.Errorf("doctor reported only %v of qemu, qemu-img, e2fsprogs, debugfs", seen)
	}

	r := u.must(t, u.cli(ctx, "image", "pull", ref.String(), "--kernel", "debian"))
	if !strings.Contains(r.stdout, "rootless-v1") {
		t.Errorf("pull should register rootless-v1: %s", r)
	}

	// image build --from-dir formats with mkfs.ext4 as well.
	tiny := filepath.Join(u.home, "tinyroot")
	os.MkdirAll(filepath.Join(tiny, "etc"), 0o755)
	os.WriteFile(filepath.Join(tiny, "etc", "hostname"), []byte("tiny\n"), 0o644)
	u.chownAll(t, tiny)
	if r := u.cli(ctx, "image", "build", "tiny", "--from-dir", tiny, "--kernel", "debian", "--size", "64M"); r.code != 0 {
		t.Errorf("image build --from-dir as an ordinary user: %s", r)
	} else {
		u.must(t, u.cli(ctx, "image", "rm", "tiny"))
	}

	// vm run --rm: the command's output and exit code come back, and the
	// VM is gone.
	r = u.cli(ctx, "vm", "run", "--rm", "--image", "rootless-v1", "--", "sh", "-c", "echo rootless-run-ok; exit 7")
	if r.code != 7 || !strings.Contains(r.stdout, "rootless-run-ok") {
		t.Fatalf("vm run --rm as an ordinary user: want exit 7 and rootless-run-ok: %s\ndaemon log tail:\n%s", r, tail(u.daemonLog(), 30))
	}

	// vm create with a published port, then ssh through the port QEMU
	// forwards to the guest's sshd.
	u.must(t, u.cli(ctx, "vm", "create", "--name", "rl", "--image", "rootless-v1", "--publish", "127.0.0.1:18090:8080"))
	var v struct{ Network, State string }
	jsonUnmarshal(t, u.must(t, u.cli(ctx, "vm", "show", "--json", "rl")).stdout, &v)
	if v.Network != "user" || v.State != "running" {
		t.Errorf("vm show: network %q state %q, want user, running", v.Network, v.State)
	}
	// The image's sshd starts after the agent answers: under TCG on a
	// loaded machine that took minutes.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if r = u.cli(ctx, "vm", "ssh", "rl", "--", "echo", "rootless-ssh-ok"); r.code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if strings.TrimSpace(r.stdout) != "rootless-ssh-ok" {
		diag := u.cli(ctx, "vm", "exec", "rl", "--", "sh", "-c",
			"systemctl status ssh --no-pager; journalctl -b --no-pager -u ssh | tail -20; ss -ltnp; stat -c '%u:%g %a %n' / /etc/ssh /etc/ssh/* /usr/sbin/sshd /run/sshd /var/empty 2>&1; id")
		t.Errorf("vm ssh as an ordinary user: %s\nguest:\n%s\nvm show: %s", r, diag, u.cli(ctx, "vm", "show", "--json", "rl").stdout)
	}
	u.must(t, u.cli(ctx, "vm", "delete", "rl"))
	if r := u.must(t, u.cli(ctx, "vm", "list", "--json")); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("VMs left: %s", r.stdout)
	}
}

// newRootlessUser creates the user, its home with copies of the binaries
// and the kernel package, and the network namespace everything of it runs
// in. Cleanup removes all of it, stopping every process of the user.
func newRootlessUser(t *testing.T) *rootlessUser {
	t.Helper()
	home, err := os.MkdirTemp("", "banger-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	u := &rootlessUser{name: fmt.Sprintf("bgrl%d", os.Getpid()), home: home, bin: filepath.Join(home, "bin")}
	if out, err := exec.Command("/usr/sbin/useradd", "--no-create-home", "--home-dir", home,
		"--shell", "/usr/sbin/nologin", "--user-group", u.name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("/usr/sbin/userdel", u.name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", u.name, err, out)
		}
	})
	pw, err := user.Lookup(u.name)
	if err != nil {
		t.Fatal(err)
	}
	u.uid, _ = strconv.Atoi(pw.Uid)
	u.gid, _ = strconv.Atoi(pw.Gid)

	for _, d := range []string{"bin", "state", "config/banger", "run"} {
		if err := os.MkdirAll(filepath.Join(home, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{"banger", "bangerd", "banger-agent"} {
		copyFile(t, filepath.Join(e.bin, b), filepath.Join(u.bin, b), 0o755)
	}
	copyFile(t, filepath.Join(os.Getenv("BANGER_FIXTURES"), "kernel/linux-image.deb"), filepath.Join(home, "linux-image.deb"), 0o644)
	if err := os.WriteFile(filepath.Join(home, "config/banger/config.toml"),
		[]byte("accel = \"tcg\"\nvcpu = 2\nmemory_mib = 512\ndisk_size = \"1G\"\nstop_timeout = \"20s\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	u.chownAll(t, home)
	u.env = []string{
		"PATH=" + debianUserPATH,
		"HOME=" + home,
		"USER=" + u.name,
		"LOGNAME=" + u.name,
		"XDG_STATE_HOME=" + filepath.Join(home, "state"),
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"),
		"XDG_RUNTIME_DIR=" + filepath.Join(home, "run"),
		"NO_COLOR=1",
	}

	// The namespace: a process that holds it for the test's lifetime.
	holder := exec.Command("unshare", "--net", "--", "sh", "-c", "ip link set lo up && echo ready && exec sleep infinity")
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		holder.Process.Kill()
		holder.Wait()
	})
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("network namespace: %q", line)
	}
	u.nsPID = holder.Process.Pid

	// Registered last, so it runs first: VMs, daemon, then any process
	// of the user still alive.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var vms []vmInfo
		if json.Unmarshal([]byte(u.cli(ctx, "vm", "list", "--json").stdout), &vms) == nil {
			for _, v := range vms {
				u.cli(ctx, "vm", "delete", v.Name)
			}
		}
		u.cli(ctx, "daemon", "stop")
		for i := 0; i < 50; i++ {
			pids := u.pids()
			if len(pids) == 0 {
				return
			}
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("processes of %s survive: %v", u.name, u.pids())
	})
	return u
}

// cli runs the user's banger in the namespace, as the user, with only the
// user's environment.
func (u *rootlessUser) cli(ctx context.Context, args ...string) result {
	argv := append([]string{"-t", strconv.Itoa(u.nsPID), "-n", "--",
		"setpriv", "--reuid", strconv.Itoa(u.uid), "--regid", strconv.Itoa(u.gid), "--clear-groups", "--",
		filepath.Join(u.bin, "banger")}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	cmd.Env = u.env
	cmd.Dir = u.home
	return runCmd(cmd)
}

func (u *rootlessUser) must(t *testing.T, r result) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("command failed: %s\ndaemon log tail:\n%s", r, tail(u.daemonLog(), 30))
	}
	return r
}

func (u *rootlessUser) daemonLog() string {
	b, _ := os.ReadFile(filepath.Join(u.home, "state/banger/bangerd.log"))
	return string(b)
}

// checkDaemon asserts that the user's daemon runs as the user, with
// Debian's user PATH, in the test's network namespace.
func (u *rootlessUser) checkDaemon(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(u.home, "run/banger/bangerd.pid"))
	if err != nil {
		t.Fatalf("daemon pid file: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if uid, ok := realUID(pid); !ok || uid != u.uid {
		t.Errorf("daemon pid %d: uid %d (found %v), want %d", pid, uid, ok, u.uid)
	}
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if !strings.Contains("\x00"+string(env)+"\x00", "\x00PATH="+debianUserPATH+"\x00") {
		t.Errorf("daemon environment lacks PATH=%s: %q", debianUserPATH, env)
	}
	daemonNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	testNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", u.nsPID))
	if daemonNS == "" || daemonNS != testNS {
		t.Errorf("daemon in network namespace %q, want the test's %q", daemonNS, testNS)
	}
}

// pids lists the processes whose real uid is the user's.
func (u *rootlessUser) pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if uid, ok := realUID(pid); ok && uid == u.uid {
			out = append(out, pid)
		}
	}
	return out
}

// realUID is the real uid of process pid, if it is alive.
func realUID(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			uid, err := strconv.Atoi(f[1])
			return uid, err == nil
		}
	}
	return 0, false
}

// chownAll gives the tree at dir to the user.
func (u *rootlessUser) chownAll(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.uid, u.gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}
