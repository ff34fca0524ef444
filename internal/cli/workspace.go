package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/fsutil"
	"banger/internal/model"
	"banger/internal/workspace"
)

// inspect plans a workspace and warns about a dirty tree.
func (a *App) inspect(ctx context.Context, path string, o workspace.Options) (*workspace.Plan, error) {
	plan, err := workspace.Inspect(ctx, path, o)
	if err != nil {
		if errors.Is(err, workspace.ErrNotRepo) {
			return nil, fmt.Errorf("%s is not inside a git repository: a workspace is a git work tree", path)
		}
		return nil, err
	}
	if plan.Dirty {
		fmt.Fprintf(a.Stderr, "banger: %s %s has uncommitted changes; they are sent as they are\n", a.errStyle().Warn("warning:"), plan.Root)
	}
	return plan, nil
}

// uploadStage names the client's workspace upload in progress output.
const uploadStage = "upload_workspace"

// sendTar streams the plan as stdin frames, ended by an empty frame,
// reporting bytes sent to progress (when not nil).
func sendTar(ctx context.Context, plan *workspace.Plan, fw *agent.FrameWriter, progress func(api.Progress)) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(workspace.WriteTar(ctx, plan, pw)) }()
	buf := make([]byte, 256<<10)
	start := time.Now()
	// The stream is the files, a tar header and a blob-plan line per file
	// and a small .git (HEAD's blobs travel as the files themselves). The
	// estimate only shapes the bar; the last event carries the real count.
	estimate := plan.TotalBytes + 1600*int64(len(plan.Files)) + 64<<10
	var sent int64
	for {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			if werr := fw.Write(agent.FrameStdin, buf[:n]); werr != nil {
				pr.CloseWithError(werr)
				return werr
			}
			sent += int64(n)
			if progress != nil {
				progress(api.Progress{Stage: uploadStage, Current: sent, Total: max(estimate, sent)})
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if progress != nil {
				progress(api.Progress{Stage: uploadStage, Current: sent, Total: sent, DurationMS: max(1, time.Since(start).Milliseconds())})
			}
			return fw.Write(agent.FrameStdin, nil)
		}
		if err != nil {
			return err
		}
	}
}

// prepare sends a workspace to a running VM.
func (a *App) prepare(ctx context.Context, vm string, plan *workspace.Plan) error {
	conn, r, err := a.client.Upgrade(ctx, vmPath(vm, "/workspace"), plan.Params())
	if err != nil {
		return err
	}
	defer conn.Close()
	fw := agent.NewFrameWriter(conn)
	pr := a.progress(false)
	defer pr.Done()
	go sendTar(ctx, plan, fw, pr.Event)
	for {
		t, p, err := agent.ReadFrame(r)
		if err != nil {
			return fmt.Errorf("workspace upload ended early: %w", err)
		}
		switch t {
		case agent.FrameError:
			var ae api.Error
			if err := json.Unmarshal(p, &ae); err != nil {
				return fmt.Errorf("bad error from daemon: %w", err)
			}
			return &ae
		case agent.FrameExit:
			return nil
		}
	}
}

// autoPrepare re-syncs the workspace recorded for vm, with the options
// (mode, untracked files) of the prepare it repeats.
func (a *App) autoPrepare(ctx context.Context, vm string) error {
	var v model.VM
	if err := a.client.Do(ctx, "GET", vmPath(vm, ""), nil, &v); err != nil {
		return err
	}
	if v.WorkspacePath == "" {
		return fmt.Errorf("vm %q has no workspace to re-sync; prepare one with `banger vm workspace prepare %s PATH`", v.Name, v.Name)
	}
	plan, err := a.inspect(ctx, v.WorkspacePath, workspace.Options{Mode: v.WorkspaceMode, IncludeUntracked: v.WorkspaceIncludeUntracked})
	if err != nil {
		return err
	}
	return a.prepare(ctx, v.Name, plan)
}

func (a *App) workspaceCmd() *cobra.Command {
	c := &cobra.Command{Use: "workspace", Short: "Ship a git repository into a VM and take the guest's edits back"}
	var o workspace.Options
	var dryRun bool
	prep := &cobra.Command{
		Use:   "prepare NAME [PATH]",
		Short: "Put the repository at PATH (default .) at /root/repo in the VM",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "."
			if len(args) == 2 {
				path = args[1]
			}
			ctx := cmd.Context()
			plan, err := a.inspect(ctx, path, o)
			if err != nil {
				return err
			}
			if dryRun {
				// Touches no VM, not even to check that it exists.
				t := newTable(a.Stdout)
				for _, f := range plan.Files {
					t.row(f.Size, f.Path)
				}
				t.flush()
				fmt.Fprintf(a.Stdout, "%d files, %s (plus .git at %s)\n", len(plan.Files), humanSize(plan.TotalBytes), shortHead(plan.Head))
				return nil
			}
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			if err := a.prepare(ctx, args[0], plan); err != nil {
				return err
			}
			fmt.Fprintf(a.Stderr, "prepared %s: %d files, %s at %s\n", workspace.GuestDir, len(plan.Files), humanSize(plan.TotalBytes), shortHead(plan.Head))
			return nil
		},
	}
	prep.Flags().BoolVar(&o.IncludeUntracked, "include-untracked", false, "also send untracked files (never ignored ones)")
	prep.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be sent, touching no VM")
	prep.Flags().StringVar(&o.Mode, "mode", "copy", "copy, or full_copy to include submodules")
	prep.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 1 {
			return nil, cobra.ShellCompDirectiveFilterDirs // PATH: a host directory
		}
		return a.completeVMArgs(1)(cmd, args, toComplete)
	}

	var base, output string
	export := &cobra.Command{
		Use:   "export NAME",
		Short: "Write the guest's changes to /root/repo as a patch for `git apply`",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			// The patch is written by the guest: it never goes raw to a
			// terminal, where escape sequences could rewrite what the
			// user sees.
			switch {
			case output == "":
				return api.Errorf(api.CodeBadRequest, "give -o FILE for the patch (or -o - to write it to stdout)")
			case output == "-" && isTTY(a.Stdout):
				return api.Errorf(api.CodeBadRequest, "refusing to print a guest-written patch to a terminal: redirect stdout or use -o FILE")
			}
			var out io.Writer = a.Stdout
			var f *fsutil.AtomicFile
			if output != "-" {
				var err error
				if f, err = fsutil.CreateAtomic(output, 0o600); err != nil {
					return err
				}
				defer f.Abort() // a no-op once committed
				out = f
			}
			if err := a.call(ctx, "POST", vmPath(args[0], "/workspace/export"), api.ExportParams{BaseCommit: base}, out); err != nil {
				return err
			}
			if f != nil {
				return f.Commit()
			}
			return nil
		},
	}
	export.Flags().StringVar(&base, "base-commit", "", "include the guest's commits since this commit")
	export.Flags().StringVarP(&output, "output", "o", "", "write the patch to FILE (required; - for stdout, which must not be a terminal)")
	export.ValidArgsFunction = a.completeVMArgs(1)
	c.AddCommand(prep, export)
	return c
}

func shortHead(h string) string {
	if h == "" {
		return "no commit"
	}
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
