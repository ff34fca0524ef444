package oci

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

func unpackLayers(t *testing.T, dir string, layers ...v1.Layer) (*Tree, error) {
	t.Helper()
	return Unpack(context.Background(), makeImage(t, "amd64", v1.Config{}, layers...), dir, UnpackOptions{})
}

// TestUnpackRefusesEscapes checks that no layer can write (or delete)
// outside the target directory.
func TestUnpackRefusesEscapes(t *testing.T) {
	outside := t.TempDir()
	victim := filepath.Join(outside, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		layers [][]ent
		errHas string // "" when the layers are harmless and must unpack
	}{
		{"write through absolute symlink", [][]ent{{
			{name: "a", typ: tar.TypeSymlink, link: outside},
			reg("a/pwned", "x", 0o644),
		}}, "symbolic link"},
		{"write through symlink of a lower layer", [][]ent{
			{{name: "a", typ: tar.TypeSymlink, link: "../../../../../../.." + outside}},
			{dir("a/sub/", 0o755), reg("a/sub/pwned", "x", 0o644)},
		}, "symbolic link"},
		{"dot-dot name", [][]ent{{reg("../pwned", "x", 0o644)}}, "leaves the root"},
		{"dot-dot inside name", [][]ent{{dir("d/", 0o755), reg("d/../../pwned", "x", 0o644)}}, "leaves the root"},
		{"hard link out", [][]ent{{{name: "h", typ: tar.TypeLink, link: "../../../../../../.." + victim}}}, "leaves the root"},
		{"hard link through symlink", [][]ent{{
			{name: "a", typ: tar.TypeSymlink, link: outside},
			{name: "h", typ: tar.TypeLink, link: "a/victim"},
		}}, "does not exist"},
		{"symlink to directory then hard link into it", [][]ent{{
			{name: "a", typ: tar.TypeSymlink, link: outside},
			{name: "a/pwned", typ: tar.TypeLink, link: "a"},
		}}, "symbolic link"},
		{"whiteout and opaque through symlink", [][]ent{
			{{name: "a", typ: tar.TypeSymlink, link: outside}},
			{wh("a/.wh.victim"), wh("a/.wh..wh..opq")},
		}, ""},
		{"directory replaces symlink", [][]ent{
			{{name: "a", typ: tar.TypeSymlink, link: outside}},
			{dir("a/", 0o755), reg("a/victim", "replaced", 0o644)},
		}, ""},
		{"file replaces symlink", [][]ent{
			{{name: "a", typ: tar.TypeSymlink, link: victim}},
			{reg("a", "mine", 0o644)},
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "root")
			var layers []v1.Layer
			for _, l := range c.layers {
				layers = append(layers, gzipLayer(t, l...))
			}
			_, err := unpackLayers(t, dir, layers...)
			switch {
			case c.errHas == "" && err != nil:
				t.Fatal(err)
			case c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)):
				t.Fatalf("err = %v, want one with %q", err, c.errHas)
			}
			if b, err := os.ReadFile(victim); err != nil || string(b) != "precious" {
				t.Errorf("victim: %q %v", b, err)
			}
			ents, err := os.ReadDir(outside)
			if err != nil || len(ents) != 1 {
				t.Errorf("outside dir has %v %v", ents, err)
			}
			for _, p := range []string{filepath.Join(base, "pwned"), filepath.Join(filepath.Dir(base), "pwned")} {
				if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists", p)
				}
			}
		})
	}
}

func TestUnpackWhiteoutOrder(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	tr, err := unpackLayers(t, root,
		gzipLayer(t, dir("a/", 0o755), reg("a/1", "1", 0o644), dir("a/d/", 0o755), reg("a/d/x", "x", 0o644),
			reg("b", "b1", 0o644), reg("c/old", "o", 0o644)),
		gzipLayer(t,
			// whiteouts before and after the same layer's own entries
			wh("a/.wh.d"), dir("a/d/", 0o700), reg("a/d/y", "y", 0o644),
			reg("b", "b2", 0o644), wh(".wh.b"),
			reg("c/new", "n", 0o644), wh("c/.wh..wh..opq"),
			wh(".wh.nothing"), wh("nodir/.wh..wh..opq"),
		),
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/a/1", "/a/d", "/a/d/y", "/b", "/c/new"} {
		if _, ok := tr.Get(p); !ok {
			t.Errorf("%s missing", p)
		}
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("host: %v", err)
		}
	}
	for _, p := range []string{"/a/d/x", "/c/old", "/nothing", "/nodir"} {
		if _, ok := tr.Get(p); ok {
			t.Errorf("%s should be gone", p)
		}
		if _, err := os.Lstat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("host %s: %v", p, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "b")); string(b) != "b2" {
		t.Errorf("b = %q", b)
	}
	if e, _ := tr.Get("/a/d"); e == nil || e.Mode != unix.S_IFDIR|0o700 {
		t.Errorf("/a/d = %+v", e)
	}
}

func TestUnpackReplacements(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	tr, err := unpackLayers(t, root,
		gzipLayer(t, dir("x/", 0o755), reg("x/f", "f", 0o644), reg("y", "y", 0o644), reg("t", "t1", 0o644),
			ent{name: "l", typ: tar.TypeLink, link: "t"}),
		gzipLayer(t,
			reg("x", "now a file", 0o600), // file replaces directory
			dir("y/", 0o711),              // directory replaces file
			ent{name: "t", typ: tar.TypeSymlink, link: "elsewhere"}, // symlink replaces hard-linked file
			ent{name: "l", typ: tar.TypeLink, link: "l"},            // link to itself: no-op
		),
	)
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := tr.Get("/x"); e == nil || e.Mode != unix.S_IFREG|0o600 {
		t.Errorf("/x = %+v", e)
	}
	if _, ok := tr.Get("/x/f"); ok {
		t.Error("/x/f survived")
	}
	if e, _ := tr.Get("/y"); e == nil || !e.IsDir() {
		t.Errorf("/y = %+v", e)
	}
	if b, err := os.ReadFile(filepath.Join(root, "l")); err != nil || string(b) != "t1" {
		t.Errorf("/l = %q %v", b, err)
	}
	if e, _ := tr.Get("/t"); e == nil || e.Linkname != "elsewhere" {
		t.Errorf("/t = %+v", e)
	}
}

func TestUnpackErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		ents   []ent
		errHas string
	}{
		{"hard link to nothing", []ent{{name: "h", typ: tar.TypeLink, link: "nothing"}}, "does not exist"},
		{"hard link to directory", []ent{dir("d/", 0o755), {name: "h", typ: tar.TypeLink, link: "d"}}, "directory"},
		{"file under file", []ent{reg("f", "", 0o644), reg("f/g", "", 0o644)}, "not a directory"},
		{"root not a directory", []ent{reg(".", "", 0o644)}, "root"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := unpackLayers(t, filepath.Join(t.TempDir(), "root"), gzipLayer(t, c.ents...))
			if err == nil || !strings.Contains(err.Error(), c.errHas) {
				t.Errorf("err = %v, want one with %q", err, c.errHas)
			}
		})
	}
	t.Run("non-empty dir", func(t *testing.T) {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "x"), nil, 0o644)
		if _, err := unpackLayers(t, d, gzipLayer(t, reg("a", "", 0o644))); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		img := makeImage(t, "amd64", v1.Config{}, gzipLayer(t, reg("a", "", 0o644)))
		if _, err := Unpack(ctx, img, filepath.Join(t.TempDir(), "root"), UnpackOptions{}); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"./": "/", "/": "/", "./a/b/": "/a/b", "/a//b/./c": "/a/b/c", "a": "/a", "a/.wh..wh..opq": "/a/.wh..wh..opq",
	} {
		if got, err := cleanPath(in); err != nil || got != want {
			t.Errorf("cleanPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"..", "../a", "a/../b", "/..", "a/\x00"} {
		if got, err := cleanPath(bad); err == nil {
			t.Errorf("cleanPath(%q) = %q, want an error", bad, got)
		}
	}
}
