package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/cli/style"
	"banger/internal/testenv"
)

// run invokes the CLI against an isolated, empty installation. No daemon
// exists there, so anything that reaches the daemon would try to start one;
// the cases below must be refused before that.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	d := testenv.Isolate(t)
	var so, se bytes.Buffer
	app := &App{Version: "test", Stdin: strings.NewReader(""), Stdout: &so, Stderr: &se}
	root := app.rootCmd()
	root.SetArgs(args)
	root.SetOut(&so)
	root.SetErr(&se)
	code := 0
	if err := root.Execute(); err != nil {
		code = 1
		se.WriteString(formatError(err, app.errStyle()))
	}
	if _, err := os.Stat(filepath.Join(d.Runtime, "banger/bangerd.sock")); err == nil {
		t.Errorf("%v reached the daemon", args)
	}
	return code, so.String(), se.String()
}

func TestRefusedBeforeTheDaemon(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"vm", "run", "-d", "--rm"}, "cannot be combined"},
		{[]string{"vm", "run", "-d", "--", "true"}, "takes no command"},
		{[]string{"vm", "run"}, "no command given"},
		{[]string{"vm", "run", "--name", "Bad", "--", "true"}, "invalid vm name"},
		{[]string{"vm", "create", "--name", "a_b"}, "invalid vm name"},
		{[]string{"vm", "create", "--vcpu", "0"}, "--vcpu must be between 1 and 64, got 0"},
		{[]string{"vm", "create", "--vcpu", "65"}, "--vcpu must be between 1 and 64, got 65"},
		{[]string{"vm", "create", "--memory", "12"}, "--memory must be at least 128 MiB"},
		{[]string{"vm", "set", "box", "--memory", "12"}, "--memory must be at least 128 MiB"},
		{[]string{"vm", "create", "--disk-size", "1M"}, "--disk-size 1M is too small"},
		{[]string{"vm", "create", "--network", "tap"}, "--network must be bridge, user or none"},
		{[]string{"vm", "create", "--network", "none", "--nat"}, "--nat and --publish need a network"},
		{[]string{"vm", "set", "box"}, "nothing to change"},
		{[]string{"vm", "exec", "box"}, "no command given"},
		{[]string{"kernel", "import", "k"}, "--from is required"},
		{[]string{"image", "build", "img"}, "exactly one of"},
		{[]string{"image", "build", "Bad", "--from-dir", "/"}, "invalid image name"},
		{[]string{"vm", "workspace", "export", "box"}, "give -o FILE"},
		{[]string{"vm", "create", "--agent-auth", "gemini"}, `--agent-auth "gemini": unknown`},
		{[]string{"vm", "create", "--agent-auth", "codex", "--no-start"}, "cannot be combined with --no-start"},
		{[]string{"vm", "create", "--agent-auth", "codex"}, "/.codex/auth.json does not exist"},
		{[]string{"vm", "run", "--agent-auth", "opencode", "--", "true"}, "/opencode/auth.json does not exist"},
	}
	for _, c := range cases {
		code, _, stderr := run(t, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: code %d, stderr %q; want %q", c.args, code, stderr, c.want)
		}
	}
}

func TestDaemonSocket(t *testing.T) {
	code, out, _ := run(t, "daemon", "socket")
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), "/run/banger/bangerd.sock") {
		t.Errorf("daemon socket: %d %q", code, out)
	}
}

func TestFormatError(t *testing.T) {
	t.Parallel()
	plain := style.Plain()
	cases := []struct {
		code, msg, op, want string
	}{
		{api.CodeNotFound, `vm "x" not found`, "abcd1234", `banger: not found: vm "x" not found (op abcd1234)`},
		{api.CodeAlreadyExists, `vm "x" exists`, "01", `banger: already exists: vm "x" exists (op 01)`},
		{api.CodeBadRequest, "bad size", "02", "banger: invalid request: bad size (op 02)"},
		{api.CodeConflict, `vm "x" is running`, "03", `banger: conflict: vm "x" is running (op 03)`},
		{api.CodeNotRunning, `vm "x" is stopped`, "04", `banger: not running: vm "x" is stopped (op 04)`},
		{api.CodeUnknownMethod, "no such API call: GET /v1/x", "05", "banger: unknown command: no such API call: GET /v1/x (op 05)"},
		{api.CodeBadVersion, "no such API call: GET /v0/x", "06", "banger: version mismatch: no such API call: GET /v0/x (op 06)"},
		// The generic failure has no label: the message says it all.
		{api.CodeOperationFailed, "boot timed out", "07", "banger: boot timed out (op 07)"},
		{"", "odd", "08", "banger: odd (op 08)"},
		// An unknown code passes through as it is.
		{"quota_exceeded", "too many VMs", "09", "banger: quota_exceeded: too many VMs (op 09)"},
		// No operation id, no "(op)".
		{api.CodeNotFound, `image "y" not found`, "", `banger: not found: image "y" not found`},
		// The label is not repeated when the message starts with it.
		{api.CodeNotRunning, `not running: vm "x"`, "10", `banger: not running: vm "x" (op 10)`},
		{api.CodeConflict, "Conflict with a running VM", "11", "banger: Conflict with a running VM (op 11)"},
	}
	for _, c := range cases {
		err := &api.Error{Code: c.code, Message: c.msg, OpID: c.op}
		if got := formatError(err, plain); got != c.want {
			t.Errorf("%s: got %q, want %q", c.code, got, c.want)
		}
		if got := formatError(fmt.Errorf("wrapped: %w", err), plain); !strings.HasPrefix(got, "banger: ") || !strings.Contains(got, c.msg) {
			t.Errorf("%s wrapped: got %q", c.code, got)
		}
	}
	if got := formatError(errors.New("no such file"), plain); got != "banger: no such file" {
		t.Errorf("plain error: %q", got)
	}
}

func TestFormatErrorStyled(t *testing.T) {
	t.Parallel()
	err := &api.Error{Code: api.CodeNotFound, Message: `vm "x" not found`, OpID: "abcd1234"}
	want := "\x1b[1;31mbanger:\x1b[0m not found: vm \"x\" not found \x1b[2m(op abcd1234)\x1b[0m"
	if got := formatError(err, style.Forced()); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := formatError(errors.New("boom"), style.Forced()); got != "\x1b[1;31mbanger:\x1b[0m boom" {
		t.Errorf("plain error, styled: %q", got)
	}
}

// The export reaches stdout only when asked with -o - (and stdout is not a
// terminal), and a file otherwise.
func TestExportOutput(t *testing.T) {
	const patch = "diff --git a/x b/x\n"
	f := startFakeDaemon(t, map[string]string{"POST /vms/box/workspace/export": patch})
	code, out, stderr := runIn(t, f.layout, "vm", "workspace", "export", "box", "-o", "-")
	if code != 0 || out != patch {
		t.Fatalf("-o -: code %d out %q err %q", code, out, stderr)
	}
	file := filepath.Join(t.TempDir(), "p.patch")
	code, out, stderr = runIn(t, f.layout, "vm", "workspace", "export", "box", "-o", file)
	if b, _ := os.ReadFile(file); code != 0 || out != "" || string(b) != patch {
		t.Fatalf("-o FILE: code %d out %q err %q file %q", code, out, stderr, b)
	}
}

// TestAgentAuthParams: --agent-auth reads the login files from HOME into
// the create request, with their guest paths.
func TestAgentAuthParams(t *testing.T) {
	d := testenv.Isolate(t)
	t.Setenv("CODEX_HOME", "")
	t.Setenv("CLAUDE_CONFIG_DIR", "")
	if err := os.MkdirAll(filepath.Join(d.Home, ".codex"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.Home, ".codex/auth.json"), []byte(`{"tokens":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var f createFlags
	c := &cobra.Command{Use: "x"}
	f.register(c)
	if err := c.ParseFlags([]string{"--agent-auth", "codex"}); err != nil {
		t.Fatal(err)
	}
	p, err := f.params(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Files) != 1 || p.Files[0].Path != "/root/.codex/auth.json" || string(p.Files[0].Data) != `{"tokens":1}` {
		t.Fatalf("files %+v", p.Files)
	}
	var se bytes.Buffer
	app := &App{Stderr: &se}
	app.warnAgentAuth(f)
	if !strings.Contains(se.String(), "lives in the VM") || !strings.Contains(se.String(), "banger secret (see README)") {
		t.Errorf("warning %q", se.String())
	}
}
