package cli

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// commandGroups is the argument path (without "banger") of every command
// of the real tree that has subcommands, at any depth, the root (an empty
// path) included, so that a group added later is covered too.
func commandGroups(t *testing.T) [][]string {
	t.Helper()
	root := (&App{Version: "test"}).rootCmd()
	// cobra adds its completion command when it executes; so does Main.
	root.InitDefaultCompletionCmd()
	var groups [][]string
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		if !c.HasSubCommands() {
			return
		}
		groups = append(groups, path)
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string(nil), path...), sub.Name()))
		}
	}
	walk(root, nil)
	if len(groups) < 5 {
		t.Fatalf("found only %d command groups: %v", len(groups), groups)
	}
	return groups
}

func TestUnknownSubcommandRefused(t *testing.T) {
	t.Parallel()
	layout := testLayout(t)
	for _, g := range commandGroups(t) {
		name := strings.Join(append([]string{"banger"}, g...), " ")
		code, out, stderr := runIn(t, layout, append(append([]string(nil), g...), "nonsense")...)
		want := `unknown command "nonsense" for "` + name + `"`
		if code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("%s nonsense: code %d, stderr %q; want an error %q", name, code, stderr, want)
		}
		if out != "" {
			t.Errorf("%s nonsense printed %q on stdout", name, out)
		}
		// `banger help GROUP nonsense` is refused the same way.
		code, _, stderr = runIn(t, layout, append(append([]string{"help"}, g...), "nonsense")...)
		if code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("help %v nonsense: code %d, stderr %q; want %q", g, code, stderr, want)
		}
		// The group called bare still shows its help, and succeeds.
		code, out, _ = runIn(t, layout, g...)
		if code != 0 || !strings.Contains(out, "Available Commands:") {
			t.Errorf("%s: code %d, stdout %q; want its help", name, code, out)
		}
		if strings.Contains(out, name+" [flags]") {
			t.Errorf("%s: usage shows %q, a group only takes commands:\n%s", name, name+" [flags]", out)
		}
	}
}

func TestUnknownSubcommandSuggests(t *testing.T) {
	t.Parallel()
	layout := testLayout(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"vm", "lsit"}, `unknown command "lsit" for "banger vm"; did you mean "list"`},
		{[]string{"image", "pul"}, `unknown command "pul" for "banger image"; did you mean "pull"?`},
		{[]string{"vm", "workspace", "exprot"}, `did you mean "export"?`},
		{[]string{"vmm"}, `unknown command "vmm" for "banger"; did you mean "vm"?`},
		{[]string{"vm", "zzzzzz"}, `unknown command "zzzzzz" for "banger vm"; see 'banger vm --help'`},
	}
	for _, c := range cases {
		code, _, stderr := runIn(t, layout, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: code %d, stderr %q; want %q", c.args, code, stderr, c.want)
		}
	}
}

func TestHelpTopics(t *testing.T) {
	t.Parallel()
	layout := testLayout(t)
	for _, args := range [][]string{{"help"}, {"help", "vm"}, {"help", "vm", "ls"}, {"help", "image", "pull"}} {
		if code, out, stderr := runIn(t, layout, args...); code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: code %d, stdout %q, stderr %q", args, code, out, stderr)
		}
	}
}
