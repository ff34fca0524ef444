package firecracker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// harness runs the driver against the fake Firecracker process.
type harness struct {
	dir    string
	bin    string // link "firecracker" -> the test binary
	record string
	spec   engine.Spec
	id     vmmID // how the spec's VMM is recognised
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	_, specPath := loadSpec(t)
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{dir: dir, bin: filepath.Join(dir, "bin", "firecracker"), record: filepath.Join(dir, "requests.jsonl")}
	run := filepath.Join(dir, "run")
	for _, d := range []string{filepath.Dir(h.bin), run} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A hard link, or else a copy, not a symlink: the jailer names the
	// jail after the file the binary resolves to, which must contain
	// "firecracker" whatever the test binary is called (jail naming
	// through a symlink is tested on its own).
	if err := os.Link(exe, h.bin); err != nil {
		if err := copyExec(exe, h.bin, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(fakeEnv, "1")
	t.Setenv(fakeSpecEnv, specPath)
	t.Setenv(fakeRecordEnv, h.record)
	for _, f := range []struct {
		name string
		size int64
	}{{"vmlinux", 4096}, {"initramfs.img", 4096}, {"root.raw", 8 << 20}, {"work.ext4", 8 << 20}} {
		if err := os.WriteFile(filepath.Join(dir, f.name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(filepath.Join(dir, f.name), f.size); err != nil {
			t.Fatal(err)
		}
	}
	h.spec = engine.Spec{
		ID: "0123abcd", Name: "dev", VCPU: 2, MemoryMiB: 256,
		Kernel:      filepath.Join(dir, "vmlinux"),
		Initramfs:   filepath.Join(dir, "initramfs.img"),
		Cmdline:     "quiet banger.name=dev banger.root=/dev/vda banger.work=/dev/vdb",
		RootDisk:    filepath.Join(dir, "root.raw"),
		WorkDisk:    filepath.Join(dir, "work.ext4"),
		SerialLog:   filepath.Join(dir, "serial.log"),
		VMMLog:      filepath.Join(dir, "vmm.log"),
		VsockSocket: filepath.Join(run, "vsock.sock"),
		QMPSocket:   filepath.Join(run, "api.sock"),
		PIDFile:     filepath.Join(run, "firecracker.pid"),
		Accel:       engine.AccelKVM,
		Balloon:     true,
		NICs: []engine.NIC{
			{Tap: "bng-dev0", MAC: "52:54:00:AB:CD:01"},
			{Tap: "bng-dev1", MAC: "52:54:00:ab:cd:02"},
		},
	}
	h.id = vmmID{apiSock: h.spec.QMPSocket}
	t.Cleanup(func() {
		// Whatever a failing test left running.
		for _, pid := range findVMMs(h.id) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return h
}

// records returns the requests the fake received so far, failing the test
// on any recorded violation of the API definition.
func (h *harness) records(t *testing.T) []fakeRecord {
	t.Helper()
	b, err := os.ReadFile(h.record)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var recs []fakeRecord
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r fakeRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad record %q: %v", sc.Text(), err)
		}
		for _, v := range r.Violations {
			t.Errorf("%s %s violates the API definition: %s", r.Method, r.Path, v)
		}
		recs = append(recs, r)
	}
	return recs
}

// assertNothingLeft checks that no VMM for the spec runs and that its
// pidfile and sockets are gone.
func (h *harness) assertNothingLeft(t *testing.T, pids ...int) {
	t.Helper()
	if pids := findVMMs(h.id); len(pids) > 0 {
		t.Errorf("vmm still running: %v", pids)
	}
	for _, pid := range pids {
		if _, err := vmmproc.StartTime(pid); err == nil {
			t.Errorf("pid %d still exists", pid)
		}
	}
	for _, p := range []string{h.spec.PIDFile, h.spec.PIDFile + ".tmp", h.spec.QMPSocket, h.spec.VsockSocket} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitDone(t *testing.T, inst engine.Instance, d time.Duration) {
	t.Helper()
	select {
	case <-inst.Done():
	case <-time.After(d):
		t.Fatalf("vmm pid %d did not exit within %s", inst.PID(), d)
	}
}

func jsonEqual(t *testing.T, what string, got json.RawMessage, want any) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	wb, _ := json.Marshal(want)
	json.Unmarshal(wb, &w)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s body:\n got %s\nwant %s", what, got, wb)
	}
}

// The whole life of a VM against the fake: the start sequence and every
// body, the detached process, the guest agent over hybrid vsock, a daemon
// restart (Close, then Adopt by a new Driver), a ctrl-alt-del exit.
func TestStartAdoptAndCtrlAltDel(t *testing.T) {
	h := newHarness(t)
	ctx := testCtx(t, 20*time.Second)
	inst, err := New(h.bin, "").Start(ctx, h.spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid := inst.PID()

	// The exact sequence of calls, checked against the definition's
	// operationIds.
	recs := h.records(t)
	want := []struct{ op, method, path string }{
		{"describeInstance", "GET", "/"},
		{"putMachineConfiguration", "PUT", "/machine-config"},
		{"putGuestBootSource", "PUT", "/boot-source"},
		{"putSerialDevice", "PUT", "/serial"},
		{"putGuestDriveByID", "PUT", "/drives/root"},
		{"putGuestDriveByID", "PUT", "/drives/work"},
		{"putGuestNetworkInterfaceByID", "PUT", "/network-interfaces/eth0"},
		{"putGuestNetworkInterfaceByID", "PUT", "/network-interfaces/eth1"},
		{"putGuestVsock", "PUT", "/vsock"},
		{"putBalloon", "PUT", "/balloon"},
		{"createSyncAction", "PUT", "/actions"},
	}
	if len(recs) != len(want) {
		for _, r := range recs {
			t.Logf("got %s %s (%s)", r.Method, r.Path, r.Operation)
		}
		t.Fatalf("%d requests, want %d", len(recs), len(want))
	}
	for i, w := range want {
		r := recs[i]
		if r.Operation != w.op || r.Method != w.method || r.Path != w.path || r.Status/100 != 2 {
			t.Errorf("request %d: %s %s (%s) -> %d, want %s %s (%s) -> 2xx", i, r.Method, r.Path, r.Operation, r.Status, w.method, w.path, w.op)
		}
		if r.PID != pid {
			t.Errorf("request %d served by pid %d, want %d", i, r.PID, pid)
		}
	}
	s := h.spec
	jsonEqual(t, "machine-config", recs[1].Body, map[string]any{"vcpu_count": 2, "mem_size_mib": 256})
	jsonEqual(t, "boot-source", recs[2].Body, map[string]any{
		"kernel_image_path": s.Kernel,
		"initrd_path":       s.Initramfs,
		"boot_args":         "quiet banger.name=dev banger.root=/dev/vda banger.work=/dev/vdb console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd",
	})
	jsonEqual(t, "serial", recs[3].Body, map[string]any{"serial_out_path": s.SerialLog})
	jsonEqual(t, "root drive", recs[4].Body, map[string]any{"drive_id": "root", "path_on_host": s.RootDisk, "is_root_device": false, "is_read_only": false, "cache_type": "Writeback"})
	jsonEqual(t, "work drive", recs[5].Body, map[string]any{"drive_id": "work", "path_on_host": s.WorkDisk, "is_root_device": false, "is_read_only": false, "cache_type": "Writeback"})
	jsonEqual(t, "eth0", recs[6].Body, map[string]any{"iface_id": "eth0", "host_dev_name": "bng-dev0", "guest_mac": "52:54:00:ab:cd:01"})
	jsonEqual(t, "eth1", recs[7].Body, map[string]any{"iface_id": "eth1", "host_dev_name": "bng-dev1", "guest_mac": "52:54:00:ab:cd:02"})
	jsonEqual(t, "vsock", recs[8].Body, map[string]any{"guest_cid": 3, "uds_path": s.VsockSocket})
	// Every request was validated against the definition by the fake
	// (a violation fails the request), the balloon's included.
	jsonEqual(t, "balloon", recs[9].Body, map[string]any{"amount_mib": 0, "deflate_on_oom": true, "free_page_reporting": true})
	jsonEqual(t, "actions", recs[10].Body, map[string]any{"action_type": "InstanceStart"})

	// Detached: a session of its own, our pidfile, the expected argv.
	if got, err := readPIDFile(s.PIDFile); err != nil || got != pid {
		t.Errorf("pidfile: %d, %v; want %d", got, err, pid)
	}
	if sid, err := procSession(pid); err != nil || sid != pid {
		t.Errorf("session id %d, %v; want %d (setsid)", sid, err, pid)
	}
	argv := procCmdline(pid)
	if wantArgv := []string{h.bin, "--api-sock", s.QMPSocket, "--id", "0123abcd"}; !reflect.DeepEqual(argv, wantArgv) {
		t.Errorf("argv %q, want %q", argv, wantArgv)
	}
	if b, _ := os.ReadFile(s.VMMLog); !strings.Contains(string(b), "Running Firecracker") {
		t.Errorf("vmm log %q lacks the VMM's stdout", b)
	}
	if b, _ := os.ReadFile(s.SerialLog); !strings.Contains(string(b), "fake serial console") {
		t.Errorf("serial log %q lacks the console output", b)
	}
	fi := inst.(*Instance)
	if info, err := fi.Info(ctx); err != nil || info.State != StateRunning || info.ID != "0123abcd" {
		t.Errorf("Info = %+v, %v", info, err)
	}

	// The guest agent, over hybrid vsock.
	c, resp, err := agent.WaitReadyVsock(ctx, s.VsockSocket, agent.VsockPort)
	if err != nil {
		t.Fatalf("agent over vsock: %v", err)
	}
	if !resp.OK {
		t.Errorf("ping: %+v", resp)
	}
	c.Close()

	// Daemon restart: drop the handle, adopt with a new driver value.
	inst.Close()
	select {
	case <-inst.Done():
		t.Fatal("Close stopped the VM")
	default:
	}
	if _, err := vmmproc.StartTime(pid); err != nil {
		t.Fatalf("vmm gone after Close: %v", err)
	}
	n := len(h.records(t))
	inst2, err := New(h.bin, "").Adopt(ctx, h.spec)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	defer inst2.Close()
	if inst2.PID() != pid {
		t.Errorf("adopted pid %d, want %d", inst2.PID(), pid)
	}
	if recs := h.records(t); len(recs) != n+1 || recs[n].Operation != "describeInstance" {
		t.Errorf("Adopt did not verify the API with GET /: %+v", recs[n:])
	}

	// Graceful-stop fallback: ctrl-alt-del ends the VMM.
	if err := inst2.(*Instance).SendCtrlAltDel(ctx); err != nil {
		t.Fatalf("SendCtrlAltDel: %v", err)
	}
	waitDone(t, inst2, 5*time.Second)
	if err := inst2.Kill(syscall.SIGKILL); err != nil {
		t.Errorf("Kill after exit: %v", err)
	}
	if err := inst2.Quit(ctx); err != nil {
		t.Errorf("Quit after exit: %v", err)
	}
	if _, err := os.Stat(s.PIDFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pidfile left after exit: %v", err)
	}
	h.records(t)
}

// The VMM outlives the daemon that started it: a daemon process starts a
// VM and exits; the VMM keeps running (orphaned, in its own session, its
// stdout still going to the log), and a later daemon adopts it, reaches
// the agent and stops it.
func TestVMMSurvivesDaemonExit(t *testing.T) {
	h := newHarness(t)
	specJSON, _ := json.Marshal(h.spec)
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), daemonEnv+"=1", daemonSpecEnv+"="+string(specJSON), daemonBinEnv+"="+h.bin)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("daemon: %v: %s", err, stderr)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("daemon printed %q", out)
	}
	// The daemon is gone (reaped by cmd.Output); its VMM is not.
	if _, err := vmmproc.StartTime(pid); err != nil {
		t.Fatalf("vmm died with its daemon: %v", err)
	}
	if sid, err := procSession(pid); err != nil || sid != pid {
		t.Errorf("session %d, %v; want %d", sid, err, pid)
	}
	ctx := testCtx(t, 20*time.Second)
	inst, err := New(h.bin, "").Adopt(ctx, h.spec)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	defer inst.Close()
	if inst.PID() != pid {
		t.Errorf("adopted pid %d, want %d", inst.PID(), pid)
	}
	c, resp, err := agent.WaitReadyVsock(ctx, h.spec.VsockSocket, agent.VsockPort)
	if err != nil || !resp.OK {
		t.Fatalf("agent: %+v, %v", resp, err)
	}
	c.Close()
	// Not our child: Done comes from the pidfd.
	if err := inst.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, inst, 5*time.Second)
	if _, err := os.Stat(h.spec.PIDFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pidfile left: %v", err)
	}
	h.records(t)
}

// A fault at any step reaches the caller verbatim and leaves nothing
// behind.
func TestStartFaultLeavesNothing(t *testing.T) {
	for _, at := range []string{"PUT /machine-config", "PUT /drives/root", "PUT /network-interfaces/eth1", "PUT /vsock", "PUT /actions"} {
		t.Run(strings.ReplaceAll(at, "/", "_"), func(t *testing.T) {
			h := newHarness(t)
			const msg = "Unable to create the block device: BackingFile(Os { code: 2, kind: NotFound, message: \"No such file or directory\" })"
			t.Setenv(fakeFaultAtEnv, at)
			t.Setenv(fakeFaultEnv, msg)
			_, err := New(h.bin, "").Start(testCtx(t, 20*time.Second), h.spec)
			if err == nil {
				t.Fatal("Start succeeded")
			}
			method, path, _ := strings.Cut(at, " ")
			wantMsg := "firecracker: " + method + " " + path + ": 400: " + msg
			if !strings.Contains(err.Error(), wantMsg) {
				t.Errorf("error %q\ndoes not contain %q", err, wantMsg)
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.FaultMessage != msg {
				t.Errorf("error does not wrap the APIError: %#v", apiErr)
			}
			recs := h.records(t)
			if len(recs) == 0 {
				t.Fatal("no requests recorded")
			}
			last := recs[len(recs)-1]
			if last.Method+" "+last.Path != at {
				t.Errorf("last request %s %s, want %s", last.Method, last.Path, at)
			}
			h.assertNothingLeft(t, last.PID)
		})
	}
}

// A start cut short by its context kills the VMM and cleans up.
func TestStartCancelledLeavesNothing(t *testing.T) {
	h := newHarness(t)
	t.Setenv(fakeHangAtEnv, "PUT /vsock")
	start := time.Now()
	_, err := New(h.bin, "").Start(testCtx(t, time.Second), h.spec)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Start took %s after its deadline", d)
	}
	recs := h.records(t)
	if len(recs) == 0 || recs[len(recs)-1].Path != "/vsock" {
		t.Fatalf("requests: %+v", recs)
	}
	h.assertNothingLeft(t, recs[0].PID)
}

// A VMM that dies before its API answers is reported with its own message.
func TestStartEarlyExit(t *testing.T) {
	h := newHarness(t)
	t.Setenv(fakeExitEnv, "Error: Kvm(Error(19)): No such device")
	_, err := New(h.bin, "").Start(testCtx(t, 20*time.Second), h.spec)
	if err == nil || !strings.Contains(err.Error(), "firecracker exited during start-up (exit status 1)") || !strings.Contains(err.Error(), "No such device") {
		t.Fatalf("Start: %v", err)
	}
	h.assertNothingLeft(t)
}

func TestStartRefusesRunningVMM(t *testing.T) {
	h := newHarness(t)
	ctx := testCtx(t, 20*time.Second)
	d := New(h.bin, "")
	inst, err := d.Start(ctx, h.spec)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	if _, err := d.Start(ctx, h.spec); err == nil || !strings.Contains(err.Error(), "already running as pid "+strconv.Itoa(inst.PID())) {
		t.Errorf("second Start: %v", err)
	}
	// Without its pidfile the VMM is still found by its command line.
	os.Remove(h.spec.PIDFile)
	if _, err := d.Start(ctx, h.spec); err == nil || !strings.Contains(err.Error(), "pidfile is missing") {
		t.Errorf("Start without pidfile: %v", err)
	}
	adopted, err := d.Adopt(ctx, h.spec)
	if err != nil {
		t.Fatalf("Adopt without pidfile: %v", err)
	}
	adopted.Close()
	select {
	case <-inst.Done():
		t.Fatal("the running VMM was disturbed")
	default:
	}
	if err := inst.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, inst, 5*time.Second)
}

func TestKillAndQuit(t *testing.T) {
	h := newHarness(t)
	ctx := testCtx(t, 20*time.Second)
	d := New(h.bin, "")
	inst, err := d.Start(ctx, h.spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDone(t, inst, 5*time.Second)
	if _, err := os.Stat(h.spec.PIDFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pidfile left after kill: %v", err)
	}
	inst.Close()
	if _, err := d.Adopt(ctx, h.spec); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("Adopt after exit: %v, want ErrNotRunning", err)
	}

	// The killed VMM left its sockets; a new Start clears them.
	inst, err = d.Start(ctx, h.spec)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer inst.Close()
	if err := inst.Quit(ctx); err != nil {
		t.Fatalf("Quit: %v", err)
	}
	waitDone(t, inst, time.Second)
}

// The agent's poweroff ends the VMM.
func TestAgentPoweroffEndsVMM(t *testing.T) {
	h := newHarness(t)
	ctx := testCtx(t, 20*time.Second)
	inst, err := New(h.bin, "").Start(ctx, h.spec)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	conn, err := agent.DialHybridVsock(ctx, h.spec.VsockSocket, agent.VsockPort)
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
	waitDone(t, inst, 5*time.Second)
}

// A pidfile naming some other process is refused, and that process is
// left alone.
func TestAdoptRefusesForeignPID(t *testing.T) {
	dir := t.TempDir()
	spec := engine.Spec{Name: "x", VCPU: 1, MemoryMiB: 128, QMPSocket: filepath.Join(dir, "api.sock"), PIDFile: filepath.Join(dir, "fc.pid"), Accel: engine.AccelKVM}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep binary: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	os.WriteFile(spec.PIDFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	d := New("", "")
	if _, err := d.Adopt(context.Background(), spec); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("foreign pid: %v, want ErrNotRunning", err)
	}
	if _, err := vmmproc.StartTime(cmd.Process.Pid); err != nil {
		t.Errorf("the foreign process was harmed: %v", err)
	}
	os.WriteFile(spec.PIDFile, []byte("garbage"), 0o644)
	if _, err := d.Adopt(context.Background(), spec); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("bad pidfile: %v, want ErrNotRunning", err)
	}
	os.Remove(spec.PIDFile)
	if _, err := d.Adopt(context.Background(), spec); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("no pidfile: %v, want ErrNotRunning", err)
	}
}

// A Firecracker left unconfigured by a daemon that died mid-Start is
// killed by Adopt, not adopted.
func TestAdoptKillsUnstartedVMM(t *testing.T) {
	h := newHarness(t)
	cmd := exec.Command(h.bin, "--api-sock", h.spec.QMPSocket, "--id", instanceID(h.spec))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	go func() { cmd.Wait(); close(reaped) }()
	if err := writePIDFile(h.spec.PIDFile, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)
	for {
		if _, err := NewClient(h.spec.QMPSocket).DescribeInstance(ctx); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("fake did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err := New(h.bin, "").Adopt(ctx, h.spec)
	if !errors.Is(err, engine.ErrNotRunning) || !strings.Contains(err.Error(), "never started") {
		t.Fatalf("Adopt: %v", err)
	}
	select {
	case <-reaped:
	case <-time.After(5 * time.Second):
		t.Fatal("unstarted vmm not killed")
	}
	h.assertNothingLeft(t)
}

func TestAdoptChecksInstanceID(t *testing.T) {
	h := newHarness(t)
	ctx := testCtx(t, 20*time.Second)
	inst, err := New(h.bin, "").Start(ctx, h.spec)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { inst.Kill(syscall.SIGKILL); waitDone(t, inst, 5*time.Second); inst.Close() }()
	other := h.spec
	other.ID = "someone-else"
	if _, err := New(h.bin, "").Adopt(ctx, other); err == nil || !strings.Contains(err.Error(), `serves instance "0123abcd", not "someone-else"`) {
		t.Errorf("Adopt with another id: %v", err)
	}
}

// What Firecracker cannot do is refused before anything is launched.
func TestStartRejectsUnsupported(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"vmlinux", "root.raw"} {
		os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "root.qcow2"), []byte("QFI\xfb\x00\x00\x00\x03"), 0o644)
	base := engine.Spec{
		ID: "x", VCPU: 1, MemoryMiB: 128,
		Kernel:    filepath.Join(dir, "vmlinux"),
		RootDisk:  filepath.Join(dir, "root.raw"),
		QMPSocket: filepath.Join(dir, "api.sock"),
		PIDFile:   filepath.Join(dir, "fc.pid"),
		Accel:     engine.AccelKVM,
	}
	cases := []struct {
		name string
		mut  func(*engine.Spec)
		want string
	}{
		{"tcg", func(s *engine.Spec) { s.Accel = engine.AccelTCG }, `firecracker needs kvm; accelerator "tcg"`},
		{"user nic", func(s *engine.Spec) { s.NICs = []engine.NIC{{User: true}} }, "nic 0: firecracker supports tap networking only"},
		{"agent port", func(s *engine.Spec) { s.AgentSocket = filepath.Join(dir, "agent.sock") }, "no virtio-serial ports"},
		{"vcpus", func(s *engine.Spec) { s.VCPU = 33 }, "at most 32 vcpus"},
		{"no kernel", func(s *engine.Spec) { s.Kernel = "" }, "needs a kernel"},
		{"qcow2 root", func(s *engine.Spec) { s.RootDisk = filepath.Join(dir, "root.qcow2") }, "is a qcow2 image; firecracker needs raw images"},
		{"missing kernel", func(s *engine.Spec) { s.Kernel = filepath.Join(dir, "nope") }, "kernel: stat"},
		{"missing run dir", func(s *engine.Spec) { s.VsockSocket = filepath.Join(dir, "no", "v.sock") }, "vsock socket directory"},
		{"cmdline too long", func(s *engine.Spec) { s.Cmdline = strings.Repeat("x", 2000) }, "kernel command line is"},
		{"invalid spec", func(s *engine.Spec) { s.VsockCID = 2 }, "vsock cid 2"},
	}
	for _, c := range cases {
		s := base
		c.mut(&s)
		_, err := New(filepath.Join(dir, "firecracker-does-not-exist"), "").Start(context.Background(), s)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if _, err := os.Stat(s.PIDFile); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: pidfile created", c.name)
		}
	}
	// A binary that cannot be run is reported as such.
	_, err := New(filepath.Join(dir, "firecracker-does-not-exist"), "").Start(context.Background(), base)
	if err == nil || !strings.Contains(err.Error(), "run firecracker") {
		t.Errorf("missing binary: %v", err)
	}
}

func TestSpecVsockValidation(t *testing.T) {
	base := engine.Spec{Name: "x", VCPU: 1, MemoryMiB: 64, QMPSocket: "/run/x/api.sock", PIDFile: "/run/x/fc.pid", Accel: engine.AccelKVM}
	long := "/" + strings.Repeat("v", engine.MaxSocketPath)
	cases := []struct {
		sock string
		cid  uint32
		want string
	}{
		{"/run/x/vsock.sock", 0, ""},
		{"/run/x/vsock.sock", 3, ""},
		{"/run/x/vsock.sock", 1 << 31, ""},
		{"/run/x/vsock.sock", 2, "vsock cid 2 out of range"},
		{"/run/x/vsock.sock", 0xffffffff, "out of range"},
		{"", 5, "vsock cid 5 needs a vsock socket"},
		{"vsock.sock", 0, `vsock socket path "vsock.sock" is not absolute`},
		{long, 0, "vsock socket path"},
	}
	for _, c := range cases {
		s := base
		s.VsockSocket, s.VsockCID = c.sock, c.cid
		err := s.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q/%d: %v", c.sock, c.cid, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q/%d: %v, want %q", c.sock, c.cid, err, c.want)
		}
	}
}

func TestIsVMMFor(t *testing.T) {
	const sock = "/run/vm/api.sock"
	jailed := vmmID{apiSock: "/run/firecracker.socket", id: "0123abcd"}
	jailedArgv := []string{"/firecracker", "--id", "0123abcd", "--start-time-us", "1", "--start-time-cpu-us", "0", "--parent-cpu-time-us", "9", "--api-sock", "/run/firecracker.socket"}
	for _, c := range []struct {
		name string
		argv []string
		want bool
	}{
		{"jailed", jailedArgv, true},
		{"jailed, versioned exec file", append([]string{"/firecracker-v1.12.0-x86_64"}, jailedArgv[1:]...), true},
		{"another jail", []string{"/firecracker", "--id", "0123abce", "--api-sock", "/run/firecracker.socket"}, false},
		{"jail id missing", []string{"/firecracker", "--api-sock", "/run/firecracker.socket"}, false},
		{"the jailer before it execs", []string{"/usr/bin/firecracker-jailer", "--id", "0123abcd", "--exec-file", "/usr/bin/firecracker", "--", "--api-sock", "/run/firecracker.socket"}, false},
	} {
		if got := isVMMFor(c.argv, jailed); got != c.want {
			t.Errorf("%s: isVMMFor = %v, want %v", c.name, got, c.want)
		}
	}
	cases := []struct {
		name string
		argv []string
		want bool
	}{
		{"separate", []string{"/usr/bin/firecracker", "--api-sock", sock, "--id", "x"}, true},
		{"equals", []string{"firecracker", "--api-sock=" + sock}, true},
		{"versioned binary", []string{"/opt/firecracker-v1.12.0-x86_64", "--id", "x", "--api-sock", sock}, true},
		{"other vm", []string{"firecracker", "--api-sock", "/run/vm2/api.sock"}, false},
		{"longer path", []string{"firecracker", "--api-sock", sock + ".old"}, false},
		{"flag at the end", []string{"firecracker", "--api-sock"}, false},
		{"path as another flag's value", []string{"firecracker", "--log-path", sock}, false},
		{"not firecracker", []string{"/bin/sleep", "--api-sock", sock}, false},
		{"qemu", []string{"qemu-system-x86_64", "-chardev", "socket,id=qmp,path=" + sock}, false},
		{"zombie", nil, false},
	}
	for _, c := range cases {
		if got := isVMMFor(c.argv, vmmID{apiSock: sock}); got != c.want {
			t.Errorf("%s: isVMMFor = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestInstanceID(t *testing.T) {
	cases := map[string]string{
		"0123abcd":              "0123abcd",
		"my_vm.1":               "my-vm-1",
		strings.Repeat("a", 70): strings.Repeat("a", 64),
	}
	for in, want := range cases {
		if got := instanceID(engine.Spec{ID: in}); got != want {
			t.Errorf("instanceID(%q) = %q, want %q", in, got, want)
		}
	}
	if got := instanceID(engine.Spec{Name: "dev"}); got != "dev" {
		t.Errorf("name fallback: %q", got)
	}
}

func TestReadWritePIDFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fc.pid")
	if err := writePIDFile(p, 4321); err != nil {
		t.Fatal(err)
	}
	if pid, err := readPIDFile(p); err != nil || pid != 4321 {
		t.Errorf("readPIDFile = %d, %v", pid, err)
	}
	if _, err := os.Stat(p + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Error("temporary pidfile left")
	}
	os.WriteFile(p, []byte("-3"), 0o644)
	if _, err := readPIDFile(p); err == nil {
		t.Error("negative pid accepted")
	}
}

func TestParseVersion(t *testing.T) {
	out := "Firecracker v1.12.1\n\nSupported snapshot data format versions: v1.0.0, v2.0.0\n"
	if v, err := parseVersion(out); err != nil || v != "1.12.1" {
		t.Errorf("parseVersion = %q, %v", v, err)
	}
	if v, err := parseVersion("Firecracker v1.17.0-dev\n"); err != nil || v != "1.17.0-dev" {
		t.Errorf("parseVersion = %q, %v", v, err)
	}
	if _, err := parseVersion("sh: firecracker: not found"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestCheckReportsReasons(t *testing.T) {
	_, _, err := New(filepath.Join(t.TempDir(), "firecracker"), filepath.Join(t.TempDir(), "jailer")).Check(context.Background())
	if err == nil {
		t.Fatal("Check passed with a missing binary")
	}
	for _, want := range []string{"firecracker binary", "jailer binary"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check: %v; want it to mention %q", err, want)
		}
	}
}

// procSession returns the session id of pid (field 6 of /proc/PID/stat).
func procSession(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return 0, errors.New("malformed stat")
	}
	return strconv.Atoi(f[3])
}
