package untar

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type ent struct {
	name, body, link string
	typ              byte
	mode             int64
	size             int64 // header size when body is not the content
}

func mkTar(t testing.TB, ents ...ent) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return &buf
}

// setup gives a target directory next to a "victim" directory that must
// stay empty whatever the archive holds.
func setup(t *testing.T) (dir, victim string) {
	base := t.TempDir()
	dir, victim = filepath.Join(base, "dst"), filepath.Join(base, "victim")
	if err := os.Mkdir(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, victim
}

func assertEmpty(t *testing.T, victim string) {
	t.Helper()
	ents, err := os.ReadDir(victim)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		t.Fatalf("something was written outside the target: %v", ents)
	}
}

func TestExtract(t *testing.T) {
	dir, _ := setup(t)
	st, err := Extract(context.Background(), mkTar(t,
		ent{name: "./", typ: tar.TypeDir, mode: 0o755},
		ent{name: "a/b/", typ: tar.TypeDir, mode: 0o750},
		ent{name: "a/b/f", body: "hello", mode: 0o4755},
		ent{name: "a/l", typ: tar.TypeSymlink, link: "/etc/passwd"},
		ent{name: "a/h", typ: tar.TypeLink, link: "a/b/f"},
		ent{name: "ro/", typ: tar.TypeDir, mode: 0o555},
		ent{name: "ro/x", body: "x"},
		ent{name: "dev", typ: tar.TypeChar},
	), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 6 || st.Bytes != 6 {
		t.Errorf("stats %+v", st)
	}
	b, err := os.ReadFile(filepath.Join(dir, "a/h"))
	if err != nil || string(b) != "hello" {
		t.Fatalf("hard link: %q %v", b, err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "a/b/f"))
	if fi.Mode() != 0o755 {
		t.Errorf("setuid kept without SpecialBits: %v", fi.Mode())
	}
	if l, _ := os.Readlink(filepath.Join(dir, "a/l")); l != "/etc/passwd" {
		t.Errorf("symlink target %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ro")); fi.Mode().Perm() != 0o555 {
		t.Errorf("ro mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(dir, "a/b")); fi.Mode().Perm() != 0o750 {
		t.Errorf("a/b mode %v", fi.Mode())
	}
	if _, err := os.Lstat(filepath.Join(dir, "dev")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device created without Devices: %v", err)
	}
	os.Chmod(filepath.Join(dir, "ro"), 0o755)
}

func TestSpecialBitsSparseFifo(t *testing.T) {
	dir, _ := setup(t)
	body := strings.Repeat("\x00", 3*holeChunk) + "end"
	_, err := Extract(context.Background(), mkTar(t,
		ent{name: "s", body: "x", mode: 0o4755},
		ent{name: "z", body: body},
		ent{name: "p", typ: tar.TypeFifo, mode: 0o600},
	), dir, Options{SpecialBits: true, Sparse: true, Devices: true})
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "s")); fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("setuid dropped: %v", fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "z")); string(b) != body {
		t.Errorf("sparse file content differs")
	}
	if fi, err := os.Lstat(filepath.Join(dir, "p")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v %v", fi, err)
	}
}

func TestHostile(t *testing.T) {
	cases := []struct {
		name string
		ents []ent
		o    Options
		want string
	}{
		{"absolute", []ent{{name: "/etc/x", body: "x"}}, Options{}, "absolute"},
		{"dot-dot", []ent{{name: "../victim/x", body: "x"}}, Options{}, "leaves the root"},
		{"dot-dot inside", []ent{{name: "a/../../victim/x", body: "x"}}, Options{}, "leaves the root"},
		{"symlink then file", []ent{
			{name: "l", typ: tar.TypeSymlink, link: "../victim"},
			{name: "l/x", body: "x"},
		}, Options{}, "below symbolic link"},
		{"symlink to dot then file", []ent{
			{name: "l", typ: tar.TypeSymlink, link: "."},
			{name: "l/x", body: "x"},
		}, Options{}, "below symbolic link"},
		{"symlink then hard link through it", []ent{
			{name: "l", typ: tar.TypeSymlink, link: "../victim"},
			{name: "h", typ: tar.TypeLink, link: "l/x"},
		}, Options{}, "below symbolic link"},
		{"symlink then overwrite it", []ent{
			{name: "l", typ: tar.TypeSymlink, link: "../victim/x"},
			{name: "l", body: "x"},
		}, Options{}, ""},
		{"hard link out", []ent{{name: "h", typ: tar.TypeLink, link: "../victim/x"}}, Options{}, "leaves the root"},
		{"hard link absolute", []ent{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, Options{}, "absolute"},
		{"hard link to escaping symlink", []ent{
			{name: "l", typ: tar.TypeSymlink, link: "../victim"},
			{name: "h", typ: tar.TypeLink, link: "l"},
			{name: "h/x", body: "x"},
		}, Options{}, "below symbolic link"},
		{"too many entries", []ent{{name: "a"}, {name: "b"}, {name: "c"}}, Options{Limits: Limits{MaxEntries: 2}}, "more than 2 entries"},
		{"too many bytes", []ent{{name: "a", body: "1234"}, {name: "b", body: "1234"}}, Options{Limits: Limits{MaxBytes: 6}}, "more than 6 bytes"},
		{"long name", []ent{{name: strings.Repeat("a/", 40) + "x"}}, Options{Limits: Limits{MaxPathLen: 64}}, "longer than 64"},
		{"long link", []ent{{name: "l", typ: tar.TypeSymlink, link: strings.Repeat("x", 100)}}, Options{Limits: Limits{MaxPathLen: 64}}, "longer than 64"},
		{"device refused", []ent{{name: "d", typ: tar.TypeBlock}}, Options{RefuseOther: true}, "unsupported"},
		{"file over directory", []ent{{name: "d/", typ: tar.TypeDir}, {name: "d/x", body: "x"}, {name: "d", body: "y"}}, Options{}, "directory already"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, victim := setup(t)
			_, err := Extract(context.Background(), mkTar(t, c.ents...), dir, c.o)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if c.o.MaxBytes > 0 || c.o.MaxEntries > 0 {
				if !errors.Is(err, ErrLimit) {
					t.Errorf("not ErrLimit: %v", err)
				}
			}
			assertEmpty(t, victim)
		})
	}
}

func TestHugeDeclaredSize(t *testing.T) {
	// A header claiming 1 TiB is refused before any byte is read.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
	tw.Flush()
	dir, _ := setup(t)
	_, err := Extract(context.Background(), &buf, dir, Options{Limits: Limits{MaxBytes: 1 << 30}})
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "big")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("big created: %v", err)
	}
}

func TestTruncated(t *testing.T) {
	b := mkTar(t, ent{name: "f", body: strings.Repeat("x", 10000)}).Bytes()
	dir, _ := setup(t)
	if _, err := Extract(context.Background(), bytes.NewReader(b[:3000]), dir, Options{}); err == nil {
		t.Fatal("truncated archive accepted")
	}
}

func TestPreexistingSymlinkOutside(t *testing.T) {
	// A link already in the target that points outside is not followed.
	dir, victim := setup(t)
	os.MkdirAll(dir, 0o755)
	if err := os.Symlink(victim, filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(context.Background(), mkTar(t, ent{name: "out/x", body: "x"}), dir, Options{}); err == nil {
		t.Fatal("wrote through a symbolic link leading outside")
	}
	assertEmpty(t, victim)
}

func TestConfineSymlinks(t *testing.T) {
	dir, _ := setup(t)
	_, err := Extract(context.Background(), mkTar(t,
		ent{name: "abs", typ: tar.TypeSymlink, link: "/etc"},
		ent{name: "up", typ: tar.TypeSymlink, link: "../x"},
		ent{name: "d/", typ: tar.TypeDir},
		ent{name: "d/a", typ: tar.TypeSymlink, link: "../b"},
		ent{name: "b", typ: tar.TypeSymlink, link: "d/.."}, // resolves to dir: kept
		ent{name: "ok", typ: tar.TypeSymlink, link: "d"},
	), dir, Options{ConfineSymlinks: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"abs": false, "up": false, "d/a": true, "b": true, "ok": true} {
		_, err := os.Lstat(filepath.Join(dir, name))
		if got := err == nil; got != want {
			t.Errorf("%s present = %v, want %v", name, got, want)
		}
	}
}

func TestFilterAndReplace(t *testing.T) {
	dir, _ := setup(t)
	_, err := Extract(context.Background(), mkTar(t,
		ent{name: "keep", body: "1"},
		ent{name: "skip", body: "2"},
		ent{name: "d/", typ: tar.TypeDir},
		ent{name: "d/x", body: "x"},
		ent{name: "d", body: "file now"},
	), dir, Options{ReplaceDirs: true, Filter: func(e Entry) (bool, error) { return e.Name != "skip", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "skip")); err == nil {
		t.Error("filtered entry written")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "d")); string(b) != "file now" {
		t.Errorf("d = %q", b)
	}
}

func TestContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir, _ := setup(t)
	if _, err := Extract(ctx, mkTar(t, ent{name: "a", body: "x"}), dir, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestWalkAbsolute(t *testing.T) {
	var names []string
	err := Walk(context.Background(), mkTar(t, ent{name: "/a/b", body: "x"}, ent{name: "/", typ: tar.TypeDir}), WalkOptions{AllowAbsolute: true}, func(e Entry, _ io.Reader) error {
		names = append(names, e.Name)
		return nil
	})
	if err != nil || strings.Join(names, ",") != "a/b," {
		t.Fatalf("%v %v", names, err)
	}
}

func TestLutimesMknod(t *testing.T) {
	dir := t.TempDir()
	os.Symlink("nowhere", filepath.Join(dir, "l"))
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	when := time.Unix(1_000_000, 0)
	if err := Lutimes(root, "l", when); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "l")); !fi.ModTime().Equal(when) {
		t.Errorf("mtime %v", fi.ModTime())
	}
	if err := Mknod(root, "../x", 0o10600, 0); err == nil {
		t.Error("mknod outside the root accepted")
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{"./": "", ".": "", "a//b/": "a/b", "./a/./b": "a/b"} {
		if got, err := CleanName(in); err != nil || got != want {
			t.Errorf("CleanName(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"/a", "..", "a/../..", "a/..", "a\x00b"} {
		if got, err := CleanName(in); err == nil {
			t.Errorf("CleanName(%q) = %q, want an error", in, got)
		}
	}
}
