package untar

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzExtract feeds arbitrary bytes as a tar stream: Extract may refuse
// them, but never panics and never writes outside its directory.
func FuzzExtract(f *testing.F) {
	f.Add(mkTar(f, ent{name: "a/b", body: "x"}, ent{name: "l", typ: tar.TypeSymlink, link: "../victim"}, ent{name: "l/x", body: "y"}).Bytes())
	f.Add(mkTar(f, ent{name: "h", typ: tar.TypeLink, link: "../victim/x"}).Bytes())
	f.Add(mkTar(f, ent{name: "d/", typ: tar.TypeDir, mode: 0o555}, ent{name: "d/f", body: "z"}, ent{name: "d", body: "w"}).Bytes())
	f.Add(mkTar(f, ent{name: "l", typ: tar.TypeSymlink, link: "."}, ent{name: "m", typ: tar.TypeLink, link: "l"}, ent{name: "m/f", body: "q"}).Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		dir, victim := filepath.Join(base, "dst"), filepath.Join(base, "victim")
		if err := os.Mkdir(victim, 0o755); err != nil {
			t.Fatal(err)
		}
		lim := Limits{MaxBytes: 1 << 20, MaxEntries: 1000}
		for _, o := range []Options{{Limits: lim}, {Limits: lim, ConfineSymlinks: true, ReplaceDirs: true, Sparse: true}} {
			Extract(context.Background(), bytes.NewReader(data), dir, o)
			filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					os.Chmod(p, 0o755) // let the next run and the cleanup in
				}
				return nil
			})
		}
		ents, err := os.ReadDir(victim)
		if err != nil || len(ents) > 0 {
			t.Fatalf("wrote outside the target: %v %v", ents, err)
		}
		ents, _ = os.ReadDir(base)
		for _, e := range ents {
			if n := e.Name(); n != "dst" && n != "victim" && !strings.HasPrefix(n, ".") {
				t.Fatalf("wrote %s next to the target", n)
			}
		}
	})
}
