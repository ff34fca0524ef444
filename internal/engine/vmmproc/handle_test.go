package vmmproc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"banger/internal/engine"
)

// startVMM runs a stand-in VMM: a sleep whose argv carries marker. It is
// our child and reaped as soon as it exits (as the daemon that started a
// VMM does), so the handle only watches.
func startVMM(t *testing.T, marker string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("bash", "-c", "exec -a vmm-"+marker+" sleep 60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	go func() { cmd.Wait(); close(reaped) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-reaped })
	// Wait until the exec has happened and argv shows the marker.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if argv := Cmdline(cmd.Process.Pid); len(argv) > 0 && argv[0] == "vmm-"+marker {
			return cmd
		}
	}
	t.Fatalf("stand-in vmm never showed its marker: %q", Cmdline(cmd.Process.Pid))
	return nil
}

func matchMarker(marker string) func([]string) bool {
	return func(argv []string) bool { return len(argv) > 0 && argv[0] == "vmm-"+marker }
}

func TestHandleWatchKillClose(t *testing.T) {
	marker := "h" + strconv.Itoa(os.Getpid())
	cmd := startVMM(t, marker)
	p, err := OpenVerified(cmd.Process.Pid, "stand-in", matchMarker(marker))
	if err != nil {
		t.Fatal(err)
	}
	exitedRan, closedCtl := make(chan struct{}), false
	h := Watch(p, func() { close(exitedRan) }, func() { closedCtl = true })
	if h.PID() != cmd.Process.Pid || h.Exited() {
		t.Fatalf("pid %d exited %v", h.PID(), h.Exited())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := h.WaitExit(ctx); err == nil {
		t.Error("WaitExit returned for a running process")
	}
	cancel()
	if err := h.Kill(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.WaitExit(ctx); err != nil {
		t.Fatalf("WaitExit after kill: %v", err)
	}
	select {
	case <-exitedRan:
	default:
		t.Error("Done closed before the exit hook ran")
	}
	h.Close()
	h.Close()
	if !closedCtl {
		t.Error("Close did not close the control connection")
	}
	if err := h.Kill(syscall.SIGKILL); err == nil {
		t.Error("kill through a closed handle succeeded")
	}
}

func TestHandleCloseWhileRunning(t *testing.T) {
	marker := "c" + strconv.Itoa(os.Getpid())
	cmd := startVMM(t, marker)
	p, err := Open(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	h := Watch(p, nil, nil)
	h.Close() // the VMM keeps running; the handle reports a closed wait
	if err := h.WaitExit(context.Background()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WaitExit on a closed handle: %v", err)
	}
	if h.Exited() {
		t.Error("closing the handle reported an exit")
	}
	if _, err := StartTime(cmd.Process.Pid); err != nil {
		t.Errorf("Close stopped the VMM: %v", err)
	}
}

func TestFindPIDAndKillAll(t *testing.T) {
	marker := "k" + strconv.Itoa(os.Getpid())
	cmd := startVMM(t, marker)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "vmm.pid")
	// No pidfile: the only matching process is found by its argv.
	if pid, err := FindPID(matchMarker(marker), pidFile); err != nil || pid != cmd.Process.Pid {
		t.Errorf("FindPID without pidfile = %d, %v", pid, err)
	}
	// A pidfile wins, and is not trusted: OpenVerified checks the argv.
	if err := WritePIDFile(pidFile, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	pid, err := FindPID(matchMarker(marker), pidFile)
	if err != nil || pid != os.Getpid() {
		t.Errorf("FindPID with pidfile = %d, %v", pid, err)
	}
	if _, err := OpenVerified(pid, "stand-in", matchMarker(marker)); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("OpenVerified of a foreign pid: %v", err)
	}
	if _, err := FindPID(matchMarker(marker+"-none"), filepath.Join(dir, "none")); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("FindPID of nothing: %v", err)
	}
	if err := KillAll(pidFile, matchMarker(marker), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if pids := Find(matchMarker(marker)); len(pids) != 0 {
		t.Errorf("KillAll left %v", pids)
	}
}

func TestFileHelpers(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, []byte("a\nb\nc\nd"), 0o600)
	if got := ReadBounded(f, 3); got != "a\nb" {
		t.Errorf("ReadBounded = %q", got)
	}
	if got := LastLines("a\nb\nc\nd", 2); got != "c; d" {
		t.Errorf("LastLines = %q", got)
	}
	for _, p := range []string{f, f, "", filepath.Join(dir, "none")} {
		if err := RemoveIfExists(p); err != nil {
			t.Errorf("RemoveIfExists(%q): %v", p, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
	if VMName(engine.Spec{ID: "id"}) != "id" || VMName(engine.Spec{ID: "id", Name: "n"}) != "n" {
		t.Error("VMName")
	}
}
