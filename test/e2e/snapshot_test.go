//go:build e2e

package e2e

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// guestClockSkew is how far the guest's wall clock is from the host's, in
// seconds, bounded by the time the exec itself took.
func guestClockSkew(t *testing.T, ctx context.Context, vm string) float64 {
	t.Helper()
	before := time.Now()
	r := must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "date", "+%s.%N"))
	after := time.Now()
	g, err := strconv.ParseFloat(strings.TrimSpace(r.stdout), 64)
	if err != nil {
		t.Fatalf("guest date: %q: %v", r.stdout, err)
	}
	lo, hi := float64(before.UnixNano())/1e9, float64(after.UnixNano())/1e9
	switch {
	case g < lo:
		return g - lo
	case g > hi:
		return g - hi
	}
	return 0
}

// TestPauseResume: a paused VM shows "paused", refuses exec with a pointer
// to resume, stays paused (same VMM) across a daemon restart, and after
// resume runs on with its clock set from the host's.
func TestPauseResume(t *testing.T) {
	ctx := ctxFor(t, 8*time.Minute)
	vm := newVM(t, ctx, "sleepy")
	id1 := bootID(t, ctx, vm)
	pid := showVM(t, ctx, vm).PID
	must(t, e.cli(ctx, "", "vm", "pause", vm))
	paused := time.Now()
	if v := vmNames(t, ctx)[vm]; v.State != "paused" {
		t.Fatalf("vm list after pause: %+v", v)
	}
	r := e.cli(ctx, "", "vm", "exec", vm, "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "vm resume") {
		t.Errorf("exec on a paused vm: want a refusal naming vm resume, got %s", r)
	}
	r = e.cli(ctx, "", "vm", "session", "start", vm, "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "vm resume") {
		t.Errorf("session start on a paused vm: want a refusal naming vm resume, got %s", r)
	}

	// The daemon restarts; the VM stays paused in the same VMM.
	e.restartDaemonAfter(t)
	must(t, e.cli(ctx, "", "daemon", "stop"))
	if err := e.startDaemon(); err != nil {
		t.Fatal(err)
	}
	if v := showVM(t, ctx, vm); v.State != "paused" || v.PID != pid {
		t.Fatalf("after daemon restart: %+v (pid was %d)", v, pid)
	}
	// Long enough a pause that an uncorrected clock shows it.
	if d := 12*time.Second - time.Since(paused); d > 0 {
		time.Sleep(d)
	}
	must(t, e.cli(ctx, "", "vm", "resume", vm))
	if v := showVM(t, ctx, vm); v.State != "running" {
		t.Fatalf("after resume: %+v", v)
	}
	if skew := guestClockSkew(t, ctx, vm); math.Abs(skew) > 3 {
		t.Errorf("guest clock is %.1f s off the host's after a 12 s pause", skew)
	}
	if id2 := bootID(t, ctx, vm); id2 != id1 {
		t.Errorf("boot_id changed across pause/resume: %s -> %s", id1, id2)
	}
	// A paused VM stops (it is resumed first).
	must(t, e.cli(ctx, "", "vm", "pause", vm))
	must(t, e.cli(ctx, "", "vm", "stop", vm))
	if v := showVM(t, ctx, vm); v.State != "stopped" {
		t.Fatalf("stop of a paused vm: %+v", v)
	}
}
