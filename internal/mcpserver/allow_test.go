package mcpserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAllowlistHostile: only paths that resolve inside an allowed
// directory pass; "..", symlinks out of it, a sibling sharing its prefix
// and relative paths are refused.
func TestAllowlistHostile(t *testing.T) {
	base := t.TempDir()
	allowed := filepath.Join(base, "allowed")
	secret := filepath.Join(base, "secret")
	sibling := filepath.Join(base, "allowed-evil")
	for _, d := range []string{filepath.Join(allowed, "repo", "sub"), secret, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A link inside the allowed directory that leads out of it, and one
	// that stays inside.
	if err := os.Symlink(secret, filepath.Join(allowed, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(allowed, "repo"), filepath.Join(allowed, "inside")); err != nil {
		t.Fatal(err)
	}
	// The allowed directory itself given through a link is resolved.
	link := filepath.Join(base, "link-to-allowed")
	if err := os.Symlink(allowed, link); err != nil {
		t.Fatal(err)
	}
	al, err := NewAllowlist([]string{link})
	if err != nil {
		t.Fatal(err)
	}
	if got := al.Roots(); len(got) != 1 || got[0] != allowed {
		t.Fatalf("roots %v, want [%s]", got, allowed)
	}
	for _, ok := range []string{allowed, filepath.Join(allowed, "repo"), filepath.Join(allowed, "repo/sub/.."), filepath.Join(allowed, "inside/sub"), filepath.Join(link, "repo")} {
		r, err := al.Check(ok)
		if err != nil {
			t.Errorf("Check(%s): %v", ok, err)
			continue
		}
		if !strings.HasPrefix(r, allowed) {
			t.Errorf("Check(%s) = %s, not under %s", ok, r, allowed)
		}
	}
	for _, bad := range []string{
		filepath.Join(allowed, ".."),
		filepath.Join(allowed, "repo/../../secret"),
		allowed + "/../secret",
		filepath.Join(allowed, "escape"),
		filepath.Join(allowed, "escape/x/.."),
		sibling,
		secret,
		"/",
		"repo",
		"../allowed",
		filepath.Join(allowed, "missing"),
	} {
		if r, err := al.Check(bad); err == nil {
			t.Errorf("Check(%s) allowed it (resolved %s)", bad, r)
		}
	}
	// Nothing allowed: everything refused.
	none, _ := NewAllowlist(nil)
	if _, err := none.Check(allowed); err == nil {
		t.Error("empty allowlist allowed a path")
	}
	if _, err := NewAllowlist([]string{filepath.Join(base, "nope")}); err == nil {
		t.Error("a missing allowed directory was accepted")
	}
	f := filepath.Join(base, "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := NewAllowlist([]string{f}); err == nil {
		t.Error("a file was accepted as an allowed directory")
	}
}
