package mcpserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/model"
	"banger/internal/testreq"
)

// fakeDaemon answers the calls the server makes, from memory.
type fakeDaemon struct {
	mu      sync.Mutex
	vms     map[string]*model.VM
	deleted []string
	// output is what an exec writes to stdout before exiting with 3.
	output []byte
	stdin  []byte
}

func (f *fakeDaemon) Do(ctx context.Context, method, path string, in, out any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := strings.TrimPrefix(path, "/vms/")
	v, ok := f.vms[name]
	switch {
	case method == "GET" && ok:
		b, _ := json.Marshal(v)
		return json.Unmarshal(b, out)
	case method == "DELETE" && ok:
		delete(f.vms, name)
		f.deleted = append(f.deleted, name)
		return nil
	}
	return &api.Error{Code: api.CodeNotFound, Message: "no such vm " + name}
}

func (f *fakeDaemon) DoBody(ctx context.Context, method, path string, body io.Reader, size int64, out any) error {
	return &api.Error{Code: api.CodeUnknownMethod, Message: "not faked"}
}

func (f *fakeDaemon) Stream(ctx context.Context, method, path string, in any, _ func(api.Progress), out any) error {
	p := in.(api.VMCreateParams)
	f.mu.Lock()
	defer f.mu.Unlock()
	v := &model.VM{ID: "id-" + p.Name, Name: p.Name, Image: p.Image, State: "running"}
	f.vms[p.Name] = v
	*(out.(*model.VM)) = *v
	return nil
}

func (f *fakeDaemon) Upgrade(ctx context.Context, path string, in any) (net.Conn, io.Reader, error) {
	if !strings.HasSuffix(path, "/exec") {
		return nil, nil, fmt.Errorf("unexpected upgrade %s", path)
	}
	c, s := net.Pipe()
	go func() {
		defer s.Close()
		fw := agent.NewFrameWriter(s)
		var got []byte
		for {
			t, p, err := agent.ReadFrame(s)
			if err != nil {
				return
			}
			if t == agent.FrameStdin && len(p) == 0 {
				break
			}
			got = append(got, p...)
		}
		f.mu.Lock()
		f.stdin = got
		f.mu.Unlock()
		fw.Write(agent.FrameStdout, f.output)
		fw.Write(agent.FrameStderr, []byte("warn\n"))
		fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 3})
	}()
	return c, c, nil
}

func call(t *testing.T, ctx context.Context, cs *mcp.ClientSession, name string, args map[string]any, out any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if out != nil && !res.IsError {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	return res
}

func errText(res *mcp.CallToolResult) string {
	var sb strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			sb.WriteString(tc.Text)
		}
	}
	return sb.String()
}

// TestServerTools drives the server with the SDK's client over an
// in-memory transport: every tool has a description and schemas; a
// command's output is bounded and says so; foreign sandboxes and
// disallowed paths are refused; the end of the session deletes the
// sandboxes it made and forgets them.
func TestServerTools(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := &fakeDaemon{vms: map[string]*model.VM{"users-vm": {ID: "u", Name: "users-vm"}}, output: bytes.Repeat([]byte("x"), 3*MaxOutput)}
	allowedDir := t.TempDir()
	al, _ := NewAllowlist([]string{allowedDir})
	st := State{Path: filepath.Join(t.TempDir(), "sandboxes.json")}
	s := New(Options{Daemon: d, Allow: al, State: st, Version: "test"})
	ct, srvT := mcp.NewInMemoryTransports()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, srvT) }()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}

	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"sandbox_create", "sandbox_list", "sandbox_delete", "sandbox_exec", "file_read", "file_write", "file_list",
		"workspace_prepare", "workspace_export", "session_start", "session_read", "session_stop"}
	have := map[string]bool{}
	for _, tl := range tools.Tools {
		have[tl.Name] = true
		if tl.Description == "" || tl.InputSchema == nil || tl.OutputSchema == nil {
			t.Errorf("tool %s lacks a description or a schema", tl.Name)
		}
	}
	for _, w := range want {
		if !have[w] {
			t.Errorf("tool %s missing", w)
		}
	}

	var sb Sandbox
	call(t, ctx, cs, "sandbox_create", map[string]any{"name": "one"}, &sb)
	if sb.Name != "mcp-one" || sb.ID != "id-mcp-one" {
		t.Fatalf("created %+v", sb)
	}
	if recs, _ := st.List(); len(recs) != 1 || recs[0].ID != sb.ID {
		t.Fatalf("state after create: %+v", recs)
	}
	if res := call(t, ctx, cs, "sandbox_create", map[string]any{"name": "Bad_Name"}, nil); !res.IsError {
		t.Error("a bad name was accepted")
	}

	var ex ExecOut
	call(t, ctx, cs, "sandbox_exec", map[string]any{"sandbox": sb.Name, "command": []string{"cat"}, "stdin": "input"}, &ex)
	if ex.ExitCode != 3 || !ex.StdoutTruncated || ex.StderrTruncated || ex.Stderr != "warn\n" {
		t.Errorf("exec: code %d truncated %v/%v stderr %q", ex.ExitCode, ex.StdoutTruncated, ex.StderrTruncated, ex.Stderr)
	}
	if ex.StdoutBytes != int64(3*MaxOutput) || len(ex.Stdout) > MaxOutput+200 || !strings.Contains(ex.Stdout, "omitted") {
		t.Errorf("exec stdout: %d bytes reported, %d returned", ex.StdoutBytes, len(ex.Stdout))
	}
	if string(d.stdin) != "input" {
		t.Errorf("stdin reached the command as %q", d.stdin)
	}

	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"sandbox_exec", map[string]any{"sandbox": "users-vm", "command": []string{"id"}}},
		{"sandbox_delete", map[string]any{"sandbox": "users-vm"}},
		{"file_read", map[string]any{"sandbox": "users-vm", "path": "/etc/shadow"}},
		{"workspace_prepare", map[string]any{"sandbox": sb.Name, "path": "/etc"}},
		{"workspace_prepare", map[string]any{"sandbox": sb.Name, "path": allowedDir + "/../"}},
		{"sandbox_exec", map[string]any{"sandbox": sb.Name, "command": []string{"true"}, "timeout_seconds": 99999}},
	} {
		if res := call(t, ctx, cs, c.tool, c.args, nil); !res.IsError {
			t.Errorf("%s %v accepted", c.tool, c.args)
		} else {
			t.Logf("%s refused: %s", c.tool, errText(res))
		}
	}
	if _, ok := d.vms["users-vm"]; !ok {
		t.Fatal("the user's own VM was deleted")
	}

	cs.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("server: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("server did not end with the session")
	}
	if len(d.deleted) != 1 || d.deleted[0] != "mcp-one" {
		t.Errorf("deleted at session end: %v", d.deleted)
	}
	if recs, _ := st.List(); len(recs) != 0 {
		t.Errorf("records left: %+v", recs)
	}
}

// TestCleanupAllSkipsReusedNames: a record whose name now belongs to
// another VM (another id) is forgotten, not deleted.
func TestCleanupAllSkipsReusedNames(t *testing.T) {
	d := &fakeDaemon{vms: map[string]*model.VM{
		"mcp-a": {ID: "a", Name: "mcp-a"},
		"mcp-b": {ID: "other", Name: "mcp-b"},
	}}
	st := State{Path: filepath.Join(t.TempDir(), "s.json")}
	st.Add(Record{Name: "mcp-a", ID: "a"})
	st.Add(Record{Name: "mcp-b", ID: "b"})
	st.Add(Record{Name: "mcp-gone", ID: "g"})
	deleted, err := CleanupAll(context.Background(), d, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0] != "mcp-a" {
		t.Errorf("deleted %v", deleted)
	}
	if _, ok := d.vms["mcp-b"]; !ok {
		t.Error("a VM that reused a recorded name was deleted")
	}
	if recs, _ := st.List(); len(recs) != 0 {
		t.Errorf("records left: %+v", recs)
	}
}

// TestWorkspaceRootMustBeAllowed: allowing a directory inside a
// repository does not let the repository's other files out: the
// repository root must be allowed too.
func TestWorkspaceRootMustBeAllowed(t *testing.T) {
	git := testreq.RequireTools(t, "apt-get install git", "git")[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	repo := t.TempDir()
	sub := filepath.Join(repo, "sub")
	os.MkdirAll(sub, 0o755)
	os.WriteFile(filepath.Join(repo, "secret.txt"), []byte("top secret\n"), 0o600)
	os.WriteFile(filepath.Join(sub, "ok.txt"), []byte("fine\n"), 0o644)
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "x"}} {
		cmd := exec.Command(git, append([]string{"-C", repo}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	d := &fakeDaemon{vms: map[string]*model.VM{}}
	al, _ := NewAllowlist([]string{sub})
	s := New(Options{Daemon: d, Allow: al, State: State{Path: filepath.Join(t.TempDir(), "s.json")}})
	ct, srvT := mcp.NewInMemoryTransports()
	go s.Run(ctx, srvT)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	var sb Sandbox
	call(t, ctx, cs, "sandbox_create", map[string]any{"name": "ws"}, &sb)
	res := call(t, ctx, cs, "workspace_prepare", map[string]any{"sandbox": sb.Name, "path": sub}, nil)
	if !res.IsError || !strings.Contains(errText(res), "outside the allowed") {
		t.Fatalf("a repository rooted above the allowed directory was accepted: %s", errText(res))
	}
}
