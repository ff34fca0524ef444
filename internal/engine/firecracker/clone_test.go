package firecracker

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const (
	mib      = 1 << 20
	diskSize = 64 * mib
)

// makeSparseDisk writes a 64 MiB image: random data at 0 (1 MiB), 32 MiB
// (4 KiB) and the last 4 KiB, an explicitly written (allocated) run of
// zeros at 40 MiB, holes elsewhere. It returns the bytes of real data.
func makeSparseDisk(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(diskSize); err != nil {
		t.Fatal(err)
	}
	data := int64(0)
	for _, w := range []struct {
		off  int64
		n    int
		zero bool
	}{{0, mib, false}, {32 * mib, 4096, false}, {40 * mib, mib, true}, {diskSize - 4096, 4096, false}} {
		b := make([]byte, w.n)
		if !w.zero {
			rand.Read(b)
			data += int64(w.n)
		}
		if _, err := f.WriteAt(b, w.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return data
}

func blocks(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func sameContent(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Errorf("%s and %s differ", a, b)
	}
}

func noTemporaries(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") { // fsutil.CreateAtomic's temporary
			t.Errorf("temporary %s left in %s", e.Name(), dir)
		}
	}
}

// When the filesystem refuses a reflink, the sparse copy keeps holes as
// holes (and skips written zeros): the copy allocates no more than the
// source's real data.
func TestCloneDiskSparseFallback(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "base.ext4"), filepath.Join(dir, "root.raw")
	data := makeSparseDisk(t, src)
	unsupported := func(dst, src *os.File) error { return &os.SyscallError{Syscall: "ioctl", Err: unix.EOPNOTSUPP} }
	method, err := cloneDisk(src, dst, unsupported)
	if err != nil {
		t.Fatal(err)
	}
	if method != CloneSparseCopy {
		t.Errorf("method %q, want %q", method, CloneSparseCopy)
	}
	sameContent(t, src, dst)
	st, _ := os.Stat(dst)
	if st.Size() != diskSize || st.Mode().Perm() != 0o640 {
		t.Errorf("dst size %d mode %v, want %d 0640", st.Size(), st.Mode().Perm(), diskSize)
	}
	srcBlocks, dstBlocks := blocks(t, src), blocks(t, dst)
	t.Logf("allocated: src %d KiB, dst %d KiB, data %d KiB, size %d KiB", srcBlocks>>10, dstBlocks>>10, data>>10, int64(diskSize)>>10)
	if dstBlocks > srcBlocks {
		t.Errorf("copy allocates %d bytes, more than the source's %d", dstBlocks, srcBlocks)
	}
	// Data plus a little filesystem metadata slack; far from the size.
	if dstBlocks > data+256*1024 {
		t.Errorf("copy allocates %d bytes for %d bytes of data: holes were filled", dstBlocks, data)
	}
	noTemporaries(t, dir)
}

// CloneDisk on the test's own filesystem: a reflink where it supports
// one, else (ext4, tmpfs) the FICLONE error path falls back to a copy.
func TestCloneDiskOnTempDir(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "base.ext4"), filepath.Join(dir, "root.raw")
	makeSparseDisk(t, src)
	method, err := CloneDisk(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	var fs unix.Statfs_t
	unix.Statfs(dir, &fs)
	t.Logf("filesystem magic %#x: %s", fs.Type, method)
	switch fs.Type {
	case unix.EXT4_SUPER_MAGIC, unix.TMPFS_MAGIC:
		if method != CloneSparseCopy {
			t.Errorf("method %q on a filesystem without reflinks", method)
		}
	case unix.BTRFS_SUPER_MAGIC:
		if method != CloneReflink {
			t.Errorf("method %q on btrfs", method)
		}
	}
	sameContent(t, src, dst)
	if blocks(t, dst) > blocks(t, src) && method == CloneSparseCopy {
		t.Error("sparse copy larger than the source")
	}
}

// A reflink that succeeds is reported as such and nothing is copied.
func TestCloneDiskReflinkPath(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "base"), filepath.Join(dir, "clone")
	writeFile(t, src, "data")
	called := false
	method, err := cloneDisk(src, dst, func(d, s *os.File) error {
		called = true
		// Stand in for the filesystem sharing the extents.
		_, err := d.Write([]byte("data"))
		return err
	})
	if err != nil || method != CloneReflink || !called {
		t.Fatalf("cloneDisk = %q, %v (called %v)", method, err, called)
	}
	sameContent(t, src, dst)
}

// A reflink failing for a reason other than "unsupported" is an error,
// and leaves neither dst nor a temporary behind.
func TestCloneDiskReflinkError(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "base"), filepath.Join(dir, "clone")
	writeFile(t, src, "data")
	_, err := cloneDisk(src, dst, func(d, s *os.File) error { return &os.SyscallError{Syscall: "ioctl", Err: syscall.EIO} })
	if err == nil || !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "reflink") {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dst exists after failure: %v", err)
	}
	noTemporaries(t, dir)
}

func TestCloneDiskRefuses(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "base"), filepath.Join(dir, "clone")
	writeFile(t, src, "data")
	writeFile(t, dst, "keep")
	if _, err := CloneDisk(src, dst); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("existing dst: %v", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "keep" {
		t.Error("existing dst overwritten")
	}
	if _, err := CloneDisk(filepath.Join(dir, "none"), filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing src: %v", err)
	}
	if _, err := CloneDisk(dir, filepath.Join(dir, "y")); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory src: %v", err)
	}
	noTemporaries(t, dir)
}

func TestReflinkUnsupported(t *testing.T) {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTTY, unix.EXDEV, unix.EINVAL} {
		if !reflinkUnsupported(&os.SyscallError{Syscall: "ioctl", Err: e}) {
			t.Errorf("%v not treated as unsupported", e)
		}
	}
	for _, e := range []error{unix.EIO, unix.ENOSPC, unix.EBADF} {
		if reflinkUnsupported(e) {
			t.Errorf("%v treated as unsupported", e)
		}
	}
}

// A real reflink, on a loop-mounted btrfs or XFS, where this host has the
// tools and the privileges; otherwise skipped.
func TestCloneDiskRealReflink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to loop-mount a filesystem")
	}
	var mkfs []string
	switch {
	case lookPath("mkfs.btrfs"):
		mkfs = []string{"mkfs.btrfs", "-q", "-f"}
	case lookPath("mkfs.xfs"):
		mkfs = []string{"mkfs.xfs", "-q", "-f", "-m", "reflink=1"}
	default:
		t.Skip("neither mkfs.btrfs nor mkfs.xfs is installed: real reflink not tested (the FICLONE error path is, on the test's filesystem)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 320*mib)
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		t.Skipf("%s: %v: %s", mkfs[0], err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("loop mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	src, dst := filepath.Join(mnt, "base.ext4"), filepath.Join(mnt, "root.raw")
	makeSparseDisk(t, src)
	unix.Sync()
	var before unix.Statfs_t
	unix.Statfs(mnt, &before)
	method, err := CloneDisk(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if method != CloneReflink {
		t.Errorf("method %q on %s, want %q", method, mkfs[0], CloneReflink)
	}
	sameContent(t, src, dst)
	unix.Sync()
	var after unix.Statfs_t
	unix.Statfs(mnt, &after)
	used := int64(before.Bfree-after.Bfree) * int64(after.Bsize)
	t.Logf("%s: reflink clone of a 64 MiB image used %d KiB", mkfs[0], used>>10)
	if used > 512*1024 {
		t.Errorf("reflink used %d bytes: extents were copied, not shared", used)
	}
}

func lookPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}
