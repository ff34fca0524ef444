package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"banger/internal/model"
)

func TestSnapshotRows(t *testing.T) {
	ctx := context.Background()
	st, err := Open(ctx, filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sn := &model.Snapshot{ID: "abc", Name: "s1", VMID: "v1", VMName: "box", Engine: "qemu", VMMVersion: "7.2.22",
		Kernel: "k", Image: "img", VCPU: 2, MemoryMiB: 512, DiskSize: 1 << 30, NoWorkDisk: true, StateBytes: 5, DiskBytes: 7, SaveMS: 9}
	if err := st.CreateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateSnapshot(ctx, &model.Snapshot{ID: "def", Name: "s1", Engine: "qemu"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if err := st.CreateSnapshot(ctx, &model.Snapshot{ID: "x", Name: "", Engine: "qemu"}); err == nil {
		t.Fatal("empty name accepted")
	}
	for _, ref := range []string{"s1", "abc"} {
		got, err := st.GetSnapshot(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if *got != *sn {
			t.Fatalf("got %+v, want %+v", got, sn)
		}
	}
	if n, err := st.CountSnapshotsUsingImage(ctx, "img"); err != nil || n != 1 {
		t.Fatalf("snapshots using img: %d %v", n, err)
	}
	if n, _ := st.CountSnapshotsUsingImage(ctx, "other"); n != 0 {
		t.Fatalf("snapshots using other: %d", n)
	}
	list, err := st.ListSnapshots(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if err := st.DeleteSnapshot(ctx, "abc"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSnapshot(ctx, "s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := st.DeleteSnapshot(ctx, "abc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}
