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
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"banger/internal/model"
)

// FuzzUnpackLayer feeds arbitrary bytes to Unpack as an uncompressed
// layer. Whatever it holds: nothing is created outside the target
// directory, the caps hold, and everything recorded in the tree is
// something the ext4 step can represent (no control characters, only
// the allowed xattr namespaces).
func FuzzUnpackLayer(f *testing.F) {
	f.Add(tarBytes(f, []ent{dir("etc/", 0o755), reg("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)}))
	f.Add(tarBytes(f, []ent{{name: "f", typ: tar.TypeReg, xattrs: map[string]string{"user.x\n!touch /tmp/pwned #": "v"}}}))
	f.Add(tarBytes(f, []ent{{name: "a", typ: tar.TypeSymlink, link: "/"}, reg("a/pwned", "x", 0o644)}))
	f.Add(tarBytes(f, []ent{reg("../pwned", "x", 0o644)}))
	f.Add(tarBytes(f, []ent{{name: "h", typ: tar.TypeLink, link: "../../etc/shadow"}}))
	f.Add(tarBytes(f, []ent{{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660, major: 8}}))
	f.Add(gnuSparseTar("bomb", 1<<32))
	f.Fuzz(func(t *testing.T, layer []byte) {
		base := t.TempDir()
		dir := filepath.Join(base, "root")
		sentinel := filepath.Join(base, "outside")
		if err := os.Mkdir(sentinel, 0o700); err != nil {
			t.Fatal(err)
		}
		img := oneLayer{l: static.NewLayer(layer, types.OCIUncompressedLayer)}
		const maxBytes = 8 << 20
		tr, err := Unpack(context.Background(), img, dir, UnpackOptions{MaxBytes: maxBytes, MaxEntries: 500})
		if ents, _ := os.ReadDir(sentinel); len(ents) != 0 {
			t.Fatalf("a layer wrote outside the target: %v", ents)
		}
		if ents, _ := os.ReadDir(base); len(ents) != 2 {
			t.Fatalf("a layer wrote beside the target: %v", ents)
		}
		if n := diskUsage(t, dir); n > 2*maxBytes {
			t.Fatalf("%d bytes on disk, cap %d", n, maxBytes)
		}
		if err != nil {
			if errors.Is(err, context.Canceled) {
				t.Fatal(err)
			}
			return
		}
		for _, p := range tr.Paths() {
			e, _ := tr.Get(p)
			if err := noControl(p); err != nil {
				t.Fatalf("tree path: %v", err)
			}
			if err := noControl(e.Linkname); err != nil {
				t.Fatalf("link target: %v", err)
			}
			for k := range e.Xattrs {
				if err := checkXattrName(k); err != nil {
					t.Fatalf("xattr: %v", err)
				}
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, p), &st); err == nil {
				if typ := st.Mode & unix.S_IFMT; typ == unix.S_IFCHR || typ == unix.S_IFBLK {
					t.Fatalf("device node on the host: %s", p)
				}
			}
		}
	})
}

// oneLayer is the least of an image Unpack needs: its layers.
type oneLayer struct {
	v1.Image // nil: Unpack calls nothing else
	l        v1.Layer
}

func (o oneLayer) Layers() ([]v1.Layer, error) { return []v1.Layer{o.l}, nil }

// FuzzScript: whatever names, keys and paths reach the debugfs script
// generator, what it emits parses (as debugfs' ss_parse does) into
// exactly the command and arguments asked for, one line per command; a
// line never starts with '!' and no command but the five exists, and
// no line (newline included) reaches maxLine, far below the buffer
// debugfs reads lines into.
func FuzzScript(f *testing.F) {
	f.Add("/etc/passwd", "dev", "user.x")
	f.Add("/a\n!touch /tmp/pwned #", "x\r!id", "user.x\n!id")
	f.Add(`/q"uote here`, `-n"ame`, `security.cap "x"`)
	f.Add("/", ".", "trusted.")
	f.Add("/a\tb", "a/b", "system.posix_acl_access")
	// The review's layer: a path of quotes that doubles to ~8000 bytes
	// and a key whose blanks run up to '!' at debugfs' fgets cut.
	f.Add("/"+strings.Repeat(strings.Repeat(`"`, 250)+"/", 16)+"n", strings.Repeat(`"`, 255), "user."+strings.Repeat(" ", 215)+"!touch /tmp/banger-review-pwned #")
	f.Fuzz(func(t *testing.T, p, name, key string) {
		var s script
		var want [][]string
		try := func(err error, argv ...string) {
			if err == nil {
				want = append(want, argv)
			}
		}
		try(s.ls(p), "ls", "-p", p)
		try(s.cd(pathTarget(p)), "cd", p)
		try(s.cd(inode(2)), "cd", "<2>")
		try(s.sif(pathTarget(p), "mode", 0o100644), "sif", p, "mode", "0100644")
		try(s.sif(inode(12), "uid", 1000), "sif", "<12>", "uid", "1000")
		try(s.eaSet(pathTarget(p), "/work/xattr-1", key), "ea_set", "-f", "/work/xattr-1", p, key)
		try(s.mknod(name, 'c', 4, 5), "mknod", name, "c", "4", "5")
		try(s.mknod(name, 'p', 0, 0), "mknod", name, "p")
		if s.sif(inode(1), "size", 0) == nil {
			t.Fatal("sif accepted a field outside the allow list")
		}
		if s.mknod(name, 'x', 0, 0) == nil {
			t.Fatal("mknod accepted kind x")
		}
		lines := strings.Split(strings.TrimSuffix(string(s.Bytes()), "\n"), "\n")
		if len(want) == 0 {
			if len(s.Bytes()) != 0 {
				t.Fatalf("refused everything but wrote %q", s.Bytes())
			}
			return
		}
		if len(lines) != len(want) || s.Len() != len(want) {
			t.Fatalf("%d lines for %d commands: %q", len(lines), len(want), s.Bytes())
		}
		for i, l := range lines {
			if len(l)+1 >= maxLine {
				t.Fatalf("line of %d bytes (with its newline), bound %d", len(l)+1, maxLine)
			}
			if strings.ContainsAny(l, "\r\x00") || strings.HasPrefix(strings.TrimLeft(l, " \t"), "!") {
				t.Fatalf("line %q", l)
			}
			got, err := ssParse(l)
			if err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			if strings.Join(got, "\x00") != strings.Join(want[i], "\x00") {
				t.Fatalf("line %q parses to %q, want %q", l, got, want[i])
			}
		}
	})
}

// ssParse splits a line as e2fsprogs' lib/ss/parse.c does: spaces and
// tabs separate tokens; a double quote starts or ends a quoted part,
// inside which "" is one literal quote.
func ssParse(line string) ([]string, error) {
	var out []string
	var tok []byte
	in, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '"' && i+1 < len(line) && line[i+1] == '"':
			tok = append(tok, '"')
			i++
		case quoted && c == '"':
			quoted = false
		case quoted:
			tok = append(tok, c)
		case c == ' ' || c == '\t':
			if in {
				out = append(out, string(tok))
				tok, in = tok[:0], false
			}
		case c == '"':
			quoted, in = true, true
		default:
			tok, in = append(tok, c), true
		}
	}
	if quoted {
		return nil, errors.New("unbalanced quotes")
	}
	if in {
		out = append(out, string(tok))
	}
	return out, nil
}

// FuzzDefaultName: any reference either gives a valid banger name or an
// error.
func FuzzDefaultName(f *testing.F) {
	for _, s := range []string{"alpine:3.20", "ghcr.io/org/tool@sha256:" + strings.Repeat("a", 64), "localhost:5000/a/b", "UPPER/x", "a b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		n, err := DefaultName(ref)
		if err == nil {
			if verr := model.ValidateName(n); verr != nil {
				t.Fatalf("DefaultName(%q) = %q: %v", ref, n, verr)
			}
		}
	})
}
