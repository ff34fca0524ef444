//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// lockedBuffer collects a process's stderr safely.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// mcpSession starts `banger mcp` with args and connects the go-sdk's own
// client to it over stdio.
func mcpSession(t *testing.T, ctx context.Context, args ...string) (*mcp.ClientSession, *exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(filepath.Join(e.bin, "banger"), append([]string{"mcp"}, args...)...)
	cmd.Env = e.environ
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	// Closing the session closes the server's stdin; give its cleanup
	// (deleting the sandboxes) time before the transport sends SIGTERM.
	tr := &mcp.CommandTransport{Command: cmd, TerminateDuration: 3 * time.Minute}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "banger-e2e", Version: "test"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("connect to banger mcp: %v\n%s", err, stderr)
	}
	t.Cleanup(func() { cs.Close() })
	return cs, cmd, stderr
}

// callTool calls a tool and decodes its structured result into out; it
// fails the test when the call fails, unless wantErr.
func callTool(t *testing.T, ctx context.Context, cs *mcp.ClientSession, name string, args map[string]any, out any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if res.IsError {
		t.Fatalf("%s %v failed: %s", name, args, toolText(res))
	}
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: decode %s: %v", name, b, err)
		}
	}
	return res
}

func toolError(t *testing.T, ctx context.Context, cs *mcp.ClientSession, name string, args map[string]any) string {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return err.Error()
	}
	if !res.IsError {
		t.Fatalf("%s %v was accepted: %s", name, args, toolText(res))
	}
	return toolText(res)
}

func toolText(res *mcp.CallToolResult) string {
	var sb strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			sb.WriteString(tc.Text)
		}
	}
	return sb.String()
}

func gitRepo(t *testing.T, ctx context.Context, dir string, files map[string]string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	for n, c := range files {
		os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644)
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "-A"},
		{"-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid", "commit", "-q", "-m", "init"},
	} {
		must(t, e.command(ctx, "", "git", append([]string{"-C", dir}, args...)...))
	}
}

func mcpRecords(t *testing.T) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, "state", "banger", "mcp", "sandboxes.json"))
	if err != nil {
		t.Fatalf("mcp state file: %v", err)
	}
	var sf struct {
		Sandboxes []map[string]any `json:"sandboxes"`
	}
	jsonUnmarshal(t, string(b), &sf)
	return sf.Sandboxes
}

func vmExists(t *testing.T, ctx context.Context, name string) bool {
	t.Helper()
	vms, err := e.listVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		if v.Name == name {
			return true
		}
	}
	return false
}

// TestMCP drives `banger mcp` with the go-sdk's MCP client over stdio:
// every tool has a description and schemas; one sandbox serves commands
// (bounded output), files, a workspace from an allowed directory (others
// and a symlink out of it refused), its patch export and a session; the
// end of the MCP session deletes it. A second session checks
// sandbox_delete (a second boot: deleting the first sandbox would leave
// nothing for the end-of-session check), and --cleanup deletes a
// recorded orphan but not a VM that reused a recorded name.
func TestMCP(t *testing.T) {
	ctx := ctxFor(t, 15*time.Minute)
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if vms, err := e.listVMs(c); err == nil {
			for _, v := range vms {
				if strings.HasPrefix(v.Name, "mcp-") {
					e.cli(c, "", "vm", "delete", v.Name)
				}
			}
		}
	})
	base := t.TempDir()
	allowed := filepath.Join(base, "allowed")
	repo := filepath.Join(allowed, "proj")
	gitRepo(t, ctx, repo, map[string]string{"README.md": "hello\n", "main.go": "package main\n"})
	outside := filepath.Join(base, "private")
	gitRepo(t, ctx, outside, map[string]string{"secret.txt": "do not ship\n"})
	if err := os.Symlink(outside, filepath.Join(allowed, "sneaky")); err != nil {
		t.Fatal(err)
	}

	cs, cmd, stderr := mcpSession(t, ctx, "--allow-path", allowed)
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, tl := range tools.Tools {
		have[tl.Name] = true
		schema, _ := json.Marshal(tl.InputSchema)
		if tl.Description == "" || !strings.Contains(string(schema), `"type":"object"`) || tl.OutputSchema == nil {
			t.Errorf("tool %s: description %q, input schema %s", tl.Name, tl.Description, schema)
		}
	}
	for _, w := range []string{"sandbox_create", "sandbox_list", "sandbox_delete", "sandbox_exec", "file_read", "file_write",
		"file_list", "workspace_prepare", "workspace_export", "session_start", "session_read", "session_stop"} {
		if !have[w] {
			t.Errorf("tool %s missing", w)
		}
	}

	var sb struct{ Name, ID, State string }
	callTool(t, ctx, cs, "sandbox_create", map[string]any{}, &sb)
	if !strings.HasPrefix(sb.Name, "mcp-") || sb.State != "running" {
		t.Fatalf("created %+v", sb)
	}
	if recs := mcpRecords(t); len(recs) != 1 || recs[0]["id"] != sb.ID {
		t.Fatalf("state file after create: %v", recs)
	}

	type execOut struct {
		ExitCode        int    `json:"exit_code"`
		Stdout          string `json:"stdout"`
		Stderr          string `json:"stderr"`
		StdoutBytes     int64  `json:"stdout_bytes"`
		StdoutTruncated bool   `json:"stdout_truncated"`
	}
	var ex execOut
	callTool(t, ctx, cs, "sandbox_exec", map[string]any{"sandbox": sb.Name, "command": []string{"sh", "-c", "cat; echo err >&2; exit 3"}, "stdin": "in\n"}, &ex)
	if ex.ExitCode != 3 || ex.Stdout != "in\n" || ex.Stderr != "err\n" {
		t.Errorf("exec: %+v", ex)
	}
	callTool(t, ctx, cs, "sandbox_exec", map[string]any{"sandbox": sb.Name, "command": []string{"sh", "-c", "head -c 200000 /dev/zero | tr '\\0' a"}}, &ex)
	if !ex.StdoutTruncated || ex.StdoutBytes != 200000 || len(ex.Stdout) > 70000 || !strings.Contains(ex.Stdout, "truncated") {
		t.Errorf("large output: truncated=%v bytes=%d returned=%d", ex.StdoutTruncated, ex.StdoutBytes, len(ex.Stdout))
	}

	// Files.
	callTool(t, ctx, cs, "file_write", map[string]any{"sandbox": sb.Name, "path": "/root/mcp/note.txt", "content": "hello mcp\n", "parents": true}, nil)
	var rd struct {
		Content, Encoding string
		Truncated         bool
	}
	callTool(t, ctx, cs, "file_read", map[string]any{"sandbox": sb.Name, "path": "/root/mcp/note.txt"}, &rd)
	if rd.Content != "hello mcp\n" || rd.Encoding != "utf-8" || rd.Truncated {
		t.Errorf("file_read: %+v", rd)
	}
	var ls struct {
		Entries []struct{ Name, Type string }
	}
	callTool(t, ctx, cs, "file_list", map[string]any{"sandbox": sb.Name, "path": "/root/mcp"}, &ls)
	if len(ls.Entries) != 1 || ls.Entries[0].Name != "note.txt" || ls.Entries[0].Type != "file" {
		t.Errorf("file_list: %+v", ls)
	}

	// Workspace from the allowed directory; others refused.
	var prep struct {
		Files    int    `json:"files"`
		GuestDir string `json:"guest_dir"`
	}
	callTool(t, ctx, cs, "workspace_prepare", map[string]any{"sandbox": sb.Name, "path": repo}, &prep)
	if prep.Files != 2 || prep.GuestDir != "/root/repo" {
		t.Errorf("workspace_prepare: %+v", prep)
	}
	for _, bad := range []string{outside, filepath.Join(allowed, "sneaky"), allowed + "/../private", "proj"} {
		msg := toolError(t, ctx, cs, "workspace_prepare", map[string]any{"sandbox": sb.Name, "path": bad})
		if !strings.Contains(msg, "allowed") && !strings.Contains(msg, "absolute") {
			t.Errorf("workspace_prepare %s refused with %q", bad, msg)
		}
	}
	callTool(t, ctx, cs, "sandbox_exec", map[string]any{"sandbox": sb.Name, "command": []string{"sh", "-c", "echo changed-in-guest >> README.md"}, "cwd": "/root/repo"}, &ex)
	if ex.ExitCode != 0 {
		t.Fatalf("edit in guest: %+v", ex)
	}
	if r := callTool(t, ctx, cs, "sandbox_exec", map[string]any{"sandbox": sb.Name, "command": []string{"ls", "/root/repo"}}, &ex); strings.Contains(ex.Stdout, "secret") {
		t.Errorf("a refused workspace reached the guest: %s", toolText(r))
	}
	var patch struct {
		Patch     string
		Truncated bool
	}
	callTool(t, ctx, cs, "workspace_export", map[string]any{"sandbox": sb.Name}, &patch)
	if !strings.Contains(patch.Patch, "+changed-in-guest") || patch.Truncated {
		t.Errorf("workspace_export: %q", patch.Patch)
	}

	// A session: start, read its output, stop.
	type session struct {
		Name     string
		State    string
		ExitCode *int `json:"exit_code"`
	}
	var ss session
	callTool(t, ctx, cs, "session_start", map[string]any{"sandbox": sb.Name, "name": "bg", "command": []string{"sh", "-c", "echo sess-out; sleep 300"}}, &ss)
	if ss.Name != "bg" || ss.State != "running" {
		t.Errorf("session_start: %+v", ss)
	}
	var sr struct {
		Session session
		Output  string
	}
	if !waitFor(ctx, time.Minute, 300*time.Millisecond, func() bool {
		callTool(t, ctx, cs, "session_read", map[string]any{"sandbox": sb.Name, "session": "bg"}, &sr)
		return strings.Contains(sr.Output, "sess-out")
	}) {
		t.Errorf("session output never came: %+v", sr)
	}
	callTool(t, ctx, cs, "session_stop", map[string]any{"sandbox": sb.Name, "session": "bg"}, nil)
	if !waitFor(ctx, time.Minute, 300*time.Millisecond, func() bool {
		callTool(t, ctx, cs, "session_read", map[string]any{"sandbox": sb.Name, "session": "bg"}, &sr)
		return sr.Session.State != "running"
	}) {
		t.Errorf("session did not stop: %+v", sr.Session)
	}

	// The end of the MCP session deletes the sandbox.
	if !vmExists(t, ctx, sb.Name) {
		t.Fatalf("sandbox %s gone before the session ended", sb.Name)
	}
	cs.Close()
	if !waitFor(ctx, 3*time.Minute, 200*time.Millisecond, func() bool { return cmd.ProcessState != nil }) {
		t.Fatal("banger mcp did not exit")
	}
	if !cmd.ProcessState.Success() {
		t.Errorf("banger mcp exited with %v:\n%s", cmd.ProcessState, stderr)
	}
	if vmExists(t, ctx, sb.Name) {
		t.Errorf("sandbox %s survived the end of the MCP session:\n%s", sb.Name, stderr)
	}
	if recs := mcpRecords(t); len(recs) != 0 {
		t.Errorf("records left after the session: %v", recs)
	}

	// sandbox_delete, in a second session.
	cs2, _, stderr2 := mcpSession(t, ctx)
	var sb2 struct{ Name string }
	callTool(t, ctx, cs2, "sandbox_create", map[string]any{"name": "second"}, &sb2)
	if sb2.Name != "mcp-second" || !vmExists(t, ctx, sb2.Name) {
		t.Fatalf("second sandbox: %+v", sb2)
	}
	callTool(t, ctx, cs2, "sandbox_delete", map[string]any{"sandbox": sb2.Name}, nil)
	if vmExists(t, ctx, sb2.Name) {
		t.Errorf("sandbox_delete left %s:\n%s", sb2.Name, stderr2)
	}
	toolError(t, ctx, cs2, "sandbox_exec", map[string]any{"sandbox": sb2.Name, "command": []string{"true"}})
	// A VM the session did not create, even one named like its own, is
	// out of the tools' reach.
	must(t, e.cli(ctx, "", "vm", "create", "--no-start", "--name", "mcp-reused"))
	for tool, args := range map[string]map[string]any{
		"sandbox_delete": {"sandbox": "mcp-reused"},
		"file_read":      {"sandbox": "mcp-reused", "path": "/etc/hostname"},
		"sandbox_exec":   {"sandbox": "mcp-reused", "command": []string{"true"}},
	} {
		if msg := toolError(t, ctx, cs2, tool, args); !strings.Contains(msg, "no sandbox") {
			t.Errorf("%s on a foreign VM: %q", tool, msg)
		}
	}
	cs2.Close()
	if !vmExists(t, ctx, "mcp-reused") {
		t.Fatal("the end of a session deleted a VM it had not created")
	}

	// --cleanup: a recorded orphan (as a crashed server leaves one) is
	// deleted; a VM that took a recorded name later (another id) is not.
	must(t, e.cli(ctx, "", "vm", "create", "--no-start", "--name", "mcp-orphan"))
	orphan := showVM(t, ctx, "mcp-orphan")
	state := fmt.Sprintf(`{"sandboxes":[{"name":"mcp-orphan","id":%q,"pid":1},{"name":"mcp-reused","id":"not-its-id","pid":1}]}`, orphan.ID)
	os.WriteFile(filepath.Join(e.root, "state", "banger", "mcp", "sandboxes.json"), []byte(state), 0o600)
	out := must(t, e.cli(ctx, "", "mcp", "--cleanup")).stdout
	if strings.TrimSpace(out) != "deleted mcp-orphan" {
		t.Errorf("--cleanup said %q", out)
	}
	if vmExists(t, ctx, "mcp-orphan") || !vmExists(t, ctx, "mcp-reused") {
		t.Errorf("--cleanup: orphan exists=%v, reused exists=%v", vmExists(t, ctx, "mcp-orphan"), vmExists(t, ctx, "mcp-reused"))
	}
	if recs := mcpRecords(t); len(recs) != 0 {
		t.Errorf("records left after --cleanup: %v", recs)
	}
	must(t, e.cli(ctx, "", "vm", "delete", "mcp-reused"))
}
