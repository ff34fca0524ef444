//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestExitCode: `vm run --rm -- sh -c 'exit 42'` exits 42 and leaves no VM.
func TestExitCode(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	before := len(vmNames(t, ctx))
	r := e.cli(ctx, "", "vm", "run", "--rm", "--name", "exit42", "--", "sh", "-c", "echo out; echo err >&2; exit 42")
	if r.code != 42 {
		t.Fatalf("want exit 42, got %s", r)
	}
	if !strings.Contains(r.stdout, "out") || !strings.Contains(r.stderr, "err") {
		t.Errorf("stdout/stderr not passed through: %s", r)
	}
	if _, ok := vmNames(t, ctx)["exit42"]; ok || len(vmNames(t, ctx)) != before {
		t.Errorf("vm run --rm left a VM behind")
	}
}

// TestArgumentQuoting: arguments with spaces, quotes and empty strings
// arrive unchanged, and stdin is passed through.
func TestArgumentQuoting(t *testing.T) {
	vm := sharedVM(t)
	ctx := ctxFor(t, 2*time.Minute)
	args := []string{"a b", "it's", `"double"`, "", "$HOME", "back\\slash", "*"}
	r := must(t, e.cli(ctx, "", append([]string{"vm", "exec", vm, "--", "printf", "[%s]"}, args...)...))
	want := ""
	for _, a := range args {
		want += "[" + a + "]"
	}
	if r.stdout != want {
		t.Errorf("got %q, want %q", r.stdout, want)
	}
	r = must(t, e.cli(ctx, "hello stdin\n", "vm", "exec", vm, "--", "cat"))
	if r.stdout != "hello stdin\n" {
		t.Errorf("stdin: got %q", r.stdout)
	}
	r = e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", "exit 42")
	if r.code != 42 {
		t.Errorf("exec exit code: %s", r)
	}
	r = e.cli(ctx, "", "vm", "exec", vm, "--", "no-such-command-xyz")
	if r.code != 127 || !strings.Contains(r.stderr, "no-such-command-xyz") {
		t.Errorf("missing command: want 127 with a message, got %s", r)
	}
}

// TestLifecycle: create, exec, write + immediate stop loses nothing,
// start, restart gives a new boot_id, logs show the console.
func TestLifecycle(t *testing.T) {
	ctx := ctxFor(t, 10*time.Minute)
	vm := newVM(t, ctx, "life")
	if v := showVM(t, ctx, vm); v.State != "running" || v.PID == 0 {
		t.Fatalf("after create: %+v", v)
	}
	// /root is the persistent work disk; /etc is on the copy-on-write root.
	must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", "echo persisted > /root/marker && echo rootdisk > /etc/banger-marker"))
	must(t, e.cli(ctx, "", "vm", "stop", vm))
	if v := showVM(t, ctx, vm); v.State != "stopped" || v.PID != 0 {
		t.Fatalf("after stop: %+v", v)
	}
	r := e.cli(ctx, "", "vm", "exec", vm, "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "not running") {
		t.Errorf("exec on a stopped VM must be refused clearly, got %s", r)
	}
	must(t, e.cli(ctx, "", "vm", "start", vm))
	r = must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "cat", "/root/marker", "/etc/banger-marker"))
	if r.stdout != "persisted\nrootdisk\n" {
		t.Errorf("data lost across stop/start: %q", r.stdout)
	}
	id1 := bootID(t, ctx, vm)
	r = must(t, e.cli(ctx, "", "vm", "restart", vm))
	if !strings.Contains(r.stderr, "ready in") {
		t.Errorf("restart should end with 'ready in': %s", r)
	}
	id2 := bootID(t, ctx, vm)
	if id1 == "" || id1 == id2 {
		t.Errorf("restart must boot afresh: boot_id %q then %q", id1, id2)
	}
	r = must(t, e.cli(ctx, "", "vm", "logs", vm))
	if !strings.Contains(r.stdout, "banger-agent") {
		t.Errorf("vm logs lacks the console output:\n%s", tail(r.stdout, 10))
	}
}

// TestKill: vm kill leaves the VM stopped (not error), and it starts again.
func TestKill(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	vm := newVM(t, ctx, "killme")
	pid := showVM(t, ctx, vm).PID
	must(t, e.cli(ctx, "", "vm", "kill", "--signal", "KILL", vm))
	v := showVM(t, ctx, vm)
	if v.State != "stopped" {
		t.Fatalf("after kill: state %q, want stopped", v.State)
	}
	if alive(pid) {
		t.Errorf("VMM pid %d still alive after kill", pid)
	}
	r := e.cli(ctx, "", "vm", "kill", "--signal", "NOPE", vm)
	if r.code == 0 {
		t.Errorf("bad signal accepted: %s", r)
	}
}

// TestPrune: prune -f deletes the stopped VMs and never a running one.
func TestPrune(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	running := newVM(t, ctx, "prune-running")
	must(t, e.cli(ctx, "", "vm", "create", "--no-start", "--name", "prune-stopped"))
	must(t, e.cli(ctx, "", "vm", "prune", "-f"))
	names := vmNames(t, ctx)
	if _, ok := names["prune-stopped"]; ok {
		t.Errorf("prune kept a stopped VM")
	}
	if v, ok := names[running]; !ok || v.State != "running" {
		t.Errorf("prune touched the running VM: %+v", v)
	}
}

// TestSetVCPU: set --vcpu on a stopped VM takes effect at the next boot;
// refused while it runs.
func TestSetVCPU(t *testing.T) {
	ctx := ctxFor(t, 8*time.Minute)
	vm := newVM(t, ctx, "setcpu", "--vcpu", "1")
	nproc := func() string {
		return strings.TrimSpace(must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "nproc")).stdout)
	}
	if n := nproc(); n != "1" {
		t.Fatalf("nproc = %s, want 1", n)
	}
	if r := e.cli(ctx, "", "vm", "set", vm, "--vcpu", "2"); r.code == 0 {
		t.Errorf("set on a running VM must be refused")
	}
	must(t, e.cli(ctx, "", "vm", "stop", vm))
	must(t, e.cli(ctx, "", "vm", "set", vm, "--vcpu", "2", "--memory", "768"))
	must(t, e.cli(ctx, "", "vm", "start", vm))
	if n := nproc(); n != "2" {
		t.Errorf("nproc = %s after set --vcpu 2", n)
	}
}

// TestInvalidName: a bad name is refused before anything exists, both by
// the CLI and by the daemon itself; nothing is left behind.
func TestInvalidName(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	before := vmNames(t, ctx)
	for _, bad := range []string{"Bad", "has space", "dot.ted", "-lead", "trail-", strings.Repeat("a", 64), "a/../b"} {
		r := e.cli(ctx, "", "vm", "create", "--name", bad)
		if r.code == 0 || !strings.Contains(r.stderr, "invalid vm name") {
			t.Errorf("name %q: want a clear refusal, got %s", bad, r)
		}
	}
	// The daemon refuses on its own too (callers other than the CLI).
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(e.root, "run/banger/bangerd.sock"))
	}}}
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://bangerd/v1/vms", strings.NewReader(`{"name":"Not_Valid"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/vms to the daemon: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	// Create streams its progress: the refusal is the stream's error event.
	var ev struct {
		Error *struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.Error == nil || ev.Error.Code != "bad_request" || !strings.Contains(ev.Error.Message, "invalid vm name") {
		t.Errorf("daemon must refuse a bad name with a bad_request error: %d %s", resp.StatusCode, body)
	}
	after := vmNames(t, ctx)
	if len(after) != len(before) {
		t.Errorf("a refused create left a VM row: %v", after)
	}
	entries, _ := os.ReadDir(filepath.Join(e.root, "state/banger/vms"))
	for _, en := range entries {
		found := false
		for _, v := range after {
			if v.ID == en.Name() {
				found = true
			}
		}
		if !found {
			t.Errorf("stray VM directory %s", en.Name())
		}
	}
	r := e.cli(ctx, "", "vm", "create", "--name", "okname", "--vcpu", "0")
	if r.code == 0 {
		t.Errorf("--vcpu 0 accepted")
	}
	if _, ok := vmNames(t, ctx)["okname"]; ok {
		t.Errorf("--vcpu 0 left a VM row")
	}
}

// TestParallelRun: two `vm run --rm` at once both succeed.
func TestParallelRun(t *testing.T) {
	ctx := ctxFor(t, 8*time.Minute)
	var wg sync.WaitGroup
	res := make([]result, 2)
	for i := range res {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res[i] = e.cli(ctx, "", "vm", "run", "--rm", "--", "sh", "-c", "hostname")
		}(i)
	}
	wg.Wait()
	for i, r := range res {
		if r.code != 0 {
			t.Errorf("run %d: %s", i, r)
		}
	}
	if res[0].stdout == res[1].stdout {
		t.Errorf("both runs report the same hostname %q", res[0].stdout)
	}
}

// TestDetachFlags: -d --rm and -d -- cmd are refused before any VM exists;
// bare -d leaves a running VM.
func TestDetachFlags(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	before := len(vmNames(t, ctx))
	for _, args := range [][]string{
		{"vm", "run", "-d", "--rm", "--name", "det1"},
		{"vm", "run", "-d", "--name", "det2", "--", "true"},
	} {
		if r := e.cli(ctx, "", args...); r.code == 0 {
			t.Errorf("%v accepted", args)
		}
	}
	if n := len(vmNames(t, ctx)); n != before {
		t.Errorf("a refused run created a VM")
	}
	r := must(t, e.cli(ctx, "", "vm", "run", "-d", "--name", "detached"))
	t.Cleanup(func() { e.cli(context.Background(), "", "vm", "delete", "detached") })
	if strings.TrimSpace(r.stdout) != "detached" {
		t.Errorf("-d should print the VM name, got %q", r.stdout)
	}
	if v := showVM(t, ctx, "detached"); v.State != "running" {
		t.Errorf("-d VM state %q", v.State)
	}
	must(t, e.cli(ctx, "", "vm", "exec", "detached", "--", "true"))
}

// TestRunRmCleanup: with --rm the VM is deleted when the command fails and
// when the user interrupts the run.
func TestRunRmCleanup(t *testing.T) {
	ctx := ctxFor(t, 8*time.Minute)
	r := e.cli(ctx, "", "vm", "run", "--rm", "--name", "rmfail", "--", "false")
	if r.code != 1 {
		t.Errorf("want exit 1 from false, got %s", r)
	}
	if _, ok := vmNames(t, ctx)["rmfail"]; ok {
		t.Errorf("failed command left its VM")
	}

	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "banger"), "vm", "run", "--rm", "--name", "rmint", "--", "sleep", "300")
	cmd.Env = e.environ
	var so, se safeBuf
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.cli(context.Background(), "", "vm", "delete", "rmint") })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Wait until the command runs in the guest (the run must not end
	// before that), then interrupt it.
	running := waitFor(ctx, 4*time.Minute, 500*time.Millisecond, func() bool {
		select {
		case err := <-done:
			t.Fatalf("vm run ended before it was interrupted (%v):\nstdout:\n%s\nstderr:\n%s", err, so.String(), se.String())
		default:
		}
		if v, ok := vmNames(t, ctx)["rmint"]; !ok || v.State != "running" {
			return false
		}
		return e.cli(ctx, "", "vm", "exec", "rmint", "--", "sh", "-c", "cat /proc/[0-9]*/comm | grep -qx sleep").code == 0
	})
	if !running {
		cmd.Process.Kill()
		t.Fatalf("sleep never ran in the guest of vm run:\n%s", se.String())
	}
	// The first Ctrl-C goes to the command; a second, if the run has not
	// ended by then, gives up on it. Either way the VM must go.
	cmd.Process.Signal(os.Interrupt)
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Signal(os.Interrupt)
		select {
		case err = <-done:
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			t.Fatal("interrupted run did not end")
		}
	}
	if err == nil {
		t.Errorf("an interrupted run exited 0:\n%s", se.String())
	}
	if _, ok := vmNames(t, ctx)["rmint"]; ok {
		t.Errorf("interrupted --rm run left its VM")
	}
}

// TestDaemonRestart: a VM keeps running while the daemon restarts, and the
// new daemon re-adopts it (same boot_id).
func TestDaemonRestart(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	vm := newVM(t, ctx, "survivor")
	id1 := bootID(t, ctx, vm)
	pid := showVM(t, ctx, vm).PID
	e.restartDaemonAfter(t)
	old := e.daemonPID
	must(t, e.cli(ctx, "", "daemon", "stop"))
	if alive(old) {
		t.Fatalf("daemon pid %d still alive after daemon stop", old)
	}
	if !alive(pid) {
		t.Fatalf("VMM pid %d died with the daemon", pid)
	}
	// With no daemon, the CLI refuses instead of starting one of its own.
	if r := e.cli(ctx, "", "vm", "list"); r.code == 0 || !strings.Contains(r.stderr, "BANGER_NO_AUTOSTART") {
		t.Errorf("vm list without a daemon: want a refusal, got %s", r)
	}
	if err := e.startDaemon(); err != nil {
		t.Fatal(err)
	}
	if v := showVM(t, ctx, vm); v.State != "running" || v.PID != pid {
		t.Fatalf("after daemon restart: %+v (pid was %d)", v, pid)
	}
	if id2 := bootID(t, ctx, vm); id2 != id1 {
		t.Errorf("boot_id changed across daemon restart: %s -> %s", id1, id2)
	}
	// And it can still be stopped cleanly by the new daemon.
	must(t, e.cli(ctx, "", "vm", "stop", vm))
}

// TestDoctor: doctor passes on this installation and reports the
// accelerator decision.
func TestDoctor(t *testing.T) {
	ctx := ctxFor(t, 2*time.Minute)
	// In the daemon's namespace, where its DNS listener is.
	r := e.cliNS(ctx, "", "doctor")
	if r.code != 0 {
		t.Fatalf("doctor failed: %s", r)
	}
	for _, want := range []string{"qemu", "accel", "e2fsprogs", "debugfs", "store", "kernels", "images",
		"disk space", "dns", "ssh key", "network", "stale taps", "stale nat", "stale dirs", "stale vmms"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, r.stdout)
		}
	}
}
