package workspace

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"banger/internal/testenv"
)

// TestInspectRunsNothingFromTheRepository: a repository whose own config
// names an fsmonitor hook and clean/smudge/process filters (with a dot
// and an '=' in one filter's name) gets inspected and packed without git
// running any of them.
func TestInspectRunsNothingFromTheRepository(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	testenv.Isolate(t)
	ctx := context.Background()
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	marker := filepath.Join(dir, "ran")
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$0 $*\" >> "+marker+"\ncat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	run("init", "-q")
	if err := os.WriteFile(filepath.Join(repo, ".gitattributes"), []byte("*.txt filter=evil\n*.md filter=a.b=c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a.txt", "b.md"} {
		if err := os.WriteFile(filepath.Join(repo, f), []byte("data\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run("add", ".")
	run("commit", "-qm", "one")
	// Only now the hostile settings: committing above ran nothing of them.
	for _, kv := range [][2]string{
		{"core.fsmonitor", hook},
		{"filter.evil.clean", hook},
		{"filter.evil.smudge", hook},
		{"filter.evil.process", hook},
		{"filter.a.b=c.clean", hook},
	} {
		run("config", kv[0], kv[1])
	}
	// Stale index entries: status must compare contents (the path where
	// git runs clean filters).
	later := []byte("data\nmore\n")
	for _, f := range []string{"a.txt", "b.md"} {
		if err := os.WriteFile(filepath.Join(repo, f), later, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, err := Inspect(ctx, repo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Dirty {
		t.Errorf("modified files not seen as dirty")
	}
	if _, err := os.Stat(marker); err == nil {
		b, _ := os.ReadFile(marker)
		t.Fatalf("git ran a command from the repository's config:\n%s", b)
	}
	// The check can fail: plain git does run the hook.
	exec.Command("git", "-C", repo, "status", "--porcelain").Run()
	if _, err := os.Stat(marker); err != nil {
		t.Skip("this git runs neither fsmonitor nor filters on status; nothing to compare with")
	}
}
