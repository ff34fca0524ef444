package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/engine"
	"banger/internal/engine/vmmproc"
)

// jailHarness runs the driver with the fake jailer.
type jailHarness struct {
	*harness
	jailer   string // link "jailer" -> the test binary
	base     string // chroot base
	argvLog  string // the fake jailer's argv, a JSON array per line
	d        *Driver
	js       engine.Spec // h.spec through JailSpec
	execName string      // the file name the jailer names the jail after
	dir      string      // the jail: base/execName/id
	root     string      // dir/root
}

// rooted reports whether the fake jailer really chroots and switches
// users (it needs root); without root it builds the same layout and
// resolves paths in it without chrooting.
func rooted() bool { return os.Geteuid() == 0 }

// newJailHarness sets up the fake jailer. As root the VM gets a derived
// per-VM uid and gid unless fixedIDs; without root it must keep the test
// user's own.
func newJailHarness(t *testing.T, fixedIDs bool) *jailHarness {
	t.Helper()
	h := newHarness(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The chroot base must be short (the sockets' host paths are in it:
	// 107 bytes at most) and on the disks' filesystem (they are linked
	// into the jail): a directory of its own beside the test's.
	short, err := os.MkdirTemp(filepath.Dir(filepath.Dir(h.dir)), "j")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })
	jh := &jailHarness{
		harness: h,
		jailer:  filepath.Join(h.dir, "bin", "jailer"),
		base:    filepath.Join(short, "jail"),
		argvLog: filepath.Join(h.dir, "jailer-argv.jsonl"),
	}
	if err := os.Symlink(exe, jh.jailer); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeJailerArgvEnv, jh.argvLog)
	jh.d = &Driver{Binary: h.bin, Jailer: jh.jailer, ChrootBase: jh.base}
	switch {
	case !rooted():
		jh.d.JailUID, jh.d.JailGID = os.Getuid(), os.Getgid()
	case fixedIDs:
		jh.d.JailUID, jh.d.JailGID = 4242, 4343
	}
	real, err := filepath.EvalSymlinks(h.bin)
	if err != nil {
		t.Fatal(err)
	}
	jh.execName = filepath.Base(real)
	jh.dir = filepath.Join(jh.base, jh.execName, "0123abcd")
	jh.root = filepath.Join(jh.dir, "root")
	jh.js = jh.d.JailSpec(h.spec)
	h.id = vmmID{apiSock: "/run/firecracker.socket", id: "0123abcd"}
	return jh
}

// jailerArgv returns the argv of every jailer run so far.
func (jh *jailHarness) jailerArgv(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile(jh.argvLog)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var argv []string
		if err := json.Unmarshal(sc.Bytes(), &argv); err != nil {
			t.Fatal(err)
		}
		out = append(out, argv)
	}
	return out
}

// assertNothingLeft also checks that the jail is gone.
func (jh *jailHarness) assertNothingLeft(t *testing.T, pids ...int) {
	t.Helper()
	jh.harness.assertNothingLeft(t, pids...)
	if _, err := os.Lstat(jh.js.PIDFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pidfile left behind (%v)", err)
	}
	if _, err := os.Lstat(jh.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail %s left behind (%v)", jh.dir, err)
	}
}

// owner returns a file's uid, gid and permission bits (not following a
// final symlink).
func owner(t *testing.T, path string) (uid, gid int, perm os.FileMode) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	return int(sys.Uid), int(sys.Gid), st.Mode().Perm()
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.Stat(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(x, y)
}

// procIDs returns the real, effective, saved and fs uids and gids of pid.
func procIDs(t *testing.T, pid int) (uids, gids []string) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			uids = strings.Fields(v)
		}
		if v, ok := strings.CutPrefix(line, "Gid:"); ok {
			gids = strings.Fields(v)
		}
	}
	return uids, gids
}

// procPGID returns the process group of pid (field 5 of /proc/PID/stat).
func procPGID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	n, _ := strconv.Atoi(f[2])
	return n
}

// A jailed VM from start to exit: the exact jailer argv, the exec'd
// firecracker's argv, session and ids, the jail's layout and ownership,
// chroot-relative paths in every API body (each checked against the API
// definition), the guest agent over the chrooted vsock socket, and the
// jail removed once the VMM exits.
func TestJailedStart(t *testing.T) {
	if !rooted() {
		t.Log("not root: the fake jailer builds the layout but cannot chroot or switch users; the test keeps the test user's uid and gid")
	}
	jh := newJailHarness(t, false)
	ctx := testCtx(t, 20*time.Second)
	s := jh.js
	if want := filepath.Join(jh.root, "run", "firecracker.socket"); s.QMPSocket != want {
		t.Fatalf("JailSpec api socket %s, want %s", s.QMPSocket, want)
	}
	if want := filepath.Join(jh.root, "run", "vsock.sock"); s.VsockSocket != want {
		t.Fatalf("JailSpec vsock socket %s, want %s", s.VsockSocket, want)
	}
	os.Chmod(s.Initramfs, 0o600) // not world-readable: copied, not linked
	inst, err := jh.d.Start(ctx, s)
	if err != nil {
		b, _ := os.ReadFile(s.VMMLog)
		t.Fatalf("Start: %v\nvmm log:\n%s", err, b)
	}
	defer inst.Close()
	pid := inst.PID()

	// The ids the jail runs as.
	uid, gid, _ := owner(t, jh.root)
	switch {
	case !rooted():
		if uid != os.Getuid() || gid != os.Getgid() {
			t.Errorf("jail owned by %d:%d, want the test user's", uid, gid)
		}
	case uid < DefaultJailIDBase || uid >= DefaultJailIDBase+JailIDCount || gid != uid:
		t.Errorf("jail owned by %d:%d, want a derived id in %d..%d for both", uid, gid, DefaultJailIDBase, DefaultJailIDBase+JailIDCount-1)
	}
	us, g := strconv.Itoa(uid), strconv.Itoa(gid)

	// The jailer's exact command line.
	argvs := jh.jailerArgv(t)
	wantJailer := []string{jh.jailer,
		"--id", "0123abcd",
		"--exec-file", jh.bin,
		"--uid", us,
		"--gid", g,
		"--chroot-base-dir", jh.base,
		"--", "--api-sock", "/run/firecracker.socket",
	}
	if len(argvs) != 1 || !reflect.DeepEqual(argvs[0], wantJailer) {
		t.Errorf("jailer argv %q,\nwant %q", argvs, wantJailer)
	}
	// What the jailer exec'd, in place: same pid, the documented argv.
	argv := procCmdline(pid)
	wantFC := []string{"/" + jh.execName, "--id", "0123abcd", "--start-time-us", "*", "--start-time-cpu-us", "*", "--parent-cpu-time-us", "*", "--api-sock", "/run/firecracker.socket"}
	if len(argv) != len(wantFC) {
		t.Errorf("firecracker argv %q, want %q", argv, wantFC)
	} else {
		for i := range wantFC {
			if wantFC[i] != "*" && argv[i] != wantFC[i] {
				t.Errorf("firecracker argv %q, want %q", argv, wantFC)
				break
			}
		}
	}
	// Detached: a session and process group of its own, so the daemon's
	// signals (Ctrl-C to its group) never reach it.
	if sid, err := procSession(pid); err != nil || sid != pid {
		t.Errorf("session %d, %v; want %d", sid, err, pid)
	}
	if pg := procPGID(t, pid); pg != pid || pg == syscall.Getpgrp() {
		t.Errorf("process group %d, want %d (not the daemon's %d)", pg, pid, syscall.Getpgrp())
	}
	uids, gids := procIDs(t, pid)
	for i := range uids {
		if uids[i] != us || gids[i] != g {
			t.Errorf("vmm runs as uids %v gids %v, want %s:%s", uids, gids, us, g)
			break
		}
	}
	if rooted() {
		if r, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/root"); err != nil || r != jh.root {
			t.Errorf("vmm root %q, %v; want the jail %s", r, err, jh.root)
		}
	}

	// The API calls, in order, with paths inside the jail.
	recs := jh.records(t)
	wantOps := []string{"describeInstance", "putMachineConfiguration", "putGuestBootSource", "putSerialDevice", "putGuestDriveByID", "putGuestDriveByID", "putGuestNetworkInterfaceByID", "putGuestNetworkInterfaceByID", "putGuestVsock", "putBalloon", "createSyncAction"}
	if len(recs) != len(wantOps) {
		t.Fatalf("%d requests, want %d: %+v", len(recs), len(wantOps), recs)
	}
	for i, r := range recs {
		if r.Operation != wantOps[i] || r.Status/100 != 2 || r.PID != pid {
			t.Errorf("request %d: %s %s (%s) by pid %d -> %d, want %s by %d -> 2xx", i, r.Method, r.Path, r.Operation, r.PID, r.Status, wantOps[i], pid)
		}
	}
	jsonEqual(t, "boot-source", recs[2].Body, map[string]any{"kernel_image_path": "/vmlinux", "initrd_path": "/initramfs", "boot_args": BootArgs(s)})
	jsonEqual(t, "serial", recs[3].Body, map[string]any{"serial_out_path": "/serial.log"})
	jsonEqual(t, "root drive", recs[4].Body, map[string]any{"drive_id": "root", "path_on_host": "/root.img", "is_root_device": false, "is_read_only": false, "cache_type": "Writeback"})
	jsonEqual(t, "work drive", recs[5].Body, map[string]any{"drive_id": "work", "path_on_host": "/work.img", "is_root_device": false, "is_read_only": false, "cache_type": "Writeback"})
	jsonEqual(t, "vsock", recs[8].Body, map[string]any{"guest_cid": 3, "uds_path": "/run/vsock.sock"})

	// The layout and who owns what.
	in := func(p string) string { return filepath.Join(jh.root, p) }
	for _, d := range []string{"", "dev", "dev/net", "run"} {
		if u, gg, perm := owner(t, in(d)); u != uid || gg != gid || perm != 0o700 {
			t.Errorf("jail /%s: %d:%d %v, want %d:%d 0700", d, u, gg, perm, uid, gid)
		}
	}
	if st, err := os.Stat(in(jh.execName)); err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o100 == 0 || sameFile(t, in(jh.execName), jh.bin) {
		t.Errorf("jail /%s: %v, %v; want the jailer's executable copy", jh.execName, st, err)
	}
	if got, err := readPIDFile(in(jh.execName + ".pid")); err != nil || got != pid {
		t.Errorf("jailer pid file: %d, %v; want %d", got, err, pid)
	}
	if got, err := readPIDFile(s.PIDFile); err != nil || got != pid {
		t.Errorf("driver pidfile: %d, %v; want %d", got, err, pid)
	}
	for _, sock := range []string{s.QMPSocket, s.VsockSocket} {
		if st, err := os.Stat(sock); err != nil || st.Mode().Type() != os.ModeSocket {
			t.Errorf("%s: %v, %v; want a socket", sock, st, err)
		}
	}
	// Files Firecracker writes: links to the spec's files, the jail's.
	for _, f := range []struct{ inJail, host string }{
		{"root.img", s.RootDisk}, {"work.img", s.WorkDisk}, {"serial.log", s.SerialLog},
	} {
		if !sameFile(t, in(f.inJail), f.host) {
			t.Errorf("jail /%s is not a hard link to %s", f.inJail, f.host)
		}
		if u, gg, perm := owner(t, in(f.inJail)); u != uid || gg != gid || perm != 0o600 {
			t.Errorf("jail /%s: %d:%d %v, want %d:%d 0600", f.inJail, u, gg, perm, uid, gid)
		}
	}
	// Files it only reads: the world-readable kernel linked and left
	// alone, the private initramfs copied for the jail user.
	ku, kg, _ := owner(t, s.Kernel)
	if !sameFile(t, in("vmlinux"), s.Kernel) {
		t.Error("world-readable kernel not hard-linked")
	} else if u, gg, _ := owner(t, in("vmlinux")); u != ku || gg != kg {
		t.Errorf("shared kernel chowned to %d:%d", u, gg)
	}
	if sameFile(t, in("initramfs"), s.Initramfs) {
		t.Error("private initramfs linked instead of copied")
	} else if u, gg, perm := owner(t, in("initramfs")); u != uid || gg != gid || perm != 0o400 {
		t.Errorf("initramfs copy %d:%d %v, want %d:%d 0400", u, gg, perm, uid, gid)
	}
	// The guest console went through the link into the daemon's file.
	if b, _ := os.ReadFile(s.SerialLog); !strings.Contains(string(b), "fake serial console") {
		t.Errorf("serial log %q lacks the console output", b)
	}
	if b, _ := os.ReadFile(s.VMMLog); !strings.Contains(string(b), "Running Firecracker") {
		t.Errorf("vmm log %q lacks the VMM's stdout", b)
	}

	// The guest agent through the chrooted vsock socket.
	c, resp, err := agent.WaitReadyVsock(ctx, s.VsockSocket, agent.VsockPort)
	if err != nil || !resp.OK {
		t.Fatalf("agent over the jail's vsock: %+v, %v", resp, err)
	}
	c.Close()
	if info, err := inst.(*Instance).Info(ctx); err != nil || info.State != StateRunning || info.ID != "0123abcd" {
		t.Errorf("Info = %+v, %v", info, err)
	}

	// Kill: Done, and the jail goes with the VMM; the disks stay.
	if err := inst.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, inst, 5*time.Second)
	jh.assertNothingLeft(t, pid)
	for _, f := range []string{s.RootDisk, s.WorkDisk, s.SerialLog, s.Kernel} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s gone with the jail: %v", f, err)
		}
	}
	if err := inst.Kill(syscall.SIGKILL); err != nil {
		t.Errorf("Kill after exit: %v", err)
	}
}

// A fixed JailUID and JailGID are what the VMM runs as (root only: the
// ids are not the test user's).
func TestJailedFixedIDs(t *testing.T) {
	if !rooted() {
		t.Skip("needs root: the fake jailer can only switch to other ids as root")
	}
	jh := newJailHarness(t, true)
	ctx := testCtx(t, 20*time.Second)
	inst, err := jh.d.Start(ctx, jh.js)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { inst.Kill(syscall.SIGKILL); waitDone(t, inst, 5*time.Second); inst.Close() }()
	uids, gids := procIDs(t, inst.PID())
	if len(uids) == 0 || uids[0] != "4242" || gids[0] != "4343" {
		t.Errorf("vmm runs as %v:%v, want 4242:4343", uids, gids)
	}
	if u, g, _ := owner(t, jh.js.RootDisk); u != 4242 || g != 4343 {
		t.Errorf("root disk owned by %d:%d", u, g)
	}
	if argv := jh.jailerArgv(t); len(argv) != 1 || !strings.Contains(strings.Join(argv[0], " "), "--uid 4242 --gid 4343") {
		t.Errorf("jailer argv %q", argv)
	}
}

// A jailed VMM outlives its daemon: the daemon, in a process group of its
// own, starts a VM and is then stopped by SIGINT to its group (Ctrl-C in
// a terminal), which must not reach the VMM. A new daemon adopts the VMM
// through the jail's layout (also without the driver's pidfile, from the
// jailer's pid file), reaches the agent and stops it with ctrl-alt-del;
// the jail goes with it.
func TestJailedAdoptAfterDaemonRestart(t *testing.T) {
	jh := newJailHarness(t, false)
	s := jh.js
	specJSON, _ := json.Marshal(s)
	drvJSON, _ := json.Marshal(jh.d)
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), daemonEnv+"=1", daemonSpecEnv+"="+string(specJSON), daemonDriverEnv+"="+string(drvJSON), daemonWaitEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Wait()
		t.Fatalf("daemon: %v: %s", err, stderr.Bytes())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("daemon printed %q", line)
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("daemon survived SIGINT")
	}
	// The SIGINT did not reach the VMM, and its jail is intact.
	time.Sleep(50 * time.Millisecond)
	if _, err := vmmproc.StartTime(pid); err != nil {
		t.Fatalf("vmm died with its daemon's process group: %v", err)
	}
	if _, err := os.Stat(jh.root); err != nil {
		t.Fatalf("jail: %v", err)
	}

	ctx := testCtx(t, 20*time.Second)
	d := &Driver{Binary: jh.d.Binary, Jailer: jh.d.Jailer, ChrootBase: jh.d.ChrootBase, JailUID: jh.d.JailUID, JailGID: jh.d.JailGID}
	inst, err := d.Adopt(ctx, s)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if inst.PID() != pid {
		t.Errorf("adopted pid %d, want %d", inst.PID(), pid)
	}
	inst.Close()
	// Without the driver's pidfile: the jailer's pid file.
	if err := os.Remove(s.PIDFile); err != nil {
		t.Fatal(err)
	}
	n := len(jh.records(t))
	inst, err = d.Adopt(ctx, s)
	if err != nil {
		t.Fatalf("Adopt from the jailer's pid file: %v", err)
	}
	defer inst.Close()
	if inst.PID() != pid {
		t.Errorf("adopted pid %d, want %d", inst.PID(), pid)
	}
	if recs := jh.records(t); len(recs) != n+1 || recs[n].Operation != "describeInstance" {
		t.Errorf("Adopt did not verify the API with GET /: %+v", recs[n:])
	}
	c, resp, err := agent.WaitReadyVsock(ctx, s.VsockSocket, agent.VsockPort)
	if err != nil || !resp.OK {
		t.Fatalf("agent: %+v, %v", resp, err)
	}
	c.Close()
	if err := inst.(*Instance).SendCtrlAltDel(ctx); err != nil {
		t.Fatal(err)
	}
	waitDone(t, inst, 5*time.Second)
	jh.assertNothingLeft(t, pid)
	if _, err := d.Adopt(ctx, s); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("Adopt after exit: %v, want ErrNotRunning", err)
	}
}

// A start that fails at any step, in the jailer, in firecracker or over
// the API, kills what it started and removes the jail.
func TestJailedStartFailureLeavesNothing(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		ctx  time.Duration
		want string
	}{
		{"drive fault", map[string]string{fakeFaultAtEnv: "PUT /drives/root", fakeFaultEnv: "Unable to create the block device"}, 20 * time.Second, "firecracker: PUT /drives/root: 400: Unable to create the block device"},
		{"vsock fault", map[string]string{fakeFaultAtEnv: "PUT /vsock", fakeFaultEnv: "Cannot create backend for vsock device"}, 20 * time.Second, "PUT /vsock: 400"},
		{"start fault", map[string]string{fakeFaultAtEnv: "PUT /actions", fakeFaultEnv: "Start microvm error"}, 20 * time.Second, "PUT /actions: 400: Start microvm error"},
		{"firecracker exits", map[string]string{fakeExitEnv: "Error: Kvm(Error(19)): No such device"}, 20 * time.Second, "jailer or firecracker exited during start-up (exit status 1)"},
		{"context ends", map[string]string{fakeHangAtEnv: "PUT /vsock"}, 500 * time.Millisecond, "context deadline exceeded"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			jh := newJailHarness(t, false)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			_, err := jh.d.Start(testCtx(t, c.ctx), jh.js)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Start: %v, want %q", err, c.want)
			}
			if len(jh.jailerArgv(t)) != 1 {
				t.Errorf("jailer ran %d times", len(jh.jailerArgv(t)))
			}
			var pids []int
			for _, r := range jh.records(t) {
				pids = append(pids, r.PID)
			}
			jh.assertNothingLeft(t, pids...)
		})
	}
}

// Cleanup (the daemon's delete) kills a VMM still running and removes the
// jail, the pidfile and the sockets, not the disks; it is idempotent.
func TestJailedCleanup(t *testing.T) {
	jh := newJailHarness(t, false)
	ctx := testCtx(t, 20*time.Second)
	if err := jh.d.Cleanup(jh.js); err != nil {
		t.Errorf("Cleanup with nothing there: %v", err)
	}
	inst, err := jh.d.Start(ctx, jh.js)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if err := jh.d.Cleanup(jh.js); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	waitDone(t, inst, 5*time.Second)
	jh.assertNothingLeft(t, inst.PID())
	for _, f := range []string{jh.js.RootDisk, jh.js.WorkDisk, jh.js.SerialLog} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if err := jh.d.Cleanup(jh.js); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

// A stale jail (a daemon that died before cleaning up) is replaced by the
// next Start, which would otherwise trip over the jailer's pid file.
func TestJailedStartReplacesStaleJail(t *testing.T) {
	jh := newJailHarness(t, false)
	if err := os.MkdirAll(filepath.Join(jh.root, "run"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{jh.execName + ".pid", "root.img", "run/firecracker.socket"} {
		writeFile(t, filepath.Join(jh.root, f), "stale")
	}
	ctx := testCtx(t, 20*time.Second)
	inst, err := jh.d.Start(ctx, jh.js)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { inst.Kill(syscall.SIGKILL); waitDone(t, inst, 5*time.Second); inst.Close() }()
	if !sameFile(t, filepath.Join(jh.root, "root.img"), jh.js.RootDisk) {
		t.Error("stale root.img kept")
	}
	// A second Start finds the running VMM and leaves its jail alone.
	if _, err := jh.d.Start(ctx, jh.js); err == nil || !strings.Contains(err.Error(), "already running as pid "+strconv.Itoa(inst.PID())) {
		t.Errorf("second Start: %v", err)
	}
	if _, err := os.Stat(jh.js.QMPSocket); err != nil {
		t.Errorf("second Start disturbed the jail: %v", err)
	}
}

// A disk on another filesystem than the jail cannot be hard-linked; a
// copy would lose the guest's writes, so Start says so and runs nothing.
// A read-only input there is copied instead.
func TestJailedOtherFilesystem(t *testing.T) {
	jh := newJailHarness(t, false)
	other, err := os.MkdirTemp("/dev/shm", "banger-jail-test-")
	if err != nil {
		t.Skipf("no /dev/shm to put a file on another filesystem: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	// The jail will be under h.dir, on the test's filesystem.
	probe := filepath.Join(other, "probe")
	writeFile(t, probe, "x")
	if err := os.Link(probe, filepath.Join(jh.harness.dir, "probe")); err == nil {
		t.Skipf("%s and %s are on the same filesystem here", other, jh.harness.dir)
	} else if !errors.Is(err, syscall.EXDEV) {
		t.Skipf("cannot tell whether %s is on another filesystem: %v", other, err)
	}

	s := jh.js
	s.WorkDisk = filepath.Join(other, "work.ext4")
	writeFile(t, s.WorkDisk, "disk")
	_, err = jh.d.Start(testCtx(t, 20*time.Second), s)
	if err == nil || !strings.Contains(err.Error(), "work disk "+s.WorkDisk+" is on another filesystem than the jail") || !strings.Contains(err.Error(), "a copy would not keep the guest's writes") {
		t.Fatalf("Start: %v", err)
	}
	if argv := jh.jailerArgv(t); len(argv) != 0 {
		t.Errorf("the jailer ran: %q", argv)
	}
	jh.assertNothingLeft(t)

	s = jh.js
	s.Kernel = filepath.Join(other, "vmlinux")
	writeFile(t, s.Kernel, "kernel")
	inst, err := jh.d.Start(testCtx(t, 20*time.Second), s)
	if err != nil {
		t.Fatalf("Start with the kernel elsewhere: %v", err)
	}
	defer func() { inst.Kill(syscall.SIGKILL); waitDone(t, inst, 5*time.Second); inst.Close() }()
	if b, err := os.ReadFile(filepath.Join(jh.root, "vmlinux")); err != nil || string(b) != "kernel" {
		t.Errorf("kernel copy: %q, %v", b, err)
	}
}

// Jail configurations and specs Start cannot use are refused before
// anything runs or is created.
func TestJailerRefusals(t *testing.T) {
	jh := newJailHarness(t, false)
	notFC := filepath.Join(jh.harness.dir, "bin", "vmm")
	writeFile(t, notFC, "#!/bin/sh\n")
	os.Chmod(notFC, 0o755)
	// Either the spec changes (it is otherwise jh.js), or the driver
	// does (and the spec goes through its JailSpec).
	cases := []struct {
		name string
		spec func(*engine.Spec)
		drv  func(*Driver)
		want string
	}{
		{"spec not through JailSpec", func(s *engine.Spec) { *s = jh.spec }, nil, "api socket " + jh.spec.QMPSocket + ": under the jailer it must be in the jail's /run"},
		{"vsock outside the jail", func(s *engine.Spec) { s.VsockSocket = jh.spec.VsockSocket }, nil, "vsock socket " + jh.spec.VsockSocket + ": under the jailer"},
		{"socket deeper in the jail", func(s *engine.Spec) { s.QMPSocket = filepath.Join(jh.root, "run", "x", "api.sock") }, nil, "must be in the jail's /run"},
		{"relative chroot base", nil, func(d *Driver) { d.ChrootBase = "jail" }, `jailer chroot base "jail" is not an absolute path`},
		{"negative uid", nil, func(d *Driver) { d.JailUID = -1 }, "jail uid -1 out of range"},
		{"gid too large", nil, func(d *Driver) { d.JailGID = 1 << 32 }, "jail gid 4294967296 out of range"},
		{"binary without firecracker in its name", nil, func(d *Driver) { d.Binary = notFC }, `file name contains "firecracker"`},
		{"missing binary", nil, func(d *Driver) { d.Binary = filepath.Join(jh.dir, "firecracker") }, "firecracker binary: "},
		{"missing jailer", nil, func(d *Driver) { d.Jailer = filepath.Join(jh.dir, "jailer") }, "jailer binary: "},
	}
	for _, c := range cases {
		d := *jh.d
		s := jh.js
		if c.spec != nil {
			c.spec(&s)
		} else {
			c.drv(&d)
			s = d.JailSpec(jh.spec)
		}
		_, err := d.Start(context.Background(), s)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if _, err := os.Stat(jh.base); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: chroot base created", c.name)
			os.RemoveAll(jh.base)
		}
	}
	if argv := jh.jailerArgv(t); len(argv) != 0 {
		t.Errorf("the jailer ran: %q", argv)
	}
}

// The jailer names the jail, and its copy of the binary, after the file
// the firecracker path resolves to; JailSpec and the argv follow.
func TestJailNamedAfterResolvedBinary(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "firecracker-v1.12.0-x86_64")
	writeFile(t, real, "")
	os.Chmod(real, 0o755)
	link := filepath.Join(dir, "firecracker")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	d := &Driver{Binary: link, Jailer: "/usr/bin/jailer", ChrootBase: "/srv/jailer", NetNS: "/var/run/netns/vms", JailUID: 1234}
	spec := d.JailSpec(engine.Spec{ID: "my_vm.1", QMPSocket: "/run/x/api.sock", VsockSocket: "/run/x/v.sock"})
	root := "/srv/jailer/firecracker-v1.12.0-x86_64/my-vm-1/root"
	if spec.QMPSocket != root+"/run/firecracker.socket" || spec.VsockSocket != root+"/run/vsock.sock" {
		t.Errorf("JailSpec sockets %s, %s; want them in %s/run", spec.QMPSocket, spec.VsockSocket, root)
	}
	if again := d.JailSpec(spec); !reflect.DeepEqual(again, spec) {
		t.Errorf("JailSpec is not idempotent: %+v", again)
	}
	if s := d.JailSpec(engine.Spec{ID: "x", QMPSocket: "/run/x/api.sock"}); s.VsockSocket != "" {
		t.Errorf("JailSpec invented a vsock socket: %q", s.VsockSocket)
	}
	if s := New(link, "").JailSpec(engine.Spec{ID: "x", QMPSocket: "/run/x/api.sock"}); s.QMPSocket != "/run/x/api.sock" {
		t.Errorf("JailSpec without a jailer moved the socket to %s", s.QMPSocket)
	}
	j, err := d.jailFor(spec)
	if err != nil {
		t.Fatal(err)
	}
	j.uid, j.gid, err = d.jailIDs(j)
	if err != nil || j.uid != 1234 || j.gid != 1234 {
		t.Fatalf("jailIDs = %d, %d, %v; want 1234, 1234 (JailGID 0: the uid's number)", j.uid, j.gid, err)
	}
	want := []string{"--id", "my-vm-1", "--exec-file", link, "--uid", "1234", "--gid", "1234", "--chroot-base-dir", "/srv/jailer", "--netns", "/var/run/netns/vms", "--", "--api-sock", "/run/firecracker.socket"}
	if got := d.jailerArgs(j); !reflect.DeepEqual(got, want) {
		t.Errorf("jailer args %q,\nwant %q", got, want)
	}
	if j.pidFile() != root+"/firecracker-v1.12.0-x86_64.pid" {
		t.Errorf("jailer pid file %s", j.pidFile())
	}
}

// Derived ids are stable per VM, in range, and skip ids that belong to a
// host account or to another jail.
func TestJailIDsDerived(t *testing.T) {
	base := t.TempDir()
	d := &Driver{Binary: "/nonexistent/firecracker", Jailer: "jailer", ChrootBase: base}
	j, err := d.jailDir(engine.Spec{ID: "0123abcd"})
	if err != nil {
		t.Fatal(err)
	}
	uid, gid, err := d.jailIDs(j)
	if err != nil || uid != gid || uid < DefaultJailIDBase || uid >= DefaultJailIDBase+JailIDCount {
		t.Fatalf("jailIDs = %d, %d, %v", uid, gid, err)
	}
	if u2, _, _ := d.jailIDs(j); u2 != uid {
		t.Errorf("not stable: %d then %d", uid, u2)
	}
	other, _ := d.jailDir(engine.Spec{ID: "4567cdef"})
	if u2, _, _ := d.jailIDs(other); u2 == uid {
		t.Logf("two ids hash to the same uid %d (possible, just unlikely)", uid)
	}

	// An id that names an account is skipped: aim the first candidate
	// at nobody (65534).
	if !accountExists(65534) {
		t.Skip("no account 65534 to collide with")
	}
	h := fnv.New32a()
	h.Write([]byte("0123abcd"))
	d.JailIDBase = 65534 - int(h.Sum32()%JailIDCount)
	if uid, _, err := d.jailIDs(j); err != nil || uid <= 65534 || accountExists(uid) {
		t.Errorf("jailIDs = %d, %v; want the account's id 65534 skipped for a free one after it", uid, err)
	}

	// An id another jail under the base runs as is skipped too.
	if !rooted() {
		return
	}
	d.JailIDBase = 3000000 - int(h.Sum32()%JailIDCount)
	taken := filepath.Join(base, "firecracker", "other", "root")
	if err := os.MkdirAll(taken, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(taken, 3000000, 3000000); err != nil {
		t.Fatal(err)
	}
	if uid, _, err := d.jailIDs(j); err != nil || uid != 3000001 {
		t.Errorf("jailIDs = %d, %v; want 3000001 (3000000 is another jail's)", uid, err)
	}
}

// The fake jailer parses as strictly as the real one, so the argv tests
// mean something.
func TestFakeJailerIsStrict(t *testing.T) {
	jh := newJailHarness(t, false)
	vmm := filepath.Join(jh.harness.dir, "vmm")
	writeFile(t, vmm, "")
	os.Chmod(vmm, 0o755)
	base := []string{"--id", "x", "--exec-file", jh.bin, "--uid", "1", "--gid", "1", "--chroot-base-dir", jh.base}
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(base, "--bogus"), "Found argument 'bogus' which wasn't expected"},
		{[]string{"--id=x", "--exec-file", jh.bin, "--uid", "1", "--gid", "1"}, "Found argument 'id=x'"},
		{[]string{"--exec-file", jh.bin, "--uid", "1", "--gid", "1"}, "Argument 'id' required, but not found."},
		{append(base, "--id", "y"), "The argument 'id' was provided more than once."},
		{[]string{"--id", "--uid"}, "The argument 'id' requires a value"},
		{append(base, "--daemonize"), "--daemonize is not implemented"},
		{[]string{"--id", "a_b", "--exec-file", jh.bin, "--uid", "1", "--gid", "1", "--chroot-base-dir", jh.base}, "Invalid instance ID"},
		{[]string{"--id", "x", "--exec-file", vmm, "--uid", "1", "--gid", "1", "--chroot-base-dir", jh.base}, "must contain \"firecracker\""},
	} {
		out, err := exec.Command(jh.jailer, c.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("jailer %q: %v: %s\nwant %q", c.args, err, out, c.want)
		}
	}
	if out, err := exec.Command(jh.bin, "--api-sock", "/x", "--bogus").CombinedOutput(); err == nil || !strings.Contains(string(out), "Found argument 'bogus'") {
		t.Errorf("firecracker --bogus: %v: %s", err, out)
	}
	if out, err := exec.Command(jh.jailer, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "Jailer v"+fakeVersion) {
		t.Errorf("jailer --version: %v: %s", err, out)
	}
}

// Check with a jailer: a jailer of another version than Firecracker is
// reported; one of the same version is not.
func TestCheckJailer(t *testing.T) {
	jh := newJailHarness(t, false)
	_, ver, err := jh.d.Check(context.Background())
	if ver != fakeVersion {
		t.Errorf("version %q, %v", ver, err)
	}
	if err != nil && strings.Contains(err.Error(), "jailer") && rooted() {
		t.Errorf("Check complains about a matching jailer: %v", err)
	}
	t.Setenv(fakeJailerVersionEnv, "1.0.0")
	_, _, err = jh.d.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "is version 1.0.0 but firecracker is "+fakeVersion) {
		t.Errorf("Check with a mismatched jailer: %v", err)
	}
	d := *jh.d
	d.ChrootBase = "relative"
	if _, _, err := d.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("Check with a relative chroot base: %v", err)
	}
	d = *jh.d
	d.JailUID = -5
	if _, _, err := d.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "jail uid -5 out of range") {
		t.Errorf("Check with a bad jail uid: %v", err)
	}
}

// modes runs f for a VM started directly and one under the jailer.
func modes(t *testing.T, f func(t *testing.T, d *Driver, h *harness, spec engine.Spec)) {
	t.Run("direct", func(t *testing.T) {
		h := newHarness(t)
		f(t, New(h.bin, ""), h, h.spec)
	})
	t.Run("jailed", func(t *testing.T) {
		jh := newJailHarness(t, false)
		f(t, jh.d, jh.harness, jh.js)
	})
}

// A guest whose vsock peer never answers the CONNECT (the VMM reads it
// and stays silent, as while the guest boots) holds the caller no longer
// than its context, directly and through a jail.
func TestHybridVsockSilentPeer(t *testing.T) {
	modes(t, func(t *testing.T, d *Driver, h *harness, spec engine.Spec) {
		t.Setenv(fakeSilentEnv, "1")
		inst, err := d.Start(testCtx(t, 20*time.Second), spec)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { inst.Kill(syscall.SIGKILL); waitDone(t, inst, 5*time.Second); inst.Close() }()
		// Cancelled: the blocked read is cut short.
		start := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(150*time.Millisecond, cancel)
		conn, err := agent.DialHybridVsock(ctx, spec.VsockSocket, agent.VsockPort)
		if err == nil {
			conn.Close()
			t.Fatal("handshake succeeded with a silent peer")
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("DialHybridVsock: %v, want context.Canceled", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("DialHybridVsock returned %s after the cancel", el)
		}
		// A deadline: the connection's own deadline (set from the
		// context's) and the context's timer race, so either deadline
		// error is fine; the bound is what matters.
		deadline := func(err error) bool {
			return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
		}
		start = time.Now()
		conn, err = agent.DialHybridVsock(testCtx(t, 150*time.Millisecond), spec.VsockSocket, agent.VsockPort)
		if err == nil {
			conn.Close()
		}
		if !deadline(err) {
			t.Errorf("DialHybridVsock: %v, want a deadline error", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("DialHybridVsock returned after %s", el)
		}
		start = time.Now()
		_, _, err = agent.WaitReadyVsock(testCtx(t, 250*time.Millisecond), spec.VsockSocket, agent.VsockPort)
		if !deadline(err) {
			t.Errorf("WaitReadyVsock: %v, want a deadline error", err)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("WaitReadyVsock returned after %s", el)
		}
		h.records(t)
	})
}

// A VM's whole life through the driver, as the daemon drives it, directly
// and under the jailer: create (clone the root disk), start, reach the
// agent, stop gracefully through the agent, start again, stop with
// ctrl-alt-del, delete (Cleanup). Every request is checked against the
// API definition, and each boot makes the same calls.
func TestLifecycle(t *testing.T) {
	modes(t, func(t *testing.T, d *Driver, h *harness, spec engine.Spec) {
		// Create: the root disk is a clone of an image, as the daemon
		// makes it.
		base := filepath.Join(h.dir, "base.ext4")
		makeSparseDisk(t, base)
		os.Remove(spec.RootDisk)
		if _, err := CloneDisk(base, spec.RootDisk); err != nil {
			t.Fatal(err)
		}
		ctx := testCtx(t, 30*time.Second)
		boot := func(stop func(inst engine.Instance)) int {
			t.Helper()
			n := len(h.records(t))
			inst, err := d.Start(ctx, spec)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			defer inst.Close()
			c, resp, err := agent.WaitReadyVsock(ctx, spec.VsockSocket, agent.VsockPort)
			if err != nil || !resp.OK {
				t.Fatalf("agent: %+v, %v", resp, err)
			}
			defer c.Close()
			stop(inst)
			waitDone(t, inst, 5*time.Second)
			if _, err := os.Stat(spec.PIDFile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pidfile left after the guest stopped: %v", err)
			}
			var ops []string
			for _, r := range h.records(t)[n:] {
				ops = append(ops, r.Operation)
			}
			return len(ops)
		}
		// Boot 1, stopped by the guest agent (what `banger vm stop`
		// tries first).
		calls := boot(func(inst engine.Instance) {
			conn, err := agent.DialHybridVsock(ctx, spec.VsockSocket, agent.VsockPort)
			if err != nil {
				t.Fatal(err)
			}
			c, err := agent.NewClient(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Call(ctx, agent.Request{Op: agent.OpPoweroff}); err != nil {
				t.Fatal(err)
			}
		})
		// Boot 2 (a restart), stopped by ctrl-alt-del (the fallback).
		calls2 := boot(func(inst engine.Instance) {
			if err := inst.(*Instance).SendCtrlAltDel(ctx); err != nil {
				t.Fatal(err)
			}
		})
		// 11 configuration calls; the second boot adds the ctrl-alt-del.
		if calls != 11 || calls2 != 12 {
			t.Errorf("boots made %d and %d calls, want 11 and 12", calls, calls2)
		}
		// Delete.
		if err := d.Cleanup(spec); err != nil {
			t.Fatalf("Cleanup: %v", err)
		}
		if pids := findVMMs(h.id); len(pids) > 0 {
			t.Errorf("vmm left: %v", pids)
		}
		for _, p := range []string{spec.PIDFile, spec.QMPSocket, spec.VsockSocket} {
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left: %v", p, err)
			}
		}
		if d.Jailer != "" {
			j, _ := d.jailDir(spec)
			if _, err := os.Lstat(j.dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("jail %s left: %v", j.dir, err)
			}
		}
		sameContent(t, base, spec.RootDisk) // the guest wrote nothing; the clone is intact
		h.records(t)                        // every request, checked against the definition
	})
}
