package privhelper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"banger/internal/network"
)

// Tests touching the kernel (links, port 53) run as root inside network
// namespaces they create (enterTestNetNS); no test sends a packet outside
// loopback and those namespaces. Tests that need another uid run a copy of
// the test binary as that uid (runChild).

// Environment variables that turn the test binary into a child run by
// runChild: childEnv is the helper socket to call AcquireTap on; childTunEnv
// and childTapEnv instead name a tun device node and a tap for the child to
// open, as QEMU would.
const (
	childEnv    = "PRIVHELPER_TEST_CHILD_SOCKET"
	childTunEnv = "PRIVHELPER_TEST_CHILD_TUN"
	childTapEnv = "PRIVHELPER_TEST_CHILD_TAP"
)

// otherUID is the unprivileged uid child clients run as (nobody).
const otherUID = 65534

func TestMain(m *testing.M) {
	if sock := os.Getenv(childEnv); sock != "" {
		os.Exit(childMain(sock))
	}
	if tun := os.Getenv(childTunEnv); tun != "" {
		os.Exit(childOpenTap(tun, os.Getenv(childTapEnv)))
	}
	os.Exit(m.Run())
}

// childResult is what a child client reports on its stdout.
type childResult struct {
	UID  int    `json:"uid"`
	Tap  string `json:"tap"`
	Code string `json:"code"`
	Err  string `json:"err"`
}

// childMain calls AcquireTap through the helper at sock and prints a
// childResult.
func childMain(sock string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := childResult{UID: os.Getuid()}
	tap, err := NewClient(sock).AcquireTap(ctx, tb())
	res.Tap = tap
	if err != nil {
		res.Err = err.Error()
		var e *Error
		if errors.As(err, &e) {
			res.Code = e.Code
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// childOpenTap attaches to tap through the tun device node, as QEMU does,
// and prints a childResult.
func childOpenTap(tun, tap string) int {
	res := childResult{UID: os.Getuid(), Tap: tap}
	err := func() error {
		fd, err := unix.Open(tun, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(tap)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}()
	if err != nil {
		res.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// requireRoot skips tests that need root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
}

// publicDir returns a fresh directory that every uid may traverse, for a
// socket and a binary an unprivileged child uses.
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "privhelper-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// childBinary copies the test binary into dir (go test's build directory is
// private to root) and returns its path.
func childBinary(t *testing.T, dir string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, "privhelper.test")
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// runChild runs bin as uid (and gid) otherUID against sock and returns its
// report.
func runChild(t *testing.T, bin, sock string) childResult {
	t.Helper()
	return runChildEnv(t, bin, childEnv+"="+sock)
}

// runChildEnv runs bin as otherUID with env added (in the network namespace
// of the calling thread) and returns its report.
func runChildEnv(t *testing.T, bin string, env ...string) childResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = filepath.Dir(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	var res childResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("child output %q: %v\n%s", out, err, stderr.String())
	}
	if res.UID != otherUID {
		t.Fatalf("child ran as uid %d, want %d", res.UID, otherUID)
	}
	return res
}

// logBuffer collects a Server's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer is a Server on a socket, serving until the test ends.
type testServer struct {
	srv    *Server
	socket string
	log    *logBuffer
	client *Client
	// stop ends Serve and waits for it.
	stop func()
}

// startServer serves host (with cfg) for allowUID on a socket in dir (a
// fresh private directory when dir is empty). Options' Host, Config,
// AllowUID and Log are filled in from the arguments.
func startServer(t *testing.T, dir string, o Options) *testServer {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	lb := &logBuffer{}
	o.Log = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "helper.sock")
	owner := o.AllowUID
	if os.Geteuid() != 0 {
		owner = os.Getuid() // only root may give the socket away
	}
	ln, err := Listen(context.Background(), sock, owner)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
			if err := srv.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &testServer{srv: srv, socket: sock, log: lb, client: NewClient(sock), stop: stop}
}

// fakeServer serves a network.Fake for the test's own uid.
func fakeServer(t *testing.T) (*testServer, *network.Fake) {
	t.Helper()
	cfg := network.Config{TapPoolSize: 1}
	fake := network.NewFake(cfg)
	return startServer(t, "", Options{Host: fake, Config: cfg, AllowUID: os.Getuid()}), fake
}

// rawCall sends one raw request line and returns the decoded response.
func rawCall(t *testing.T, sock, line string) response {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, line+"\n"); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	var resp response
	if err := json.Unmarshal(b, &resp); err != nil {
		t.Fatalf("response %q: %v", b, err)
	}
	return resp
}

// wantCode checks that resp failed with code.
func wantCode(t *testing.T, what string, resp response, code string) {
	t.Helper()
	if resp.OK || resp.Error == nil || resp.Error.Code != code {
		t.Errorf("%s: response %+v (error %+v), want code %s", what, resp, resp.Error, code)
	}
}

// enterTestNetNS locks the test goroutine to its OS thread and moves that
// thread into a new network namespace (lo up) until the test ends.
func enterTestNetNS(t *testing.T) netns.NsHandle {
	t.Helper()
	requireRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it is discarded with the goroutine.
			t.Errorf("restore netns: %v", err)
			return
		}
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	})
	lo, err := netlink.LinkByName("lo")
	if err != nil || netlink.LinkSetUp(lo) != nil {
		t.Fatalf("set lo up: %v", err)
	}
	return ns
}

// inode returns a socket's inode number: equal numbers mean the same socket.
func inode(t *testing.T, c syscall.Conn) uint64 {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// contains reports whether s contains every one of subs.
func contains(s string, subs ...string) error {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return fmt.Errorf("%q not found in:\n%s", sub, s)
		}
	}
	return nil
}

// publicSubdir makes dir/name, mode 0755.
func publicSubdir(t *testing.T, dir, name string) string {
	t.Helper()
	sub := filepath.Join(dir, name)
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	return sub
}

// ownerOf returns a file's owner uid.
func ownerOf(t *testing.T, fi os.FileInfo) int {
	t.Helper()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatalf("no owner for %s", fi.Name())
	}
	return int(st.Uid)
}
