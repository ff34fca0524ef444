package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMCPBadFlagsTouchNothing: a missing allowed directory, or --cleanup
// combined with --allow-path, is refused before the daemon is called.
func TestMCPBadFlagsTouchNothing(t *testing.T) {
	f := startFakeDaemon(t, nil)
	for _, args := range [][]string{
		{"mcp", "--allow-path", filepath.Join(t.TempDir(), "missing")},
		{"mcp", "--cleanup", "--allow-path", t.TempDir()},
	} {
		code, _, stderr := runIn(t, f.layout, args...)
		if code == 0 {
			t.Errorf("%v accepted", args)
		}
		t.Logf("%v: %s", args, strings.TrimSpace(stderr))
	}
	if f.called("GET /ping") {
		t.Error("the daemon was called for refused flags")
	}
}

// TestMCPCleanup deletes the recorded sandbox whose id matches and
// forgets every record.
func TestMCPCleanup(t *testing.T) {
	f := startFakeDaemon(t, map[string]string{
		"GET /vms/mcp-a":    `{"id":"a","name":"mcp-a"}`,
		"DELETE /vms/mcp-a": `{"ok":true}`,
		"GET /vms/mcp-b":    `{"id":"other","name":"mcp-b"}`,
	})
	st := filepath.Join(f.layout.State, "mcp", "sandboxes.json")
	os.MkdirAll(filepath.Dir(st), 0o700)
	os.WriteFile(st, []byte(`{"sandboxes":[{"name":"mcp-a","id":"a"},{"name":"mcp-b","id":"b"}]}`), 0o600)
	code, stdout, stderr := runIn(t, f.layout, "mcp", "--cleanup")
	if code != 0 || strings.TrimSpace(stdout) != "deleted mcp-a" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if f.called("DELETE /vms/mcp-b") {
		t.Error("a VM that reused a recorded name was deleted")
	}
	b, _ := os.ReadFile(st)
	if strings.Contains(string(b), "mcp-") {
		t.Errorf("records left: %s", b)
	}
}
