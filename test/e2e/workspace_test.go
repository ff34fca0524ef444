//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// gitEnv keeps test repositories independent of the user's git config.
func gitEnv(home string) []string {
	return append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+home)
}

func hostSh(t *testing.T, dir, script string) string {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	cmd.Env = gitEnv(dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// makeRepo builds a repository with tracked, untracked, ignored, binary and
// executable files, a symlink and a submodule, plus one uncommitted edit.
func makeRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	hostSh(t, dir, `
mkdir sub && cd sub && git init -q -b main && echo in-submodule > s.txt && git add . && git commit -qm sub && cd ..
mkdir repo && cd repo && git init -q -b main
echo hello > tracked.txt
mkdir -p src && printf 'package main\n' > src/main.go
head -c 3000 /dev/urandom > blob.bin
printf '#!/bin/sh\necho run\n' > run.sh && chmod +x run.sh
ln -s tracked.txt link
printf 'ignored.log\nbuild/\n' > .gitignore
git add . && git commit -qm initial
git -c protocol.file.allow=always submodule --quiet add ../sub sub
git commit -qm submodule
echo untracked > untracked.txt
echo ignored > ignored.log
mkdir build && echo out > build/out
echo dirty >> tracked.txt`)
	return filepath.Join(dir, "repo")
}

// wsVM is one VM shared by the workspace scenarios; each prepares afresh.
var wsVM struct {
	once sync.Once
	err  error
}

func workspaceVM(t *testing.T) string {
	t.Helper()
	wsVM.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if r := e.cli(ctx, "", "vm", "create", "--name", "ws"); r.code != 0 {
			wsVM.err = fmt.Errorf("create ws vm: %s", r)
		}
	})
	if wsVM.err != nil {
		t.Fatal(wsVM.err)
	}
	return "ws"
}

func guest(t *testing.T, ctx context.Context, vm, script string) string {
	t.Helper()
	return must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", script)).stdout
}

// TestWorkspacePrepare: what arrives in the guest, per option.
func TestWorkspacePrepare(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	vm := workspaceVM(t)
	repo := makeRepo(t)
	head := strings.TrimSpace(hostSh(t, repo, "git rev-parse HEAD"))

	r := must(t, e.cli(ctx, "", "vm", "workspace", "prepare", vm, repo))
	if !strings.Contains(r.stderr, "uncommitted changes") {
		t.Errorf("dirty tree not warned about: %s", r.stderr)
	}
	out := guest(t, ctx, vm, `cd /root/repo && for f in tracked.txt src/main.go blob.bin run.sh link untracked.txt ignored.log build/out sub/s.txt; do
  if [ -e $f ] || [ -L $f ]; then echo "has $f"; fi; done
test -x run.sh && echo exec-bit
test -L link && echo symlink
git rev-parse HEAD; git status --porcelain; cat tracked.txt; pwd`)
	for _, want := range []string{"has tracked.txt", "has src/main.go", "has blob.bin", "has run.sh", "has link", "exec-bit", "symlink", head, " M tracked.txt", "hello\ndirty"} {
		if !strings.Contains(out, want) {
			t.Errorf("guest lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"has untracked.txt", "has ignored.log", "has build/out", "has sub/s.txt", "?? "} {
		if strings.Contains(out, unwanted) {
			t.Errorf("guest has %q:\n%s", unwanted, out)
		}
	}
	sum := sha256.Sum256([]byte(hostSh(t, repo, "cat blob.bin")))
	if g := guest(t, ctx, vm, "sha256sum /root/repo/blob.bin | cut -d' ' -f1"); strings.TrimSpace(g) != fmt.Sprintf("%x", sum) {
		t.Errorf("binary file differs")
	}
	// exec starts in the workspace.
	if pwd := strings.TrimSpace(must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "pwd")).stdout); pwd != "/root/repo" {
		t.Errorf("exec cwd %q, want /root/repo", pwd)
	}

	must(t, e.cli(ctx, "", "vm", "workspace", "prepare", vm, repo, "--include-untracked", "--mode", "full_copy"))
	out = guest(t, ctx, vm, `cd /root/repo; for f in untracked.txt ignored.log build/out sub/s.txt; do [ -e $f ] && echo "has $f"; done; true`)
	if !strings.Contains(out, "has untracked.txt") || !strings.Contains(out, "has sub/s.txt") {
		t.Errorf("untracked/full_copy files missing:\n%s", out)
	}
	if strings.Contains(out, "ignored") || strings.Contains(out, "build/out") {
		t.Errorf("ignored files sent:\n%s", out)
	}
}

// TestWorkspaceExport: guest edits come back as a patch that applies to the
// host repository at the same HEAD, and export leaves the guest untouched.
func TestWorkspaceExport(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	vm := workspaceVM(t)
	repo := makeRepo(t)
	hostSh(t, repo, "git checkout -q -- tracked.txt") // clean tree
	must(t, e.cli(ctx, "", "vm", "workspace", "prepare", vm, repo))
	guest(t, ctx, vm, `cd /root/repo
echo edited >> tracked.txt
echo brand-new > new.txt
rm src/main.go
chmod -x run.sh
head -c 2000 /dev/urandom > blob.bin
mkdir -p deep/dir && echo nested > deep/dir/f`)
	before := guest(t, ctx, vm, "cd /root/repo && git status --porcelain && sha256sum .git/index && ls .git")
	patch := filepath.Join(t.TempDir(), "guest.patch")
	must(t, e.cli(ctx, "", "vm", "workspace", "export", vm, "-o", patch))
	if after := guest(t, ctx, vm, "cd /root/repo && git status --porcelain && sha256sum .git/index && ls .git"); after != before {
		t.Errorf("export changed the guest:\n%s\n---\n%s", before, after)
	}
	hostSh(t, repo, "git apply --check "+patch+" && git apply "+patch)
	// The host tree now equals the guest's.
	hostSums := hostSh(t, repo, "find . -path ./.git -prune -o -path ./sub -prune -o -type f -print | grep -v -e untracked.txt -e ignored.log -e build/ | sort | xargs sha256sum")
	guestSums := guest(t, ctx, vm, "cd /root/repo && find . -path ./.git -prune -o -path ./sub -prune -o -type f -print | sort | xargs sha256sum")
	if hostSums != guestSums {
		t.Errorf("trees differ after apply:\nhost:\n%s\nguest:\n%s", hostSums, guestSums)
	}
	if fi, err := os.Stat(filepath.Join(repo, "run.sh")); err != nil || fi.Mode().Perm()&0o100 != 0 {
		t.Errorf("mode change not carried: %v", fi)
	}
}

// TestWorkspaceBaseCommit: guest commits come back only with --base-commit;
// an unknown base commit is a clear error.
func TestWorkspaceBaseCommit(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	vm := workspaceVM(t)
	repo := makeRepo(t)
	hostSh(t, repo, "git checkout -q -- tracked.txt")
	base := strings.TrimSpace(hostSh(t, repo, "git rev-parse HEAD"))
	must(t, e.cli(ctx, "", "vm", "workspace", "prepare", vm, repo))
	guest(t, ctx, vm, `cd /root/repo && echo committed > committed.txt && git add committed.txt &&
git -c user.name=g -c user.email=g@g commit -qm guest && echo loose > loose.txt`)
	plain := must(t, e.cli(ctx, "", "vm", "workspace", "export", vm, "-o", "-")).stdout
	if strings.Contains(plain, "committed.txt") || !strings.Contains(plain, "loose.txt") {
		t.Errorf("plain export should hold loose.txt but not the guest commit:\n%s", plain)
	}
	withBase := must(t, e.cli(ctx, "", "vm", "workspace", "export", vm, "-o", "-", "--base-commit", base)).stdout
	if !strings.Contains(withBase, "committed.txt") || !strings.Contains(withBase, "loose.txt") {
		t.Errorf("--base-commit export lacks the guest commit:\n%s", withBase)
	}
	pf := filepath.Join(t.TempDir(), "p")
	os.WriteFile(pf, []byte(withBase), 0o644)
	hostSh(t, repo, "git apply --check "+pf)
	r := e.cli(ctx, "", "vm", "workspace", "export", vm, "-o", "-", "--base-commit", "0123456789abcdef0123456789abcdef01234567")
	if r.code == 0 || !strings.Contains(r.stderr, "not known") {
		t.Errorf("unknown base commit: %s", r)
	}
}

// TestWorkspaceDryRunAndBadInput: dry-run touches no VM (not even one that
// does not exist); a non-repository and a stopped VM are refused clearly.
func TestWorkspaceDryRunAndBadInput(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	repo := makeRepo(t)
	before := len(vmNames(t, ctx))
	r := must(t, e.cli(ctx, "", "vm", "workspace", "prepare", "no-such-vm", repo, "--dry-run"))
	if !strings.Contains(r.stdout, "tracked.txt") || strings.Contains(r.stdout, "untracked.txt") || !strings.Contains(r.stdout, "files") {
		t.Errorf("dry-run listing:\n%s", r.stdout)
	}
	if len(vmNames(t, ctx)) != before {
		t.Errorf("dry-run created a VM")
	}
	r = e.cli(ctx, "", "vm", "workspace", "prepare", "no-such-vm", t.TempDir())
	if r.code == 0 || !strings.Contains(r.stderr, "not inside a git repository") {
		t.Errorf("non-repo: %s", r)
	}
	must(t, e.cli(ctx, "", "vm", "create", "--no-start", "--name", "ws-stopped"))
	t.Cleanup(func() { e.cli(context.Background(), "", "vm", "delete", "ws-stopped") })
	r = e.cli(ctx, "", "vm", "workspace", "prepare", "ws-stopped", repo)
	if r.code == 0 || !strings.Contains(r.stderr, "not running") {
		t.Errorf("stopped vm: %s", r)
	}
}

// TestWorkspaceSurvivesStopAndAutoPrepare: /root/repo survives stop/start;
// exec --auto-prepare re-syncs host changes with the options of the
// prepare it repeats (here --include-untracked).
func TestWorkspaceSurvivesStopAndAutoPrepare(t *testing.T) {
	ctx := ctxFor(t, 8*time.Minute)
	vm := newVM(t, ctx, "ws-persist")
	repo := makeRepo(t)
	// Prepared with --include-untracked: --auto-prepare must repeat that
	// option, not just the mode.
	must(t, e.cli(ctx, "", "vm", "workspace", "prepare", "--include-untracked", vm, repo))
	must(t, e.cli(ctx, "", "vm", "stop", vm))
	must(t, e.cli(ctx, "", "vm", "start", vm))
	if out := guest(t, ctx, vm, "cat /root/repo/src/main.go /root/repo/untracked.txt"); out != "package main\nuntracked\n" {
		t.Errorf("workspace lost across stop/start: %q", out)
	}
	hostSh(t, repo, "echo v2 > tracked.txt && echo u2 > untracked.txt")
	r := must(t, e.cli(ctx, "", "vm", "exec", vm, "--auto-prepare", "--", "cat", "tracked.txt", "untracked.txt"))
	if r.stdout != "v2\nu2\n" {
		t.Errorf("--auto-prepare did not re-sync with --include-untracked: %s", r)
	}
}

// TestRunWithWorkspace: vm run --rm PATH -- cmd ships the repository, runs
// in it and propagates the exit code.
func TestRunWithWorkspace(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	repo := makeRepo(t)
	r := e.cli(ctx, "", "vm", "run", "--rm", repo, "--", "sh", "-c", "pwd; cat tracked.txt; ./run.sh; exit 7")
	if r.code != 7 || !strings.Contains(r.stdout, "/root/repo\nhello\ndirty\nrun\n") {
		t.Errorf("run with workspace: %s", r)
	}
	r = e.cli(ctx, "", "vm", "run", "--rm", t.TempDir(), "--", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "not inside a git repository") {
		t.Errorf("run with a non-repo: %s", r)
	}
}
