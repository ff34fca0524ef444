package guest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
)

// fileClient is a host agent client talking to a real agent server over
// an in-memory pipe: file operations run on the test host's files.
func fileClient(t *testing.T) *agent.Client {
	t.Helper()
	hostEnd, guestEnd := net.Pipe()
	srv := &Server{Log: log.New(io.Discard, "", 0)}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.ServeConn(ctx, guestEnd)
	c, err := agent.NewClient(hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); cancel() })
	return c
}

func code(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

func TestFileOps(t *testing.T) {
	c := fileClient(t)
	ctx := context.Background()
	dir := t.TempDir()
	f := filepath.Join(dir, "sub", "f.txt")

	// Write without parents: the parent is missing.
	if _, err := c.FileWrite(ctx, f, "", false, strings.NewReader("x")); code(err) != api.CodeNotFound {
		t.Fatalf("write below a missing dir: %v (code %q)", err, code(err))
	}
	content := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB: several frames
	fi, err := c.FileWrite(ctx, f, "0640", true, bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Type != api.FileTypeFile || fi.Size != int64(len(content)) || fi.Mode != "0640" || fi.Name != "f.txt" {
		t.Fatalf("wrote %+v", fi)
	}
	// Atomic: no temporary file is left next to it.
	ents, _ := os.ReadDir(filepath.Dir(f))
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
	// Overwriting keeps the mode when none is given.
	if fi, err = c.FileWrite(ctx, f, "", false, strings.NewReader("new")); err != nil || fi.Mode != "0640" || fi.Size != 3 {
		t.Fatalf("overwrite: %+v %v", fi, err)
	}
	st, rc, err := c.FileRead(ctx, f, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(b) != "new" || st.Mode != "0640" {
		t.Fatalf("read %q %+v %v", b, st, err)
	}
	// Reading a directory, a missing file; writing over a directory.
	if _, _, err := c.FileRead(ctx, dir, 1<<20); code(err) != api.CodeBadRequest {
		t.Errorf("read a directory: %v", err)
	}
	if _, _, err := c.FileRead(ctx, dir+"/missing", 1<<20); code(err) != api.CodeNotFound {
		t.Errorf("read a missing file: %v", err)
	}
	if _, err := c.FileWrite(ctx, dir, "", false, strings.NewReader("x")); code(err) != api.CodeBadRequest {
		t.Errorf("write over a directory: %v", err)
	}

	if err := os.Symlink("/etc", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	sl, err := c.FileStat(ctx, filepath.Join(dir, "link"))
	if err != nil || sl.Type != api.FileTypeSymlink || sl.Target != "/etc" {
		t.Fatalf("stat symlink: %+v %v", sl, err)
	}

	md, err := c.FileMkdir(ctx, filepath.Join(dir, "a", "b"), "0700", true)
	if err != nil || md.Type != api.FileTypeDir || md.Mode != "0700" {
		t.Fatalf("mkdir: %+v %v", md, err)
	}
	if _, err := c.FileMkdir(ctx, filepath.Join(dir, "a", "b"), "", false); code(err) != api.CodeConflict {
		t.Errorf("mkdir existing: %v", err)
	}
	if _, err := c.FileMkdir(ctx, filepath.Join(dir, "x", "y"), "", false); code(err) != api.CodeNotFound {
		t.Errorf("mkdir without parents: %v", err)
	}

	l, err := c.FileList(ctx, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range l.Entries {
		names = append(names, e.Name+":"+e.Type)
	}
	if got := strings.Join(names, " "); got != "a:dir link:symlink sub:dir" || l.Truncated {
		t.Fatalf("list: %s (truncated %v)", got, l.Truncated)
	}
	if l, err = c.FileList(ctx, dir, 2); err != nil || len(l.Entries) != 2 || !l.Truncated {
		t.Fatalf("capped list: %+v %v", l, err)
	}
	if _, err := c.FileList(ctx, f, 0); code(err) != api.CodeBadRequest {
		t.Errorf("list a file: %v", err)
	}

	if err := c.FileRemove(ctx, filepath.Join(dir, "a"), false); code(err) != api.CodeConflict {
		t.Errorf("remove a non-empty dir: %v", err)
	}
	if err := c.FileRemove(ctx, filepath.Join(dir, "a"), true); err != nil {
		t.Fatal(err)
	}
	// Removing the symlink removes the link, not /etc.
	if err := c.FileRemove(ctx, filepath.Join(dir, "link"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Fatal(err)
	}
	if err := c.FileRemove(ctx, filepath.Join(dir, "a"), false); code(err) != api.CodeNotFound {
		t.Errorf("remove a missing path: %v", err)
	}
}

func TestFileArchiveRoundTrip(t *testing.T) {
	c := fileClient(t)
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(src, "d"), 0o750)
	os.WriteFile(filepath.Join(src, "d", "x.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.WriteFile(filepath.Join(src, "big"), bytes.Repeat([]byte("z"), 3<<20), 0o600)
	os.Symlink("/etc/passwd", filepath.Join(src, "l"))

	_, rc, err := c.FileArchive(ctx, src, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	names := map[string]*tar.Header{}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = h
	}
	for _, n := range []string{"tree/", "tree/d/", "tree/d/x.sh", "tree/big", "tree/l"} {
		if names[n] == nil {
			t.Fatalf("archive lacks %s: %v", n, names)
		}
	}
	if h := names["tree/l"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "/etc/passwd" {
		t.Errorf("symlink entry %+v", h)
	}
	// Over the cap.
	_, rc, _ = c.FileArchive(ctx, src, 1<<20)
	if _, err := io.Copy(io.Discard, rc); err == nil {
		t.Error("an archive over the cap was read whole")
	}
	rc.Close()

	// And back in, under another directory.
	dst := t.TempDir()
	res, err := c.FileExtract(ctx, dst, bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 5 || res.Bytes != 3<<20+10 {
		t.Errorf("result %+v", res)
	}
	fi, err := os.Stat(filepath.Join(dst, "tree", "d", "x.sh"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("x.sh: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "tree", "l")); l != "/etc/passwd" {
		t.Errorf("symlink %q", l)
	}
	// Extraction into a file, a missing directory.
	if _, err := c.FileExtract(ctx, filepath.Join(dst, "tree", "big"), bytes.NewReader(buf.Bytes())); code(err) != api.CodeBadRequest {
		t.Errorf("extract into a file: %v", err)
	}
	if _, err := c.FileExtract(ctx, filepath.Join(dst, "nope"), bytes.NewReader(buf.Bytes())); code(err) != api.CodeNotFound {
		t.Errorf("extract into a missing dir: %v", err)
	}
}

// TestFileExtractConfined: a hostile archive (a symlink then a write
// through it, "..", an absolute name) writes nothing outside the target,
// including through a symlink that was already there.
func TestFileExtractConfined(t *testing.T) {
	c := fileClient(t)
	ctx := context.Background()
	base := t.TempDir()
	dst, victim := filepath.Join(base, "dst"), filepath.Join(base, "victim")
	os.Mkdir(dst, 0o755)
	os.Mkdir(victim, 0o755)
	os.Symlink(victim, filepath.Join(dst, "old"))
	for _, ents := range [][]tarEnt{
		{{name: "l", link: victim}, {name: "l/x", body: "pwned"}},
		{{name: "../victim/x", body: "pwned"}},
		{{name: "/" + victim + "/x", body: "pwned"}},
		{{name: "old/x", body: "pwned"}},
	} {
		c.FileExtract(ctx, dst, bytes.NewReader(mkTar(t, ents)))
		if e, _ := os.ReadDir(victim); len(e) > 0 {
			t.Fatalf("archive %+v wrote outside the target: %v", ents, e)
		}
	}
}

type tarEnt struct{ name, body, link string }

func mkTar(t *testing.T, ents []tarEnt) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(e.body))}
		if e.link != "" {
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.link, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return buf.Bytes()
}

func TestFileWatch(t *testing.T) {
	c := fileClient(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w, err := c.FileWatch(ctx, dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	want := []api.FileEvent{{Path: sub, Op: api.FileOpCreate}}
	next := func() api.FileEvent {
		t.Helper()
		ev, err := w.Next()
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	if ev := next(); ev.Path != want[0].Path || ev.Op != want[0].Op {
		t.Fatalf("first event %+v", ev)
	}
	// The new directory is watched too (recursive). Its watch is armed
	// after the create event: retry until an event for it arrives.
	f := filepath.Join(sub, "f")
	for i := 0; ; i++ {
		os.WriteFile(f, []byte("x"), 0o644)
		ev := next()
		if ev.Path == f && (ev.Op == api.FileOpCreate || ev.Op == api.FileOpWrite) {
			break
		}
		if i > 50 {
			t.Fatal("no event from the new subdirectory")
		}
	}
	os.Remove(f)
	for {
		if ev := next(); ev.Path == f && ev.Op == api.FileOpRemove {
			break
		}
	}
	// A missing path is refused before anything is armed.
	if _, err := c.FileWatch(ctx, filepath.Join(dir, "nope"), false); code(err) != api.CodeNotFound {
		t.Errorf("watch a missing path: %v", err)
	}
}
