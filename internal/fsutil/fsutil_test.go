package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestAtomicWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := AtomicWriteFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "new" {
		t.Fatalf("got %q %v", b, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	assertOnly(t, dir, "f")
}

func TestAtomicFileAbortLeavesTargetAndNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "big")
	os.WriteFile(p, []byte("keep"), 0o644)
	f, err := CreateAtomic(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("partial"))
	f.Abort()
	f.Abort() // twice is fine
	if b, _ := os.ReadFile(p); string(b) != "keep" {
		t.Fatalf("target changed: %q", b)
	}
	assertOnly(t, dir, "big")

	f, err = CreateAtomic(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	if err := os.WriteFile(f.TempPath(), []byte("by another program"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err == nil {
		t.Error("second commit succeeded")
	}
	if b, _ := os.ReadFile(p); string(b) != "by another program" {
		t.Fatalf("got %q", b)
	}
	assertOnly(t, dir, "big")
}

func TestCommitFailureRemovesTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d")
	if err := os.Mkdir(p, 0o755); err != nil { // a directory: rename over it fails
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p, "x"), nil, 0o644)
	f, err := CreateAtomic(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err == nil {
		t.Fatal("rename over a non-empty directory succeeded")
	}
	assertOnly(t, dir, "d")
}

func TestSyncDirAndRename(t *testing.T) {
	dir := t.TempDir()
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("SyncDir of a missing directory succeeded")
	}
	a := filepath.Join(dir, "a")
	os.WriteFile(a, []byte("x"), 0o644)
	if err := SyncFile(a); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	if err := Rename(a, filepath.Join(sub, "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sub, "b")); err != nil {
		t.Fatal(err)
	}
}

func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if len(got) != len(names) {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
	for i := range got {
		if got[i] != names[i] {
			t.Fatalf("%s holds %v, want %v", dir, got, names)
		}
	}
}

func TestWriteFileExclusive(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFileExclusive(p, []byte("one"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileExclusive(p, []byte("two"), 0o640); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Errorf("content %q", b)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
	// A symbolic link in the way is not followed.
	os.Symlink(filepath.Join(dir, "target"), filepath.Join(dir, "l"))
	if err := WriteFileExclusive(filepath.Join(dir, "l"), []byte("x"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("through a link: %v", err)
	}
	assertOnly(t, dir, "f", "l")
}

func TestAtomicWriteFileIn(t *testing.T) {
	base := t.TempDir()
	dir, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.Mkdir(outside, 0o755)
	os.Symlink(outside, filepath.Join(dir, "out"))
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := AtomicWriteFileIn(root, "sub/f", []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sub/f")); string(b) != "new" {
		t.Errorf("content %q", b)
	}
	assertOnly(t, filepath.Join(dir, "sub"), "f")
	if err := AtomicWriteFileIn(root, "out/f", []byte("x"), 0o600); err == nil {
		t.Error("wrote through a link leading out of the root")
	}
	assertOnly(t, outside)
	if err := SyncDirIn(root, "."); err != nil {
		t.Error(err)
	}
}

func TestCopyFile(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	os.WriteFile(src, []byte("content"), 0o751)
	os.Chmod(src, 0o751)
	if err := CopyFile(src, dst, 0); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dst)
	fi, _ := os.Stat(dst)
	if string(b) != "content" || fi.Mode().Perm() != 0o751 {
		t.Errorf("copy: %q %v", b, fi.Mode())
	}
	if err := CopyFile(src, dst, 0); !errors.Is(err, fs.ErrExist) {
		t.Errorf("copy over an existing file: %v", err)
	}
	if err := CopyFile(dir, filepath.Join(dir, "d2"), 0); err == nil {
		t.Error("copied a directory")
	}
	if err := CopyFile(src, filepath.Join(dir, "ro"), 0o400); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ro")); fi.Mode().Perm() != 0o400 {
		t.Errorf("copy with perm: %v", fi.Mode())
	}
	assertOnly(t, dir, "dst", "ro", "src")
}
