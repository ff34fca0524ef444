package cli

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/agent"
	"banger/internal/agentauth"
	"banger/internal/engine"
	"banger/internal/model"
)

// completionTimeout bounds a completion's calls to the daemon: a shell
// waits for it.
const completionTimeout = 2 * time.Second

// candidate is one name offered to the shell, with a short description.
type candidate struct{ name, desc string }

// lister fetches the candidates for the argument being completed (args
// are the positional arguments before it).
type lister func(ctx context.Context, args []string) ([]candidate, error)

// offer asks the daemon for candidates matching toComplete. It uses the
// client directly and never starts a daemon: when none answers, it offers
// nothing. Names in skip are left out. Files are never offered.
func (a *App) offer(cmd *cobra.Command, args []string, toComplete string, skip []string, list lister) ([]cobra.Completion, cobra.ShellCompDirective) {
	if err := a.setup(); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	cands, err := list(ctx, args)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, c := range cands {
		if !strings.HasPrefix(c.name, toComplete) || slices.Contains(skip, c.name) {
			continue
		}
		if c.desc == "" {
			out = append(out, c.name)
		} else {
			out = append(out, cobra.CompletionWithDesc(c.name, c.desc))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeArgs completes the first n positional arguments (every one when
// n < 0) from list, not offering a name twice.
func (a *App) completeArgs(n int, list lister) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if n >= 0 && len(args) >= n {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return a.offer(cmd, args, toComplete, args, list)
	}
}

// completeVMArgs completes VM names; completeImageArgs image names;
// completeKernelArgs kernel names.
func (a *App) completeVMArgs(n int) cobra.CompletionFunc { return a.completeArgs(n, a.vmNames) }

func (a *App) completeImageArgs(n int) cobra.CompletionFunc {
	return a.completeArgs(n, a.imageNames)
}

func (a *App) completeKernelArgs(n int) cobra.CompletionFunc {
	return a.completeArgs(n, a.kernelNames)
}

// completeSessionArgs completes NAME SESSION: a VM, then one of its
// sessions.
func (a *App) completeSessionArgs(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	switch len(args) {
	case 0:
		return a.offer(cmd, args, toComplete, nil, a.vmNames)
	case 1:
		return a.offer(cmd, args, toComplete, nil, a.sessionNames)
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}

// completeImageFlag and completeKernelFlag complete --image and --kernel.
func (a *App) completeImageFlag(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return a.offer(cmd, args, toComplete, nil, a.imageNames)
}

func (a *App) completeKernelFlag(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return a.offer(cmd, args, toComplete, nil, a.kernelNames)
}

// completeCreateFlags registers the completions of createFlags.
func (a *App) completeCreateFlags(c *cobra.Command) {
	c.RegisterFlagCompletionFunc("image", a.completeImageFlag)
	fixed := func(choices ...string) cobra.CompletionFunc {
		return cobra.FixedCompletions(choices, cobra.ShellCompDirectiveNoFileComp)
	}
	c.RegisterFlagCompletionFunc("engine", fixed(engine.Choices()...))
	c.RegisterFlagCompletionFunc("network", fixed("bridge", "user", "none"))
	c.RegisterFlagCompletionFunc("wait", fixed("agent", "ssh", "system"))
	c.RegisterFlagCompletionFunc("agent-auth", fixed(agentauth.Names()...))
}

func (a *App) vmNames(ctx context.Context, _ []string) ([]candidate, error) {
	var vms []model.VM
	if err := a.client.Do(ctx, "GET", "/vms", nil, &vms); err != nil {
		return nil, err
	}
	out := make([]candidate, len(vms))
	for i, v := range vms {
		out[i] = candidate{v.Name, string(v.State)}
	}
	return out, nil
}

func (a *App) imageNames(ctx context.Context, _ []string) ([]candidate, error) {
	var imgs []model.Image
	if err := a.client.Do(ctx, "GET", "/images", nil, &imgs); err != nil {
		return nil, err
	}
	out := make([]candidate, len(imgs))
	for i, img := range imgs {
		out[i] = candidate{img.Name, "kernel " + img.Kernel}
	}
	return out, nil
}

func (a *App) kernelNames(ctx context.Context, _ []string) ([]candidate, error) {
	var ks []model.Kernel
	if err := a.client.Do(ctx, "GET", "/kernels", nil, &ks); err != nil {
		return nil, err
	}
	out := make([]candidate, len(ks))
	for i, k := range ks {
		out[i] = candidate{k.Name, k.Version}
	}
	return out, nil
}

// sessionNames lists the sessions of the VM named by args[0].
func (a *App) sessionNames(ctx context.Context, args []string) ([]candidate, error) {
	var ss []agent.SessionInfo
	if err := a.client.Do(ctx, "GET", sessionPath(args[0], "", ""), nil, &ss); err != nil {
		return nil, err
	}
	out := make([]candidate, len(ss))
	for i, s := range ss {
		out[i] = candidate{s.Name, s.State}
	}
	return out, nil
}
