package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// refuseUnknownSubcommands makes every command group under root (every
// command with subcommands, root included, at any depth) refuse an unknown
// subcommand with an error naming it and the closest match. Cobra checks
// this only on the root: a group without a Run of its own prints its help
// and succeeds, so a script with a typo would carry on as if the command
// had worked. It also replaces cobra's help command, which succeeds on an
// unknown topic. Call it once the tree is complete; it adds cobra's
// default completion command first so that this group is covered too.
func refuseUnknownSubcommands(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	root.SetHelpCommand(helpCmd())
	walkGroups(root, func(c *cobra.Command) {
		if c.Runnable() {
			// A group that runs itself takes its own arguments.
			return
		}
		// Cobra only checks the arguments of a runnable command: the
		// group runs, to show its help when called bare.
		c.Args = noSubcommand
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[groupAnnotation] = "true"
	})
	// The usage of such a group still reads "banger vm [command]" only,
	// not also "banger vm [flags]" as for a command that does something.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}",
		`{{if and .Runnable (not (index .Annotations "`+groupAnnotation+`"))}}`, 1))
}

// groupAnnotation marks the command groups refuseUnknownSubcommands made
// runnable.
const groupAnnotation = "banger.group"

// walkGroups calls fn on c and on every command group below it.
func walkGroups(c *cobra.Command, fn func(*cobra.Command)) {
	if !c.HasSubCommands() {
		return
	}
	fn(c)
	for _, sub := range c.Commands() {
		walkGroups(sub, fn)
	}
}

// noSubcommand is the argument check of a command group: any argument
// left once cobra has looked for a subcommand is an unknown one.
func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return unknownCommand(cmd, args[0])
}

// unknownCommand is the error for name typed where a subcommand of cmd
// belongs, with cobra's suggestions (edit distance or prefix).
func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		msg += "; did you mean " + quoteAll(s) + "?"
	} else {
		msg += fmt.Sprintf("; see '%s --help'", cmd.CommandPath())
	}
	return fmt.Errorf("%s", msg)
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, " or ")
}

// helpCmd is `banger help [COMMAND...]`: cobra's own prints the usage and
// succeeds when the topic does not exist.
func helpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			var out []cobra.Completion
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd := c.Root()
			for _, name := range args {
				next := findSub(cmd, name)
				if next == nil {
					return unknownCommand(cmd, name)
				}
				cmd = next
			}
			cmd.InitDefaultHelpFlag()
			cmd.InitDefaultVersionFlag()
			return cmd.Help()
		},
	}
}

// findSub is cmd's subcommand called name (or with that alias), or nil.
func findSub(cmd *cobra.Command, name string) *cobra.Command {
	for _, sub := range cmd.Commands() {
		if sub.Name() == name || sub.HasAlias(name) {
			return sub
		}
	}
	return nil
}
