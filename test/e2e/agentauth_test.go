//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgentAuth: `vm create --agent-auth` copies fake claude and codex
// login files from a fake home into the guest's home, 0600 and owned by
// root, with a warning on stderr; a missing login file is refused with
// its path and leaves no VM behind.
func TestAgentAuth(t *testing.T) {
	ctx := ctxFor(t, 6*time.Minute)
	home := t.TempDir()
	files := map[string]string{
		".claude/.credentials.json": `{"claudeAiOauth":{"accessToken":"fake-claude"}}`,
		".claude.json":              `{"hasCompletedOnboarding":true}`,
		".codex/auth.json":          `{"tokens":{"access_token":"fake-codex"}}`,
	}
	for rel, content := range files {
		p := filepath.Join(home, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(args ...string) result {
		cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "banger"), args...)
		cmd.Env = append(append([]string{}, e.environ...), "HOME="+home,
			"XDG_DATA_HOME=", "CODEX_HOME=", "CLAUDE_CONFIG_DIR=")
		return runCmd(cmd)
	}

	// opencode has no login in this home: refused, naming the path,
	// before anything is created.
	r := cli("vm", "create", "--name", "agentauth", "--agent-auth", "claude", "--agent-auth", "opencode")
	if r.code == 0 || !strings.Contains(r.stderr, filepath.Join(home, ".local/share/opencode/auth.json")) {
		t.Fatalf("missing opencode login: %s", r)
	}
	if _, ok := vmNames(t, ctx)["agentauth"]; ok {
		t.Fatalf("a refused --agent-auth left a vm behind")
	}

	r = cli("vm", "create", "--name", "agentauth", "--agent-auth", "claude", "--agent-auth", "codex")
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.cli(c, "", "vm", "delete", "agentauth")
	})
	must(t, r)
	if !strings.Contains(r.stderr, "lives in the VM") || !strings.Contains(r.stderr, "banger secret (see README)") {
		t.Errorf("no credential warning on stderr: %q", r.stderr)
	}
	for rel, content := range files {
		p := "/root/" + rel
		got := must(t, e.cli(ctx, "", "vm", "exec", "agentauth", "--", "cat", p)).stdout
		if got != content {
			t.Errorf("%s in the guest = %q, want %q", p, got, content)
		}
		st := strings.TrimSpace(must(t, e.cli(ctx, "", "vm", "exec", "agentauth", "--", "stat", "-c", "%a %U:%G %F", p)).stdout)
		if st != "600 root:root regular file" {
			t.Errorf("%s: %q, want mode 600 owned by root", p, st)
		}
	}
	for _, dir := range []string{"/root/.claude", "/root/.codex"} {
		st := strings.TrimSpace(must(t, e.cli(ctx, "", "vm", "exec", "agentauth", "--", "stat", "-c", "%a %U", dir)).stdout)
		if st != "700 root" {
			t.Errorf("%s: %q, want 700 root", dir, st)
		}
	}
	// They are on the work disk (mounted at /root), which outlives the root disk's overlay.
	src := strings.TrimSpace(must(t, e.cli(ctx, "", "vm", "exec", "agentauth", "--", "findmnt", "-n", "-o", "TARGET", "--target", "/root/.codex/auth.json")).stdout)
	if src != "/root" {
		t.Errorf("/root/.codex/auth.json is on the mount %q, want the work disk at /root", src)
	}
}
