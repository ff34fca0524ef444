//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/client"
)

// TestFiles: `vm cp` both ways (files, directories, modes, symlinks, tar
// streams on stdin and stdout), every files API route through the typed
// client, the errors for a missing path and a stopped VM, and a guest
// that plants a symlink to /etc in the copied directory. One VM.
func TestFiles(t *testing.T) {
	ctx := ctxFor(t, 20*time.Minute)
	vm := newVM(t, ctx, "files")
	c := client.New(filepath.Join(e.root, "run", "banger", "bangerd.sock"))
	host := t.TempDir()
	exec := func(script string) string {
		t.Helper()
		return must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", script)).stdout
	}

	// A host tree: modes, a 3 MiB file (several frames), symlinks.
	src := filepath.Join(host, "src")
	os.MkdirAll(filepath.Join(src, "sub"), 0o750)
	os.Chmod(src, 0o750)
	big := make([]byte, 3<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "data.bin"), big, 0o644)
	os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "secret"), []byte("s"), 0o600)
	os.Symlink("run.sh", filepath.Join(src, "link"))
	os.Symlink("/etc/hostname", filepath.Join(src, "abs"))
	sum := sha256.Sum256(big)
	bigSum := hex.EncodeToString(sum[:])

	t.Run("cp in", func(t *testing.T) {
		// DST exists: the directory goes inside it.
		must(t, e.cli(ctx, "", "vm", "cp", src, vm+":/root/"))
		got := exec(`cd /root/src && stat -c '%n %a %F' . run.sh sub sub/secret link abs && readlink link abs && sha256sum data.bin`)
		for _, want := range []string{". 750 directory", "run.sh 755 regular file", "sub 750 directory", "sub/secret 600 regular file",
			"link 777 symbolic link", "abs 777 symbolic link", "\nrun.sh\n/etc/hostname\n", bigSum} {
			if !strings.Contains(got, want) {
				t.Errorf("guest lacks %q:\n%s", want, got)
			}
		}
		// A file under a new name.
		must(t, e.cli(ctx, "", "vm", "cp", filepath.Join(src, "run.sh"), vm+":/root/renamed.sh"))
		if got := exec(`stat -c %a /root/renamed.sh && /root/renamed.sh`); got != "755\nhi\n" {
			t.Errorf("renamed.sh: %q", got)
		}
		// A DST that links to a directory receives the copy inside it.
		exec(`ln -sfn /root/src/sub /root/sublink`)
		must(t, e.cli(ctx, "", "vm", "cp", filepath.Join(src, "run.sh"), vm+":/root/sublink"))
		if got := exec(`readlink /root/sublink && stat -c %a /root/src/sub/run.sh`); got != "/root/src/sub\n755\n" {
			t.Errorf("copy through a symlinked DST: %q", got)
		}
		exec(`rm /root/src/sub/run.sh /root/sublink`)
	})

	t.Run("cp out", func(t *testing.T) {
		out := filepath.Join(host, "out")
		must(t, e.cli(ctx, "", "vm", "cp", vm+":/root/src", out))
		for name, mode := range map[string]os.FileMode{".": os.ModeDir | 0o750, "run.sh": 0o755, "sub/secret": 0o600, "data.bin": 0o644} {
			fi, err := os.Lstat(filepath.Join(out, name))
			if err != nil || fi.Mode() != mode {
				t.Errorf("%s: %v %v (want %v)", name, fi.Mode(), err, mode)
			}
		}
		if l, err := os.Readlink(filepath.Join(out, "abs")); err != nil || l != "/etc/hostname" {
			t.Errorf("abs: %q %v", l, err)
		}
		b, _ := os.ReadFile(filepath.Join(out, "data.bin"))
		if !bytes.Equal(b, big) {
			t.Error("data.bin differs")
		}
		// A file into an existing directory.
		must(t, e.cli(ctx, "", "vm", "cp", vm+":/root/renamed.sh", out))
		if fi, err := os.Stat(filepath.Join(out, "renamed.sh")); err != nil || fi.Mode() != 0o755 {
			t.Errorf("renamed.sh out: %v", err)
		}
	})

	t.Run("tar streams", func(t *testing.T) {
		r := must(t, e.cli(ctx, "", "vm", "cp", vm+":/root/src/sub", "-"))
		names := tarNames(t, r.stdout)
		if strings.Join(names, " ") != "sub/ sub/secret" {
			t.Errorf("tar out: %v", names)
		}
		exec(`mkdir -p /root/tin`)
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o711})
		tw.WriteHeader(&tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o640, Size: 5})
		tw.Write([]byte("hello"))
		tw.WriteHeader(&tar.Header{Name: "d/l", Typeflag: tar.TypeSymlink, Linkname: "f"})
		tw.Close()
		must(t, e.cli(ctx, buf.String(), "vm", "cp", "-", vm+":/root/tin"))
		if got := exec(`cd /root/tin/d && stat -c '%a' . f && cat f && echo && readlink l`); got != "711\n640\nhello\nf\n" {
			t.Errorf("tar in: %q", got)
		}
	})

	t.Run("api", func(t *testing.T) {
		fi, err := c.FileWrite(ctx, vm, "/root/api/deep/x.txt", strings.NewReader("one"), "0600", true)
		if err != nil || fi.Size != 3 || fi.Mode != "0600" || fi.Type != api.FileTypeFile {
			t.Fatalf("write: %+v %v", fi, err)
		}
		ino1 := exec(`stat -c %i /root/api/deep/x.txt`)
		if _, err := c.FileWrite(ctx, vm, "/root/api/deep/x.txt", strings.NewReader("two!"), "", false); err != nil {
			t.Fatal(err)
		}
		// Atomic: a new inode renamed over the old one, no temporary
		// file left, the mode kept.
		if got := exec(`stat -c '%i %a' /root/api/deep/x.txt; ls -A /root/api/deep`); got == ino1 || !strings.HasSuffix(got, " 600\nx.txt\n") {
			t.Errorf("overwrite: %q (inode before %q)", got, ino1)
		}
		fr, err := c.FileRead(ctx, vm, "/root/api/deep/x.txt")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(fr)
		fr.Close()
		if err != nil || string(b) != "two!" || fr.Mode != "0600" {
			t.Errorf("read: %q %s %v", b, fr.Mode, err)
		}
		// /proc files have no size: streamed to their end.
		if fr, err = c.FileRead(ctx, vm, "/proc/version"); err != nil {
			t.Fatal(err)
		}
		b, err = io.ReadAll(fr)
		fr.Close()
		if err != nil || !strings.HasPrefix(string(b), "Linux version") {
			t.Errorf("/proc/version: %q %v", b, err)
		}
		if st, err := c.FileStat(ctx, vm, "/root/src/link"); err != nil || st.Type != api.FileTypeSymlink || st.Target != "run.sh" {
			t.Errorf("stat link: %+v %v", st, err)
		}
		if md, err := c.FileMkdir(ctx, vm, api.MkdirParams{Path: "/root/api/m", Mode: "0700"}); err != nil || md.Mode != "0700" || md.Type != api.FileTypeDir {
			t.Errorf("mkdir: %+v %v", md, err)
		}
		l, err := c.FileList(ctx, vm, "/root/api")
		if err != nil || len(l.Entries) != 2 || l.Entries[0].Name != "deep" || l.Entries[1].Name != "m" || l.Truncated {
			t.Errorf("list: %+v %v", l, err)
		}
		if err := c.FileRemove(ctx, vm, "/root/api/deep", false); code(err) != api.CodeConflict {
			t.Errorf("remove non-empty: %v", err)
		}
		if err := c.FileRemove(ctx, vm, "/root/api/deep", true); err != nil {
			t.Error(err)
		}
		if _, err := c.FileStat(ctx, vm, "/root/api/deep"); code(err) != api.CodeNotFound {
			t.Errorf("stat removed: %v", err)
		}
		if _, err := c.FileStat(ctx, vm, "root/relative"); code(err) != api.CodeBadRequest {
			t.Errorf("relative path: %v", err)
		}
		if _, err := c.FileRead(ctx, vm, "/root/api"); code(err) != api.CodeBadRequest {
			t.Errorf("read a directory: %v", err)
		}
		rc, err := c.ArchiveRead(ctx, vm, "/root/src/sub")
		if err != nil {
			t.Fatal(err)
		}
		tb, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res, err := c.ArchiveWrite(ctx, vm, "/root/api/m", bytes.NewReader(tb)); err != nil || res.Files != 2 || res.Bytes != 1 {
			t.Errorf("archive in: %+v %v", res, err)
		}
	})

	t.Run("watch", func(t *testing.T) {
		wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		defer cancel()
		var seen []api.FileEvent
		created, done := false, errors.New("done")
		err := c.FileWatch(wctx, vm, "/root/api", true, func(ev api.FileEvent) error {
			seen = append(seen, ev)
			switch {
			case ev.Op == api.FileOpReady:
				go c.FileWrite(wctx, vm, "/root/api/m/new.txt", strings.NewReader("n"), "", false)
			case ev.Op == api.FileOpCreate && ev.Path == "/root/api/m/new.txt":
				if !created {
					created = true
					go e.cli(wctx, "", "vm", "exec", vm, "--", "rm", "-f", "/root/api/m/new.txt")
				}
			case ev.Op == api.FileOpRemove && ev.Path == "/root/api/m/new.txt":
				return done
			}
			return nil
		})
		if !errors.Is(err, done) {
			t.Fatalf("watch ended with %v; events %+v", err, seen)
		}
		if seen[0].Op != api.FileOpReady {
			t.Errorf("first event %+v", seen[0])
		}
	})

	t.Run("missing paths", func(t *testing.T) {
		r := e.cli(ctx, "", "vm", "cp", vm+":/root/nope", filepath.Join(host, "x"))
		if r.code == 0 || !strings.Contains(r.stderr, "no such file") {
			t.Errorf("missing guest path: %s", r)
		}
		r = e.cli(ctx, "", "vm", "cp", filepath.Join(host, "nope"), vm+":/root/")
		if r.code == 0 || !strings.Contains(r.stderr, "no such file") {
			t.Errorf("missing host path: %s", r)
		}
		r = e.cli(ctx, "", "vm", "cp", filepath.Join(src, "run.sh"), vm+":/root/no/such/dir/x")
		if r.code == 0 || !strings.Contains(r.stderr, "no such file") {
			t.Errorf("missing guest parent: %s", r)
		}
	})

	t.Run("hostile symlink", func(t *testing.T) {
		// The guest plants links to the host's /etc in the copied tree.
		exec(`mkdir -p /root/evil && ln -sfn /etc /root/evil/etc && ln -sfn /etc/passwd /root/evil/passwd && echo pwned > /root/evil/x`)
		out := filepath.Join(host, "evil-out")
		os.Mkdir(out, 0o755)
		before, _ := os.ReadFile("/etc/passwd")
		must(t, e.cli(ctx, "", "vm", "cp", vm+":/root/evil", out))
		// Copying again over what the first copy made must not follow
		// the links it left either.
		must(t, e.cli(ctx, "", "vm", "cp", vm+":/root/evil", out))
		for _, n := range []string{"etc", "passwd"} {
			fi, err := os.Lstat(filepath.Join(out, "evil", n))
			if err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("%s is not a symlink on the host: %v %v", n, fi, err)
			}
		}
		if _, err := os.Stat("/etc/x"); err == nil {
			t.Fatal("the copy wrote /etc/x on the host")
		}
		if after, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(before, after) {
			t.Fatal("the copy changed the host's /etc/passwd")
		}
	})

	t.Run("stopped vm", func(t *testing.T) {
		must(t, e.cli(ctx, "", "vm", "stop", vm))
		r := e.cli(ctx, "", "vm", "cp", vm+":/root/renamed.sh", filepath.Join(host, "y"))
		if r.code == 0 || !strings.Contains(r.stderr, "not running") || !strings.Contains(r.stderr, "vm start") {
			t.Errorf("stopped vm: %s", r)
		}
		if _, err := c.FileStat(ctx, vm, "/root"); code(err) != api.CodeNotRunning {
			t.Errorf("stat on a stopped vm: %v", err)
		}
		if _, err := os.Stat(filepath.Join(host, "y")); err == nil {
			t.Error("a refused copy left a file")
		}
	})
}

func code(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

func tarNames(t *testing.T, s string) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(strings.NewReader(s))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("tar: %v", err)
		}
		names = append(names, h.Name)
	}
}
