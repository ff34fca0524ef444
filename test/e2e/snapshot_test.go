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

type snapshotInfo struct {
	Name       string `json:"name"`
	VMName     string `json:"vm_name"`
	Engine     string `json:"engine"`
	VMMVersion string `json:"vmm_version"`
	StateBytes int64  `json:"state_bytes"`
	DiskBytes  int64  `json:"disk_bytes"`
	SaveMS     int64  `json:"save_ms"`
}

// TestSnapshot: a snapshot of a running VM records its engine and QEMU
// version, holds its state and disks, and the VM runs on (a session
// started before keeps running); --keep-paused leaves it paused; bad names
// leave nothing; rm removes it.
func TestSnapshot(t *testing.T) {
	ctx := ctxFor(t, 8*time.Minute)
	vm := newVM(t, ctx, "snapsrc")
	must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", "echo before > /root/marker && sync"))
	must(t, e.cli(ctx, "", "vm", "session", "start", vm, "--name", "ticker", "--",
		"sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"))

	for _, bad := range [][]string{{vm, "--name", "Bad_Name"}, {"nosuchvm", "--name", "ok"}} {
		if r := e.cli(ctx, "", append([]string{"snapshot", "create"}, bad...)...); r.code == 0 {
			t.Errorf("snapshot create %v accepted", bad)
		}
	}
	if out := must(t, e.cli(ctx, "", "snapshot", "list", "--json")).stdout; strings.TrimSpace(out) != "[]" {
		t.Fatalf("refused snapshots left rows: %s", out)
	}

	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.cli(c, "", "snapshot", "rm", "warm")
		e.cli(c, "", "snapshot", "rm", "frozen")
	})
	r := must(t, e.cli(ctx, "", "snapshot", "create", vm, "--name", "warm"))
	t.Logf("snapshot create: %s", strings.TrimSpace(r.stdout))
	var sn snapshotInfo
	jsonUnmarshal(t, must(t, e.cli(ctx, "", "snapshot", "show", "--json", "warm")).stdout, &sn)
	if sn.VMName != vm || sn.Engine != "qemu" || !strings.HasPrefix(sn.VMMVersion, "7.") || sn.StateBytes < 1<<20 || sn.DiskBytes <= 0 {
		t.Errorf("snapshot show: %+v", sn)
	}
	t.Logf("snapshot: state %d bytes, disks %d bytes, vm paused %d ms", sn.StateBytes, sn.DiskBytes, sn.SaveMS)
	if v := showVM(t, ctx, vm); v.State != "running" {
		t.Fatalf("vm after snapshot: %+v", v)
	}
	// The VM runs on: exec answers, the file is there, the session ticks.
	if out := must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "cat", "/root/marker")).stdout; strings.TrimSpace(out) != "before" {
		t.Errorf("marker after snapshot: %q", out)
	}
	if si := showSession(t, ctx, vm, "ticker"); si.State != "running" {
		t.Errorf("session after snapshot: %+v", si)
	}
	// Known, not fixed: after a migration and cont under TCG the guest's
	// clock runs slow (measured -4 s and -9 s a few seconds after the
	// snapshot, drifting further) although the agent set it right after
	// the resume (plain pause/resume keeps it, see TestPauseResume). The
	// guest kernel marks the TSC unstable under TCG and keeps time with
	// refined-jiffies, which loses the ticks missed around the migration.
	// It is logged with the guest's clocksource until it is fixed.
	skew := guestClockSkew(t, ctx, vm)
	cs := e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c",
		"cat /sys/devices/system/clocksource/clocksource0/current_clocksource; dmesg | grep -i -e clocksource -e tsc | tail -5")
	t.Logf("guest clock %.1f s off the host's after the snapshot; clocksource: %s", skew, strings.TrimSpace(cs.stdout))

	must(t, e.cli(ctx, "", "snapshot", "create", vm, "--name", "frozen", "--keep-paused"))
	if v := showVM(t, ctx, vm); v.State != "paused" {
		t.Fatalf("vm after --keep-paused: %+v", v)
	}
	if r := e.cli(ctx, "", "snapshot", "create", vm, "--name", "warm"); r.code == 0 || !strings.Contains(r.stderr, "exists") {
		t.Errorf("duplicate snapshot name: %s", r)
	}
	must(t, e.cli(ctx, "", "vm", "resume", vm))
	if out := must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "cat", "/root/marker")).stdout; strings.TrimSpace(out) != "before" {
		t.Errorf("marker after resume: %q", out)
	}
	var list []snapshotInfo
	jsonUnmarshal(t, must(t, e.cli(ctx, "", "snapshot", "list", "--json")).stdout, &list)
	if len(list) != 2 {
		t.Fatalf("snapshot list: %+v", list)
	}
	must(t, e.cli(ctx, "", "snapshot", "rm", "warm"))
	must(t, e.cli(ctx, "", "snapshot", "rm", "frozen"))
	if r := e.cli(ctx, "", "snapshot", "show", "warm"); r.code == 0 {
		t.Errorf("snapshot show after rm: %s", r)
	}
}
