package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGuestRef(t *testing.T) {
	for _, c := range []struct {
		arg, vm, p string
		ok         bool
	}{
		{"box:/root/x", "box", "/root/x", true},
		{"box:", "box", "", true},
		{"./box:/x", "", "", false},
		{"/abs/path", "", "", false},
		{"-", "", "", false},
		{":/x", "", "", false},
		{"file.txt", "", "", false},
	} {
		vm, p, ok := guestRef(c.arg)
		if vm != c.vm || p != c.p || ok != c.ok {
			t.Errorf("%q: got %q %q %v", c.arg, vm, p, ok)
		}
	}
}

func TestCpRefusesBadArguments(t *testing.T) {
	f := startFakeDaemon(t, nil)
	for _, args := range [][]string{
		{"a:/x", "b:/y"},
		{"./x", "./y"},
		{"./x", "box:relative"},
		{"box:/x\x00y", "./y"},
	} {
		code, _, stderr := runIn(t, f.layout, append([]string{"vm", "cp"}, args...)...)
		if code == 0 || stderr == "" {
			t.Errorf("%v: accepted (%q)", args, stderr)
		}
	}
}

type hent struct {
	name, body, link string
	typ              byte
	mode             int64
}

func hostileTar(t testing.TB, ents ...hent) string {
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
		io.WriteString(tw, e.body)
	}
	tw.Close()
	return buf.String()
}

// TestCpOutHostileGuest: a guest's tar stream never writes outside the
// destination, whatever it holds; symlinks arrive as symlinks.
func TestCpOutHostileGuest(t *testing.T) {
	stat := `{"name":"d","path":"/srv/d","type":"dir","size":4096,"mode":"0755","mtime":"2026-01-01T00:00:00Z"}`
	for _, c := range []struct {
		what string
		tar  []hent
	}{
		{"symlink then write through it", []hent{{name: "d/", typ: tar.TypeDir, mode: 0o755}, {name: "d/l", typ: tar.TypeSymlink, link: "VICTIM"}, {name: "d/l/x", body: "pwned"}}},
		{"dot-dot", []hent{{name: "d/../../victim/x", body: "pwned"}}},
		{"absolute", []hent{{name: "VICTIM/x", body: "pwned"}}},
		{"outside the copied path", []hent{{name: "other", body: "pwned"}}},
		{"hard link out", []hent{{name: "d/h", typ: tar.TypeLink, link: "VICTIM/x"}}},
		{"relative symlink climbing out, then write", []hent{{name: "d/up", typ: tar.TypeSymlink, link: "../../victim"}, {name: "d/up/x", body: "pwned"}}},
	} {
		t.Run(c.what, func(t *testing.T) {
			base := t.TempDir()
			dst, victim := filepath.Join(base, "dst"), filepath.Join(base, "victim")
			os.Mkdir(dst, 0o755)
			os.Mkdir(victim, 0o755)
			for i := range c.tar {
				c.tar[i].name = strings.ReplaceAll(c.tar[i].name, "VICTIM", victim)
				c.tar[i].link = strings.ReplaceAll(c.tar[i].link, "VICTIM", victim)
			}
			f := startFakeDaemon(t, map[string]string{
				"GET /vms/box/files/stat":    stat,
				"GET /vms/box/files/archive": hostileTar(t, c.tar...),
			})
			runIn(t, f.layout, "vm", "cp", "box:/srv/d", dst)
			if ents, _ := os.ReadDir(victim); len(ents) > 0 {
				t.Fatalf("wrote outside the destination: %v", ents)
			}
			if ents, _ := os.ReadDir(base); len(ents) != 2 {
				t.Fatalf("wrote next to the destination: %v", ents)
			}
			filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					if b, _ := os.ReadFile(p); string(b) == "pwned" {
						t.Errorf("wrote %s", p)
					}
				}
				return nil
			})
		})
	}
}

func TestCpOutKeepsModesAndSymlinks(t *testing.T) {
	stat := `{"name":"d","path":"/srv/d","type":"dir","size":4096,"mode":"0755","mtime":"2026-01-01T00:00:00Z"}`
	f := startFakeDaemon(t, map[string]string{
		"GET /vms/box/files/stat": stat,
		"GET /vms/box/files/archive": hostileTar(t,
			hent{name: "d/", typ: tar.TypeDir, mode: 0o750},
			hent{name: "d/run.sh", body: "#!/bin/sh\n", mode: 0o4755},
			hent{name: "d/etc", typ: tar.TypeSymlink, link: "/etc"},
			hent{name: "d/etc/evil", body: "pwned"}),
	})
	base := t.TempDir()
	// DST does not exist: the copy is named after it.
	code, _, stderr := runIn(t, f.layout, "vm", "cp", "box:/srv/d", filepath.Join(base, "out"))
	if code == 0 {
		t.Fatal("a write below a symlink was accepted")
	}
	if !strings.Contains(stderr, "symbolic link") && !strings.Contains(stderr, "symlink") {
		t.Logf("stderr: %s", stderr)
	}
	f = startFakeDaemon(t, map[string]string{
		"GET /vms/box/files/stat": stat,
		"GET /vms/box/files/archive": hostileTar(t,
			hent{name: "d/", typ: tar.TypeDir, mode: 0o750},
			hent{name: "d/run.sh", body: "#!/bin/sh\n", mode: 0o4755},
			hent{name: "d/etc", typ: tar.TypeSymlink, link: "/etc"}),
	})
	out := filepath.Join(base, "out2")
	if code, _, stderr := runIn(t, f.layout, "vm", "cp", "box:/srv/d", out); code != 0 {
		t.Fatal(stderr)
	}
	if fi, err := os.Stat(filepath.Join(out, "run.sh")); err != nil || fi.Mode() != 0o755 {
		t.Errorf("run.sh: %v %v (set-id bits must not be kept)", fi.Mode(), err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("dir mode: %v %v", fi.Mode(), err)
	}
	if l, err := os.Readlink(filepath.Join(out, "etc")); err != nil || l != "/etc" {
		t.Errorf("symlink: %q %v", l, err)
	}
	// DST exists: the copy goes inside it under its own name.
	if code, _, stderr := runIn(t, f.layout, "vm", "cp", "box:/srv/d", out); code != 0 {
		t.Fatal(stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "d", "run.sh")); err != nil {
		t.Error(err)
	}
}

func TestWriteTree(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o700)
	os.WriteFile(filepath.Join(src, "sub", "x"), []byte("data"), 0o751)
	os.Symlink("/etc/passwd", filepath.Join(src, "l"))
	var buf bytes.Buffer
	if err := writeTree(context.Background(), &buf, src, "renamed"); err != nil {
		t.Fatal(err)
	}
	got := map[string]*tar.Header{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
	}
	if h := got["renamed/"]; h == nil || h.Typeflag != tar.TypeDir {
		t.Errorf("top: %+v", got)
	}
	if h := got["renamed/sub/x"]; h == nil || h.Mode&0o777 != 0o751 || h.Size != 4 {
		t.Errorf("file: %+v", h)
	}
	if h := got["renamed/l"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/etc/passwd" {
		t.Errorf("symlink: %+v", h)
	}
	if h := got["renamed/sub/"]; h == nil || h.Mode&0o777 != 0o700 {
		t.Errorf("sub: %+v", h)
	}
}

// FuzzExtractGuestTar: whatever a guest's tar stream holds, a copy out
// writes only the copied path, renamed, below the destination.
func FuzzExtractGuestTar(f *testing.F) {
	f.Add([]byte(hostileTar(f, hent{name: "d/", typ: tar.TypeDir}, hent{name: "d/l", typ: tar.TypeSymlink, link: "../../victim"}, hent{name: "d/l/x", body: "p"})))
	f.Add([]byte(hostileTar(f, hent{name: "d/h", typ: tar.TypeLink, link: "d/../../victim/x"}, hent{name: "other", body: "p"})))
	f.Add([]byte(hostileTar(f, hent{name: "d", body: "file"}, hent{name: "./d/../d/x", body: "p"})))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dst, victim := filepath.Join(base, "dst"), filepath.Join(base, "victim")
		os.Mkdir(dst, 0o755)
		os.Mkdir(victim, 0o755)
		extractGuestTar(context.Background(), bytes.NewReader(data), dst, "d", "out")
		filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755) // let the cleanup in
			}
			return nil
		})
		if ents, _ := os.ReadDir(victim); len(ents) > 0 {
			t.Fatalf("wrote outside the destination: %v", ents)
		}
		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("wrote next to the destination: %v", ents)
		}
		for _, e := range must(os.ReadDir(dst)) {
			if e.Name() != "out" {
				t.Fatalf("wrote %s, which is not the copied path", e.Name())
			}
		}
	})
}

func must[T any](v T, _ error) T { return v }
