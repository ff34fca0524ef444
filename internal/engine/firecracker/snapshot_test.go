package firecracker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/engine"
)

// TestPauseSnapshotLoad drives the driver's Pauser and the snapshot calls
// against the fake, every request validated against the API definition:
// pause, snapshot (refused while running), resume, then a fresh VMM
// loads the snapshot. Not run against a real Firecracker (no usable KVM
// here).
func TestPauseSnapshotLoad(t *testing.T) {
	spec, _ := loadSpec(t)
	c, _, records := startFakeAPI(t, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	writeFile(t, kernel, "k")
	if err := c.PutGuestBootSource(ctx, BootSource{KernelImagePath: kernel}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateSyncAction(ctx, InstanceActionInfo{ActionType: ActionInstanceStart}); err != nil {
		t.Fatal(err)
	}
	inst := &Instance{spec: engine.Spec{Name: "box"}, api: c}
	var d Driver
	snap := SnapshotCreateParams{MemFilePath: filepath.Join(dir, "mem"), SnapshotPath: filepath.Join(dir, "vmstate")}
	if err := c.CreateSnapshot(ctx, snap); err == nil {
		t.Fatal("snapshot of a running microVM accepted")
	}
	if err := d.Pause(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if p, err := d.Paused(ctx, inst); err != nil || !p {
		t.Fatalf("Paused = %v, %v", p, err)
	}
	if err := c.CreateSnapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := d.Resume(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if p, err := d.Paused(ctx, inst); err != nil || p {
		t.Fatalf("Paused after resume = %v, %v", p, err)
	}
	for _, rec := range records() {
		if len(rec.Violations) > 0 {
			t.Errorf("%s %s: %v", rec.Method, rec.Path, rec.Violations)
		}
	}

	// A fresh VMM loads it; a missing file is refused.
	c2, _, records2 := startFakeAPI(t, spec)
	if err := c2.LoadSnapshot(ctx, SnapshotLoadParams{SnapshotPath: filepath.Join(dir, "nope"), MemFilePath: snap.MemFilePath}); err == nil {
		t.Fatal("load of a missing snapshot accepted")
	}
	if err := c2.LoadSnapshot(ctx, SnapshotLoadParams{SnapshotPath: snap.SnapshotPath, MemFilePath: snap.MemFilePath, ResumeVM: true}); err != nil {
		t.Fatal(err)
	}
	if info, err := c2.DescribeInstance(ctx); err != nil || info.State != StateRunning {
		t.Fatalf("after load: %+v %v", info, err)
	}
	if err := c2.LoadSnapshot(ctx, SnapshotLoadParams{SnapshotPath: snap.SnapshotPath, MemFilePath: snap.MemFilePath}); err == nil {
		t.Fatal("load into a running microVM accepted (pre-boot only)")
	}
	for _, rec := range records2() {
		if len(rec.Violations) > 0 {
			t.Errorf("%s %s: %v", rec.Method, rec.Path, rec.Violations)
		}
	}
	if _, err := os.Stat(snap.MemFilePath); err != nil {
		t.Fatal(err)
	}
}
