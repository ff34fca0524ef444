package patchcheck

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCheck feeds arbitrary patches to the checker: it must not panic,
// must answer either nil or an *Error (or a read error, impossible from
// memory), and must give the same verdict twice.
func FuzzCheck(f *testing.F) {
	f.Add([]byte("diff --git a/x b/x\nindex 1111111..2222222 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"))
	f.Add([]byte("diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+../../etc\n\\ No newline at end of file\n"))
	f.Add([]byte("diff --git \"a/\\056\\056/x\" \"b/x\"\nsimilarity index 90%\nrename from x\nrename to ../y\n"))
	f.Add([]byte("diff --git a/x b/x\nindex 1111111..2222222 100644\nGIT binary patch\nliteral 4\nLcmZ?wOiuy;1E2u_\n\nliteral 0\nHcmV?d00001\n\n"))
	f.Fuzz(func(t *testing.T, patch []byte) {
		_, err1 := Check(bytes.NewReader(patch))
		var pe *Error
		if err1 != nil && !errors.As(err1, &pe) {
			t.Fatalf("error of type %T: %v", err1, err1)
		}
		_, err2 := Check(bytes.NewReader(patch))
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("verdicts differ: %v / %v", err1, err2)
		}
		if err1 == nil && bytes.Contains(patch, []byte("\n+++ b/../")) && bytes.HasPrefix(patch, []byte("diff --git a/x b/x\n--- a/x\n+++ b/../")) {
			t.Fatal("accepted a +++ path outside the repository")
		}
	})
}

// FuzzSymlinkChain creates, in a real directory, two symlinks whose
// targets escapes accepts (none beyond the other, as git apply
// refuses), and checks that the kernel's way of resolving each one stays
// inside the repository, however one link leads through the other.
func FuzzSymlinkChain(f *testing.F) {
	f.Add("a/x", "..", "a/y", "x/..")
	f.Add("a/x", "..", "a/y", "x/a/f")
	f.Add("a/b/x", "../..", "c", "a/b/x/a/b/x")
	f.Add("l", "m", "m", "l")
	f.Fuzz(func(t *testing.T, l1, t1, l2, t2 string) {
		links := [][2]string{{l1, t1}, {l2, t2}}
		for _, l := range links {
			if len(l[0]) > 200 || len(l[1]) > 200 || unsafePath(l[0]) != "" || escapes(l[0], l[1]) != "" {
				t.Skip()
			}
		}
		if strings.HasPrefix(l2+"/", l1+"/") || strings.HasPrefix(l1+"/", l2+"/") {
			t.Skip() // the same path, or one beyond the other
		}
		root, err := filepath.EvalSymlinks(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		repo := filepath.Join(root, "outer", "repo")
		for _, l := range links {
			p := filepath.Join(repo, l[0])
			if os.MkdirAll(filepath.Dir(p), 0o755) != nil || os.Symlink(l[1], p) != nil {
				t.Skip() // a name the file system refuses
			}
		}
		for _, l := range links {
			got, ok := resolve(repo, l[0], 0)
			if ok && got != repo && !strings.HasPrefix(got, repo+"/") {
				t.Fatalf("%q -> %q and %q -> %q accepted, but %q resolves to %s, outside %s", l1, t1, l2, t2, l[0], got, repo)
			}
		}
	})
}

// resolve follows rel from the real directory dir as the kernel does,
// reading symlinks on disk. A missing component is taken as a directory
// that may be created later (the rest is joined lexically). ok is false
// on a symlink loop.
func resolve(dir, rel string, depth int) (string, bool) {
	if depth > 40 {
		return "", false
	}
	cur := dir
	if strings.HasPrefix(rel, "/") {
		cur = "/"
	}
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(next)
		switch {
		case err != nil:
			return filepath.Join(append([]string{next}, parts[i+1:]...)...), true
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(next)
			if err != nil {
				return "", false
			}
			r, ok := resolve(cur, target, depth+1)
			if !ok {
				return "", false
			}
			cur = r
		default:
			cur = next
		}
	}
	return cur, true
}
