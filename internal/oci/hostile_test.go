package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"

	"banger/internal/oci/ocitest"
)

// TestHostileXattrInjection: an xattr name holding a line break and a
// debugfs shell escape is refused at unpack, and the ext4 step never
// runs it, even given a tree that holds it.
func TestHostileXattrInjection(t *testing.T) {
	needE2fsprogs(t)
	marker := filepath.Join(t.TempDir(), "pwned")
	evil := "user.x\n!touch " + marker + " #"

	_, err := unpackLayers(t, filepath.Join(t.TempDir(), "root"), gzipLayer(t,
		ent{name: "f", typ: tar.TypeReg, mode: 0o644, body: "x", xattrs: map[string]string{evil: "v"}}))
	if err == nil || !strings.Contains(err.Error(), "control character") {
		t.Fatalf("unpack: err = %v, want a refusal of the control character", err)
	}

	// The script generator refuses on its own: hand BuildExt4 a tree
	// that Unpack would never return.
	work := t.TempDir()
	tree := filepath.Join(work, "tree")
	tr, err := unpackLayers(t, tree, gzipLayer(t, reg("f", "x", 0o644)))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := tr.Get("/f")
	e.Xattrs = map[string][]byte{evil: []byte("v")}
	out := filepath.Join(work, "r.ext4")
	err = BuildExt4(context.Background(), tree, tr, out, 0)
	if err == nil || !strings.Contains(err.Error(), "control character") {
		t.Fatalf("BuildExt4: err = %v, want a refusal", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("debugfs ran the injected command")
	}
	assertNoLeftovers(t, work, "tree")
}

// TestHostileNames: control characters in names and link targets, and
// xattrs outside the allowed namespaces, are refused with a clear error.
func TestHostileNames(t *testing.T) {
	for _, c := range []struct {
		name   string
		e      ent
		errHas string
	}{
		{"newline in name", reg("a\n!id", "x", 0o644), "control character"},
		{"carriage return in name", reg("a\r!id", "x", 0o644), "control character"},
		{"escape in name", reg("a\x1b[2J", "x", 0o644), "control character"},
		{"newline in symlink target", ent{name: "l", typ: tar.TypeSymlink, link: "x\n!id"}, "control character"},
		{"newline in hard link target", ent{name: "l", typ: tar.TypeLink, link: "x\n!id"}, "control character"},
		{"system namespace", ent{name: "f", typ: tar.TypeReg, xattrs: map[string]string{"system.posix_acl_access": "x"}}, "namespaces"},
		{"no namespace", ent{name: "f", typ: tar.TypeReg, xattrs: map[string]string{"foo": "x"}}, "namespaces"},
		{"bare namespace", ent{name: "f", typ: tar.TypeReg, xattrs: map[string]string{"user.": "x"}}, "namespaces"},
		{"huge xattr value", ent{name: "f", typ: tar.TypeReg, xattrs: map[string]string{"user.big": strings.Repeat("v", maxXattrValue+1)}}, "too long"},
		{"long component", reg(strings.Repeat("n", 256), "x", 0o644), "too long"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := unpackLayers(t, filepath.Join(t.TempDir(), "root"), gzipLayer(t, c.e))
			if err == nil || !strings.Contains(err.Error(), c.errHas) {
				t.Fatalf("err = %v, want one with %q", err, c.errHas)
			}
		})
	}
	// Binary values of allowed namespaces are fine (security.capability is binary).
	if _, err := unpackLayers(t, filepath.Join(t.TempDir(), "root"), gzipLayer(t,
		ent{name: "f", typ: tar.TypeReg, xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\n\x00"}})); err != nil {
		t.Fatal(err)
	}
}

// gnuSparseTar is ocitest.GNUSparseTar with this file's mtime.
func gnuSparseTar(name string, realSize int64) []byte {
	return ocitest.GNUSparseTar(name, realSize, testTime.Unix())
}

// layerFrom is a layer of raw bytes (compressed or not: detected).
func layerFrom(t testing.TB, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestHostileSparseBomb: a 2 KiB layer holding a GNU sparse file of 1
// GiB is refused beyond the cap before anything is written; below the
// cap its hole stays a hole on disk.
func TestHostileSparseBomb(t *testing.T) {
	bomb := gnuSparseTar("bomb", 1<<30)
	if len(bomb) > 4096 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	base := t.TempDir()
	img := makeImage(t, "amd64", v1.Config{}, layerFrom(t, bomb))
	_, err := Unpack(context.Background(), img, filepath.Join(base, "root"), UnpackOptions{MaxBytes: 64 << 20})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "64 MiB") {
		t.Fatalf("err = %v, want ErrTooLarge naming the 64 MiB cap", err)
	}
	if n := diskUsage(t, base); n > 1<<20 {
		t.Errorf("%d bytes on disk after the refusal", n)
	}

	// Under the cap: unpacked, with the hole kept.
	small := gnuSparseTar("sparse", 256<<20)
	dir := filepath.Join(t.TempDir(), "root")
	if _, err := Unpack(context.Background(), makeImage(t, "amd64", v1.Config{}, layerFrom(t, small)), dir, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "sparse"))
	if err != nil || fi.Size() != 256<<20 {
		t.Fatalf("sparse file: %v %v", fi, err)
	}
	if n := diskUsage(t, dir); n > 1<<20 {
		t.Errorf("a 256 MiB sparse file takes %d bytes on disk: holes were written as zeros", n)
	}
	b := make([]byte, 2)
	f, _ := os.Open(filepath.Join(dir, "sparse"))
	f.ReadAt(b, 0)
	f.Close()
	if string(b) != "x\x00" {
		t.Errorf("content %q", b)
	}
}

// TestHostileCompressionBombs: a gzip or zstd layer of a few hundred
// KiB that decompresses to 96 MiB (a small tar followed by zeros) is
// refused once the uncompressed bytes pass the cap.
func TestHostileCompressionBombs(t *testing.T) {
	const zeros = 96 << 20
	for _, c := range []struct {
		name string
		w    func(io.Writer) io.WriteCloser
	}{
		{"gzip", func(w io.Writer) io.WriteCloser { z, _ := gzip.NewWriterLevel(w, gzip.DefaultCompression); return z }},
		{"zstd", func(w io.Writer) io.WriteCloser {
			z, _ := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedDefault))
			return z
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			z := c.w(&buf)
			z.Write(tarBytes(t, []ent{reg("f", "x", 0o644)}))
			chunk := make([]byte, 1<<20)
			for i := 0; i < zeros/len(chunk); i++ {
				z.Write(chunk)
			}
			if err := z.Close(); err != nil {
				t.Fatal(err)
			}
			if buf.Len() > 1<<20 {
				t.Fatalf("bomb is %d bytes", buf.Len())
			}
			base := t.TempDir()
			img := makeImage(t, "amd64", v1.Config{}, layerFrom(t, buf.Bytes()))
			_, err := Unpack(context.Background(), img, filepath.Join(base, "root"), UnpackOptions{MaxBytes: 32 << 20})
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if n := diskUsage(t, base); n > 1<<20 {
				t.Errorf("%d bytes on disk", n)
			}
		})
	}
}

// TestHostileTooManyEntries: the entry count is capped too.
func TestHostileTooManyEntries(t *testing.T) {
	var ents []ent
	for i := range 20 {
		ents = append(ents, reg(fmt.Sprintf("f%d", i), "", 0o644))
	}
	img := makeImage(t, "amd64", v1.Config{}, gzipLayer(t, ents...))
	_, err := Unpack(context.Background(), img, filepath.Join(t.TempDir(), "root"), UnpackOptions{MaxEntries: 10})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v", err)
	}
}

// diskUsage is the bytes allocated under dir.
func diskUsage(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		// os reports *syscall.Stat_t (not *unix.Stat_t, which would
		// never match and make every usage check pass).
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			t.Fatalf("%s: no stat_t (%T)", p, fi.Sys())
		}
		n += st.Blocks * 512
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// assertNoLeftovers fails if dir holds anything but keep.
func assertNoLeftovers(t *testing.T, dir string, keep ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		ok := false
		for _, k := range keep {
			ok = ok || e.Name() == k
		}
		if !ok {
			t.Errorf("leftover %s", filepath.Join(dir, e.Name()))
		}
	}
}

// TestHostileManyEmptyDirs: every entry counts a block against
// MaxBytes, so a small layer of thousands of empty directories (each
// costing a block on the host, twice) is refused under a small cap
// although its stream and its file sizes are far below it.
func TestHostileManyEmptyDirs(t *testing.T) {
	const n, maxBytes = 5000, 8 << 20
	ents := make([]ent, 0, n)
	for i := range n {
		ents = append(ents, dir(fmt.Sprintf("d%05d/", i), 0o755))
	}
	raw := tarBytes(t, ents)
	if len(raw) >= maxBytes {
		t.Fatalf("layer stream is %d bytes, not below the cap", len(raw))
	}
	base := t.TempDir()
	img := makeImage(t, "amd64", v1.Config{}, gzipLayer(t, ents...))
	_, err := Unpack(context.Background(), img, filepath.Join(base, "root"), UnpackOptions{MaxBytes: maxBytes})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "8 MiB") {
		t.Fatalf("err = %v, want ErrTooLarge naming the 8 MiB cap", err)
	}
	if u := diskUsage(t, base); u > maxBytes+1<<20 {
		t.Errorf("%d bytes on disk after the refusal, cap %d", u, maxBytes)
	}
	// Under a cap that fits them, the same layer unpacks.
	if _, err := Unpack(context.Background(), img, filepath.Join(t.TempDir(), "root"), UnpackOptions{MaxBytes: 64 << 20}); err != nil {
		t.Fatal(err)
	}
}

// TestHostileLongLineInjection is the review's exploit: debugfs reads
// its script with fgets(buf, 8192), so a line longer than that is cut
// and the rest runs as a command of its own, through system(3) if it
// starts with '!'. A device node under ~4,000 bytes of '"' names
// (doubled once quoted) and an xattr name of blanks then "!touch
// MARKER #" placed that cut inside the blanks of the ea_set line.
// BuildExt4 must refuse the layer with a clear error, run nothing, and
// leave nothing behind.
func TestHostileLongLineInjection(t *testing.T) {
	needE2fsprogs(t)
	mdir, err := os.MkdirTemp("", "bgr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(mdir) })
	marker := filepath.Join(mdir, "pwned")
	spaces := 255 - len("user.") - len("!touch ") - len(marker) - len(" #")
	if spaces < 100 {
		t.Fatalf("temporary directory %s too long for the exploit's xattr name", mdir)
	}
	key := "user." + strings.Repeat(" ", spaces) + "!touch " + marker + " #"

	work := t.TempDir()
	out := filepath.Join(work, "r.ext4")
	// The old ea_set line: ea_set -f "VALUEFILE" "PATH" "KEY", VALUEFILE
	// being WORK/.debugfs-NNNNNNNNN/xattr-1. Size the doubled path so
	// that byte 8191 (where fgets cuts) falls in the middle of the
	// blanks.
	vf := len(work) + len("/.debugfs-123456789/xattr-1")
	pre := len(`ea_set -f "`) + vf + len(`" "`)
	post := len(`" "user.`) + spaces/2
	doubled := 8191 - pre - post // 2*quotes + slashes + len("n")
	var comps []string
	for rest := doubled - 1; rest > 0; {
		n := min(255, (rest-1)/2) // a slash then n quotes, doubled
		if n <= 0 {
			break
		}
		comps = append(comps, strings.Repeat(`"`, n))
		rest -= 2*n + 1
	}
	name := strings.Join(comps, "/") + "/n"
	if len(name) < 3900 || len(name) > 4095 {
		t.Fatalf("exploit path is %d bytes", len(name))
	}

	tree := filepath.Join(work, "tree")
	tr, err := unpackLayers(t, tree, gzipLayer(t,
		ent{name: name, typ: tar.TypeChar, mode: 0o644, major: 1, minor: 3, xattrs: map[string]string{key: "v"}}))
	if err != nil {
		t.Fatalf("unpack: %v", err) // the layer itself is legal
	}
	err = BuildExt4(context.Background(), tree, tr, out, 0)
	if err == nil || !strings.Contains(err.Error(), "the limit is") {
		t.Fatalf("BuildExt4: err = %v, want a refusal of the long line", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("debugfs ran the injected command")
	}
	assertNoLeftovers(t, work, "tree")
}

// TestScriptLineBound: the generator refuses a command that would reach
// maxLine rather than emit (or split) it, and emits nothing for it.
func TestScriptLineBound(t *testing.T) {
	var s script
	long := "/" + strings.Repeat(`"`, 2100) // 4,200+ bytes once quoted
	if err := s.ls(long); err == nil || !strings.Contains(err.Error(), "the limit is") {
		t.Fatalf("ls: err = %v", err)
	}
	if err := s.sif(pathTarget(long), "mode", 0o644); err == nil {
		t.Fatal("sif accepted a long line")
	}
	if err := s.eaSet(inode(12), "/w/x", "user."+strings.Repeat(`"`, 250)); err != nil {
		t.Fatalf("eaSet of a short line: %v", err) // ~520 bytes: fine
	}
	ok := "/" + strings.Repeat("a", 4096-len(`ls -p "/"`)-2) // just below the bound
	if err := s.ls(ok); err != nil {
		t.Fatalf("ls of a %d byte line: %v", len(ok)+len(`ls -p ""`)+1, err)
	}
	if err := s.ls(ok + "a"); err == nil {
		t.Fatal("ls of a line reaching the bound accepted")
	}
	if s.Len() != 2 || strings.Count(string(s.Bytes()), "\n") != 2 {
		t.Fatalf("%d commands, script %d bytes", s.Len(), len(s.Bytes()))
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(s.Bytes()), "\n"), "\n") {
		if len(l)+1 >= maxLine {
			t.Fatalf("line of %d bytes", len(l)+1)
		}
	}
}
