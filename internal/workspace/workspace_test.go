package workspace

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/guest"
	"banger/internal/patchcheck"
)

func sh(t *testing.T, dir, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// testRepo makes a repository with tracked, untracked, ignored, binary and
// executable files, a symlink and a submodule.
func testRepo(t *testing.T) string {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	repo := filepath.Join(dir, "repo")
	os.MkdirAll(sub, 0o755)
	sh(t, sub, "git init -q -b main && echo subfile > s.txt && git add . && git commit -qm sub")
	os.MkdirAll(repo, 0o755)
	sh(t, repo, `git init -q -b main
echo hello > a.txt
mkdir -p dir && printf '\000\001\002' > dir/bin.dat
echo '#!/bin/sh' > run.sh && chmod +x run.sh
ln -s a.txt link
echo 'ignored.log' > .gitignore
git add . && git commit -qm one
git -c protocol.file.allow=always submodule --quiet add ../sub sub
git commit -qm sub
echo untracked > new.txt
echo ignored > ignored.log
echo changed >> a.txt`)
	return repo
}

func paths(p *Plan) []string {
	var out []string
	for _, f := range p.Files {
		out = append(out, f.Path)
	}
	return out
}

func TestInspect(t *testing.T) {
	repo := testRepo(t)
	ctx := context.Background()
	p, err := Inspect(ctx, filepath.Join(repo, "dir"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(paths(p), " ")
	if got != ".gitignore .gitmodules a.txt dir/bin.dat link run.sh" {
		t.Errorf("copy mode files: %s", got)
	}
	if !p.Dirty || p.Head == "" || p.Branch != "main" || p.Root != repo {
		t.Errorf("plan: %+v", p)
	}
	p, _ = Inspect(ctx, repo, Options{IncludeUntracked: true, Mode: ModeFullCopy})
	got = strings.Join(paths(p), " ")
	if !strings.Contains(got, "new.txt") || !strings.Contains(got, "sub/s.txt") || strings.Contains(got, "ignored.log") {
		t.Errorf("untracked+full_copy files: %s", got)
	}
	if p.Untracked != 1 {
		t.Errorf("untracked count %d", p.Untracked)
	}
	if _, err := Inspect(ctx, t.TempDir(), Options{}); !errors.Is(err, ErrNotRepo) {
		t.Errorf("non-repo: %v", err)
	}
	if _, err := Inspect(ctx, repo, Options{Mode: "zip"}); err == nil {
		t.Errorf("bad mode accepted")
	}
}

// TestTarRoundTrip unpacks the stream the way the guest does (its agent's
// extraction, run here) and checks the result is a repository at the same HEAD whose
// status shows the host's uncommitted change.
func TestTarRoundTrip(t *testing.T) {
	repo := testRepo(t)
	ctx := context.Background()
	p, err := Inspect(ctx, repo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(ctx, p, &buf); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := guest.UntarWorkspace(&buf, out); err != nil {
		t.Fatal(err)
	}
	// HEAD's blobs came once, as work-tree files, and the guest laid
	// them out into a pack: the repository is whole.
	sh(t, out, "git fsck --full --strict --no-dangling")
	if head := strings.TrimSpace(sh(t, out, "git rev-parse HEAD")); head != p.Head {
		t.Errorf("guest HEAD %s, host %s", head, p.Head)
	}
	if br := strings.TrimSpace(sh(t, out, "git symbolic-ref --short HEAD")); br != "main" {
		t.Errorf("branch %q", br)
	}
	status := sh(t, out, "git status --porcelain --untracked-files=no")
	if strings.TrimSpace(status) != "M a.txt" {
		t.Errorf("guest status should show exactly the host's edit, got %q", status)
	}
	if fi, err := os.Stat(filepath.Join(out, "run.sh")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("executable bit lost: %v", fi)
	}
	// Export in the "guest": edits, a new file, a deletion, a mode change
	// and a binary file come back as a patch that applies to the host.
	sh(t, out, `echo more >> a.txt; echo fresh > fresh.txt; rm link; chmod -x run.sh; printf '\003\004' > dir/bin.dat`)
	before := sh(t, out, "git status --porcelain; ls .git")
	patch := sh(t, out, "sh -c '"+strings.ReplaceAll(strings.ReplaceAll(ExportScript, GuestDir, out), "'", `'\''`)+"'")
	if after := sh(t, out, "git status --porcelain; ls .git"); after != before {
		t.Errorf("export changed the guest repository:\n%s\nvs\n%s", before, after)
	}
	if _, err := patchcheck.Check(strings.NewReader(patch)); err != nil {
		t.Errorf("the host's checker refuses the export script's patch: %v\n%s", err, patch)
	}
	pf := filepath.Join(t.TempDir(), "export.patch")
	os.WriteFile(pf, []byte(patch), 0o644)
	sh(t, repo, "git stash -q && git apply --check "+pf+" && git apply "+pf)
	if b, _ := os.ReadFile(filepath.Join(repo, "fresh.txt")); string(b) != "fresh\n" {
		t.Errorf("new file not applied")
	}
	if b, _ := os.ReadFile(filepath.Join(repo, "a.txt")); string(b) != "hello\nchanged\nmore\n" {
		t.Errorf("edit not applied: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(repo, "link")); !os.IsNotExist(err) {
		t.Errorf("deletion not applied")
	}
	if b, _ := os.ReadFile(filepath.Join(repo, "dir/bin.dat")); string(b) != "\x03\x04" {
		t.Errorf("binary change not applied: %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(repo, "run.sh")); fi.Mode().Perm()&0o100 != 0 {
		t.Errorf("mode change not applied")
	}
}

// HEAD's blobs cross once: the stream of a repository with 1 MiB of
// committed random data is little over 1 MiB, and the guest still gets
// a whole repository. A file changed since the commit keeps its HEAD
// blob in .git's own pack.
func TestTarSendsBlobsOnce(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	repo := t.TempDir()
	sh(t, repo, `git init -q -b main && head -c 1048576 /dev/urandom > big.dat && cp big.dat copy.dat && echo one > small.txt && ln -s small.txt link && git add . && git commit -qm one && echo two >> small.txt`)
	ctx := context.Background()
	p, err := Inspect(ctx, repo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(ctx, p, &buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > 2*(1<<20)+512<<10 {
		t.Errorf("stream of %d bytes for 2 MiB of files: HEAD's blobs sent twice?", buf.Len())
	}
	out := filepath.Join(t.TempDir(), "repo")
	if _, err := guest.UntarWorkspace(&buf, out); err != nil {
		t.Fatal(err)
	}
	sh(t, out, "git fsck --full --strict --no-dangling")
	if d := sh(t, out, "git diff HEAD --stat"); !strings.Contains(d, "small.txt") || strings.Contains(d, "big.dat") {
		t.Errorf("guest diff against HEAD: %q", d)
	}
	if got := sh(t, out, "git show HEAD:small.txt"); got != "one\n" {
		t.Errorf("HEAD's small.txt in the guest: %q", got)
	}
}

// A work tree whose every file changed since HEAD sends no blob plan;
// the guest's repository is whole all the same.
func TestTarAllFilesChanged(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	repo := t.TempDir()
	sh(t, repo, `git init -q -b main && echo one > a.txt && git add . && git commit -qm one && echo two > a.txt`)
	ctx := context.Background()
	p, err := Inspect(ctx, repo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(ctx, p, &buf); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "repo")
	if _, err := guest.UntarWorkspace(&buf, out); err != nil {
		t.Fatal(err)
	}
	sh(t, out, "git fsck --full --strict --no-dangling")
	if got := sh(t, out, "git show HEAD:a.txt"); got != "one\n" {
		t.Errorf("HEAD's a.txt in the guest: %q", got)
	}
}

// full_copy with untracked files: submodule files and untracked files
// are sent (and laid out only when they are blobs of HEAD); the guest's
// repository is whole and shows the same status as the host's.
func TestTarFullCopyUntracked(t *testing.T) {
	repo := testRepo(t)
	ctx := context.Background()
	p, err := Inspect(ctx, repo, Options{Mode: ModeFullCopy, IncludeUntracked: true})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteTar(ctx, p, &buf); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "repo")
	if _, err := guest.UntarWorkspace(&buf, out); err != nil {
		t.Fatal(err)
	}
	sh(t, out, "git fsck --full --strict --no-dangling")
	if b, err := os.ReadFile(filepath.Join(out, "sub/s.txt")); err != nil || string(b) != "subfile\n" {
		t.Errorf("submodule file: %q %v", b, err)
	}
	if st := sh(t, out, "git status --porcelain -- a.txt new.txt"); st != " M a.txt\n?? new.txt\n" {
		t.Errorf("guest status %q", st)
	}
}
