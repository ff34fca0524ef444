package hosttools

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeTool writes an executable shell script name into dir.
func fakeTool(t *testing.T, dir, name, script string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPathOnPATH(t *testing.T) {
	bin := t.TempDir()
	t.Setenv("PATH", bin)
	want := fakeTool(t, bin, "mkfs.ext4", "exit 0")
	sbin := t.TempDir()
	fakeTool(t, sbin, "mkfs.ext4", "exit 0")
	got, err := Finder{Extra: []string{sbin}}.Path("mkfs.ext4")
	if err != nil || got != want {
		t.Fatalf("Path = %q, %v; want %q (PATH first)", got, err, want)
	}
}

func TestPathFallsBackToExtraDirs(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // Debian's user PATH: no sbin
	notExec, sbin := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(notExec, "debugfs"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := fakeTool(t, sbin, "debugfs", "exit 0")
	got, err := Finder{Extra: []string{filepath.Join(sbin, "missing"), notExec, sbin}}.Path("debugfs")
	if err != nil || got != want {
		t.Fatalf("Path = %q, %v; want %q (non-executable file skipped)", got, err, want)
	}
}

func TestPathNotFound(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := Finder{Extra: []string{t.TempDir()}}
	_, err := f.Path("mkfs.ext4")
	if err == nil || err.Error() != "mkfs.ext4 not found (install Debian package e2fsprogs)" {
		t.Errorf("known tool: %v", err)
	}
	if !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("not errors.Is(err, exec.ErrNotFound): %v", err)
	}
	var nf *NotFoundError
	if !errors.As(err, &nf) || nf.Name != "mkfs.ext4" {
		t.Errorf("not a *NotFoundError: %#v", err)
	}
	if _, err := f.Path("firecracker"); err == nil || !strings.Contains(err.Error(), "firecracker not found (download a release") {
		t.Errorf("tool without a Debian package: %v", err)
	}
	if _, err := f.Path("no-such-tool-banger"); err == nil || err.Error() != "no-such-tool-banger not found" {
		t.Errorf("unknown tool: %v", err)
	}
	if _, err := f.Path(""); err == nil {
		t.Error("empty name accepted")
	}
}

func TestPathWithSlash(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	dir := t.TempDir()
	p := fakeTool(t, dir, "qemu-system-x86_64", "exit 0")
	if got, err := (Finder{}).Path(p); err != nil || got != p {
		t.Errorf("Path(%q) = %q, %v", p, got, err)
	}
	// A configured path is used as given: no search, no package advice
	// (the package would not put it there).
	missing := filepath.Join(dir, "gone", "qemu-system-x86_64")
	if _, err := (Finder{Extra: []string{dir}}).Path(missing); err == nil || err.Error() != missing+" not found" {
		t.Errorf("missing path: %v", err)
	}
}

func TestRun(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	sbin := t.TempDir()
	f := Finder{Extra: []string{sbin}}
	ctx := context.Background()
	fakeTool(t, sbin, "ok", `echo "made $1"`)
	fakeTool(t, sbin, "loud", "echo 'first line' >&2; echo '  bad superblock  ' >&2; exit 3")
	fakeTool(t, sbin, "silent", "exit 1")

	out, err := f.Run(ctx, "ok", "disk")
	if err != nil || string(out) != "made disk\n" {
		t.Errorf("Run ok = %q, %v", out, err)
	}
	_, err = f.Run(ctx, "loud")
	if err == nil || err.Error() != "loud: exit status 3: first line\n  bad superblock" {
		t.Errorf("failing tool with output: %q", err)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("exit error not wrapped: %#v", err)
	}
	// No output: no dangling colon.
	if _, err = f.Run(ctx, "silent"); err == nil || err.Error() != "silent: exit status 1" {
		t.Errorf("failing tool without output: %q", err)
	}
	if _, err = f.Run(ctx, "mkfs.ext4"); err == nil || err.Error() != "mkfs.ext4 not found (install Debian package e2fsprogs)" {
		t.Errorf("missing tool: %v", err)
	}
}

func TestRunCancelled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	sbin := t.TempDir()
	fakeTool(t, sbin, "slow", "exec sleep 30")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (Finder{Extra: []string{sbin}}).Run(ctx, "slow"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled run: %v", err)
	}
}

func TestOutputError(t *testing.T) {
	base := errors.New("exit status 1")
	if OutputError("x", nil, []byte("output")) != nil {
		t.Error("nil error should stay nil")
	}
	for _, out := range [][]byte{nil, []byte(""), []byte(" \n\t\n")} {
		if got := OutputError("mkfs.ext4", base, out).Error(); got != "mkfs.ext4: exit status 1" {
			t.Errorf("blank output %q: %q", out, got)
		}
	}
	long := strings.Repeat("a", 5000) + "\nthe end"
	got := OutputError("tool", base, []byte(long)).Error()
	if !strings.HasSuffix(got, "\nthe end") || len(got) > maxTail+len("tool: exit status 1: ...") {
		t.Errorf("long output not cut to its tail: %d bytes, ends %q", len(got), got[len(got)-20:])
	}
	if !errors.Is(OutputError("tool", base, []byte("x")), base) {
		t.Error("error not wrapped")
	}
	if got := Tail([]byte("bad \xff byte")); got != "bad ? byte" {
		t.Errorf("invalid UTF-8 kept: %q", got)
	}
}

func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, tool := range Tools() {
		if tool.Name == "" || strings.Contains(tool.Name, "/") || seen[tool.Name] {
			t.Errorf("bad or duplicate name: %+v", tool)
		}
		seen[tool.Name] = true
		if tool.Install() == "" || tool.Purpose == "" {
			t.Errorf("%s: no package, hint or purpose", tool.Name)
		}
		if got, ok := Lookup(tool.Name); !ok || got != tool {
			t.Errorf("Lookup(%q) = %+v, %v", tool.Name, got, ok)
		}
	}
	for _, n := range []string{MkfsExt4, Debugfs, QEMUImg, QEMU, Debootstrap, Git, SSH, Systemctl, Sudo, Firecracker, Jailer} {
		if !seen[n] {
			t.Errorf("%s is not in the table", n)
		}
	}
	// Tools returns a copy.
	Tools()[0].Package = "changed"
	if t0, _ := Lookup(Tools()[0].Name); t0.Package == "changed" {
		t.Error("Tools exposes the table")
	}
}
