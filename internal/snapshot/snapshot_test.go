package snapshot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/model"
)

func goodSnapshot() *model.Snapshot {
	return &model.Snapshot{ID: "abc", Name: "warm", Engine: "qemu", VMMVersion: "7.2.22", Kernel: "k", Image: "img", VCPU: 2, MemoryMiB: 512, DiskSize: 1 << 30}
}

func TestMetaRoundTrip(t *testing.T) {
	dir := t.TempDir()
	sn := goodSnapshot()
	if err := WriteMeta(dir, sn); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *sn {
		t.Fatalf("got %+v, want %+v", got, sn)
	}
}

// TestReadMetaHostile: oversized, malformed, wrong-format, invalid and
// symlinked metadata are all refused.
func TestReadMetaHostile(t *testing.T) {
	write := func(t *testing.T, content string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, MetaFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	cases := map[string]string{
		"huge":        `{"format": 1, "snapshot": {"name": "` + strings.Repeat("a", MaxMeta) + `"}}`,
		"not json":    `{{{`,
		"format":      `{"format": 99, "snapshot": {"name": "warm", "engine": "qemu", "vmm_version": "1", "vcpu": 1, "memory_mib": 1}}`,
		"bad name":    `{"format": 1, "snapshot": {"name": "../../etc", "engine": "qemu", "vmm_version": "1", "vcpu": 1, "memory_mib": 1}}`,
		"no engine":   `{"format": 1, "snapshot": {"name": "warm", "vmm_version": "1", "vcpu": 1, "memory_mib": 1}}`,
		"neg memory":  `{"format": 1, "snapshot": {"name": "warm", "engine": "qemu", "vmm_version": "1", "vcpu": 1, "memory_mib": -5}}`,
		"no version":  `{"format": 1, "snapshot": {"name": "warm", "engine": "qemu", "vcpu": 1, "memory_mib": 1}}`,
		"empty":       ``,
		"wrong types": `{"format": "1"}`,
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			if sn, err := ReadMeta(write(t, content)); err == nil {
				t.Fatalf("accepted: %+v", sn)
			}
		})
	}
	t.Run("symlink out", func(t *testing.T) {
		outside := t.TempDir()
		WriteMeta(outside, goodSnapshot())
		dir := t.TempDir()
		if err := os.Symlink(filepath.Join(outside, MetaFile), filepath.Join(dir, MetaFile)); err != nil {
			t.Fatal(err)
		}
		if sn, err := ReadMeta(dir); err == nil {
			t.Fatalf("followed a symlink out of the snapshot dir: %+v", sn)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		os.Mkdir(filepath.Join(dir, MetaFile), 0o700)
		if _, err := ReadMeta(dir); err == nil {
			t.Fatal("read a directory as metadata")
		}
	})
}

func TestOpenConfined(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("x"), 0o600)
	if err := os.Symlink(outside, filepath.Join(dir, StateFile)); err != nil {
		t.Fatal(err)
	}
	if f, err := Open(dir, StateFile); err == nil {
		f.Close()
		t.Fatal("opened a symlink to outside the snapshot dir")
	}
	if _, err := Open(dir, "../secret"); err == nil {
		t.Fatal("opened a name that is not a snapshot file")
	}
	os.WriteFile(filepath.Join(dir, WorkDisk), []byte("disk"), 0o600)
	f, err := Open(dir, WorkDisk)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestCompatible(t *testing.T) {
	sn := goodSnapshot()
	if err := Compatible(sn, "qemu", "7.2.22"); err != nil {
		t.Fatal(err)
	}
	if err := Compatible(sn, "firecracker", "7.2.22"); err == nil || !strings.Contains(err.Error(), "engine") {
		t.Fatalf("other engine: %v", err)
	}
	if err := Compatible(sn, "qemu", "8.0.0"); err == nil || !strings.Contains(err.Error(), "7.2.22") {
		t.Fatalf("other version: %v", err)
	}
}
