package cli

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// completions runs `banger __complete ARGS...` and returns the offered
// words (descriptions dropped) and the directive line.
func completions(t *testing.T, d *fakeDaemon, args ...string) ([]string, string) {
	t.Helper()
	code, out, errOut := runIn(t, d.layout, append([]string{"__complete"}, args...)...)
	if code != 0 {
		t.Fatalf("__complete %v: code %d: %s", args, code, errOut)
	}
	var words []string
	directive := ""
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, ":") {
			directive = l
			continue
		}
		if l != "" {
			words = append(words, strings.SplitN(l, "\t", 2)[0])
		}
	}
	return words, directive
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	d := startFakeDaemon(t, fixtures())
	vms := []string{"alpha", "long-vm-name"}
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"vm", "show", ""}, vms},
		{[]string{"vm", "show", "lo"}, []string{"long-vm-name"}},
		{[]string{"vm", "show", "alpha", ""}, nil}, // one NAME only
		{[]string{"vm", "start", ""}, vms},
		{[]string{"vm", "stop", ""}, vms},
		{[]string{"vm", "kill", ""}, vms},
		{[]string{"vm", "restart", ""}, vms},
		{[]string{"vm", "delete", "alpha", ""}, []string{"long-vm-name"}}, // not twice
		{[]string{"vm", "rm", ""}, vms},
		{[]string{"vm", "ssh", ""}, vms},
		{[]string{"vm", "exec", ""}, vms},
		{[]string{"vm", "set", ""}, vms},
		{[]string{"vm", "logs", ""}, vms},
		{[]string{"vm", "ports", ""}, vms},
		{[]string{"vm", "workspace", "prepare", ""}, vms},
		{[]string{"vm", "workspace", "export", ""}, vms},
		{[]string{"vm", "session", "list", ""}, vms},
		{[]string{"vm", "session", "start", ""}, vms},
		{[]string{"vm", "session", "show", ""}, vms},
		{[]string{"vm", "session", "show", "alpha", ""}, []string{"agent"}},
		{[]string{"vm", "session", "attach", "alpha", "a"}, []string{"agent"}},
		{[]string{"image", "show", ""}, []string{"debian"}},
		{[]string{"image", "rm", ""}, []string{"debian"}},
		{[]string{"image", "delete", ""}, []string{"debian"}},
		{[]string{"kernel", "show", ""}, []string{"k6"}},
		{[]string{"kernel", "rm", ""}, []string{"k6"}},
		{[]string{"vm", "create", "--image", ""}, []string{"debian"}},
		{[]string{"vm", "run", "--image", "d"}, []string{"debian"}},
		{[]string{"vm", "create", "--engine", ""}, []string{"auto", "qemu", "firecracker"}},
		{[]string{"image", "build", "x", "--kernel", ""}, []string{"k6"}},
		{[]string{"image", "register", "x", "--kernel", ""}, []string{"k6"}},
	}
	for _, c := range cases {
		words, directive := completions(t, d, c.args...)
		if !slices.Equal(words, c.want) || directive != ":4" {
			t.Errorf("%v: got %q %s, want %q :4", c.args, words, directive, c.want)
		}
	}
	if d.called("GET /ping") {
		t.Errorf("completion went through ensureDaemon")
	}
	// Descriptions ride along for zsh and fish.
	_, out, _ := runIn(t, d.layout, "__complete", "vm", "show", "")
	if !strings.Contains(out, "alpha\trunning\n") {
		t.Errorf("no description: %q", out)
	}
	// The shell scripts themselves still come from cobra.
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if code, out, _ := runIn(t, d.layout, "completion", sh); code != 0 || !strings.Contains(out, "banger") {
			t.Errorf("completion %s: code %d", sh, code)
		}
	}
}

func TestCompletionWithoutDaemon(t *testing.T) {
	t.Parallel()
	l := testLayout(t)
	start := time.Now()
	code, out, errOut := runIn(t, l, "__complete", "vm", "show", "")
	if code != 0 || strings.TrimSpace(out) != ":4" {
		t.Errorf("code %d, out %q, stderr %q; want no suggestions and :4", code, out, errOut)
	}
	if time.Since(start) > completionTimeout {
		t.Errorf("took %s", time.Since(start))
	}
	// Starting a daemon would have made the state directory (its log).
	for _, p := range []string{l.State, l.Socket(), l.DaemonLog()} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s exists: a daemon was started", p)
		}
	}
}
