package guest

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func makeTar(t *testing.T, entries []tar.Header, bodies map[string]string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		h := h
		body := bodies[h.Name]
		h.Size = int64(len(body))
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(body))
		}
	}
	tw.Close()
	return &buf
}

func TestUntar(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "stale"), []byte("old"), 0o644)
	buf := makeTar(t, []tar.Header{
		{Name: "src/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "src/main.go", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "run.sh", Typeflag: tar.TypeReg, Mode: 0o755},
		{Name: "deep/er/file", Typeflag: tar.TypeReg, Mode: 0o600},
		{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "src/main.go"},
	}, map[string]string{"src/main.go": "package main\n", "run.sh": "#!/bin/sh\n", "deep/er/file": "x"})
	n, err := Untar(buf, dir, true)
	if err != nil || n != 5 {
		t.Fatalf("untar: %d %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); !os.IsNotExist(err) {
		t.Errorf("clean did not remove old files")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "link")); string(b) != "package main\n" {
		t.Errorf("symlink: %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "run.sh")); fi.Mode().Perm() != 0o755 {
		t.Errorf("mode: %v", fi.Mode())
	}
}

func TestUntarRefusesEscapes(t *testing.T) {
	outside := t.TempDir()
	for _, entries := range [][]tar.Header{
		{{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "/abs", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: outside}, {Name: "esc/pwned", Typeflag: tar.TypeReg, Mode: 0o644}},
	} {
		dir := t.TempDir()
		if _, err := Untar(makeTar(t, entries, nil), dir, false); err == nil {
			t.Errorf("%v accepted", entries[len(entries)-1].Name)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "pwned")); err == nil {
		t.Errorf("wrote through a symlink out of the target")
	}
}
