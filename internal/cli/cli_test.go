package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
)

// run invokes the CLI against an isolated, empty installation. No daemon
// exists there, so anything that reaches the daemon would try to start one;
// the cases below must be refused before that.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_STATE_HOME", filepath.Join(dir, "state"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	var so, se bytes.Buffer
	app := &App{Version: "test", Stdin: strings.NewReader(""), Stdout: &so, Stderr: &se}
	root := app.rootCmd()
	root.SetArgs(args)
	root.SetOut(&so)
	root.SetErr(&se)
	code := 0
	if err := root.Execute(); err != nil {
		code = 1
		se.WriteString(formatError(err))
	}
	if _, err := os.Stat(filepath.Join(dir, "run/banger/bangerd.sock")); err == nil {
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
		{[]string{"vm", "create", "--vcpu", "0"}, "--vcpu must be at least 1"},
		{[]string{"vm", "create", "--memory", "12"}, "--memory must be at least 128"},
		{[]string{"vm", "set", "box"}, "nothing to change"},
		{[]string{"vm", "exec", "box"}, "no command given"},
		{[]string{"kernel", "import", "k"}, "--from is required"},
		{[]string{"image", "build", "img"}, "exactly one of"},
		{[]string{"image", "build", "Bad", "--from-dir", "/"}, "invalid image name"},
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
	err := &api.Error{Code: api.CodeNotFound, Message: `vm "x" not found`, OpID: "abcd1234"}
	if got := formatError(err); got != `banger: vm "x" not found (op abcd1234)` {
		t.Errorf("got %q", got)
	}
}
