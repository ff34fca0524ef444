package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"banger/internal/mcpserver"
)

// mcpState records the sandboxes made through banger mcp.
func (a *App) mcpState() mcpserver.State {
	return mcpserver.State{Path: filepath.Join(a.layout.State, "mcp", "sandboxes.json")}
}

func (a *App) mcpCmd() *cobra.Command {
	var allow []string
	var cleanup bool
	var image string
	c := &cobra.Command{
		Use:   "mcp [--allow-path DIR]... [--image NAME] | mcp --cleanup",
		Short: "Serve sandboxes to a coding agent over the Model Context Protocol (stdio)",
		Long: `Serve banger sandboxes to an MCP client (a coding agent) over stdin/stdout.

The tools create sandboxes, run commands, read, write and list files, copy a
host git repository in (only from directories given with --allow-path) and
export the guest's edits as a patch, and run long-lived sessions. Sandboxes
made here are named mcp-... and recorded; they are deleted when the MCP
session ends. --cleanup deletes every recorded one left behind (e.g. after
a crash), including those of MCP servers still running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			if cleanup && len(allow) > 0 {
				return fmt.Errorf("--cleanup takes no --allow-path: it serves nothing")
			}
			al, err := mcpserver.NewAllowlist(allow)
			if err != nil {
				return err
			}
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			if cleanup {
				deleted, err := mcpserver.CleanupAll(ctx, a.client, a.mcpState())
				for _, n := range deleted {
					fmt.Fprintf(a.Stdout, "deleted %s\n", n)
				}
				return err
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			s := mcpserver.New(mcpserver.Options{
				Daemon: a.client, Allow: al, State: a.mcpState(), Image: image,
				Version: a.Version, Log: a.Stderr,
			})
			return s.Run(ctx, &mcp.StdioTransport{})
		},
	}
	c.Flags().StringArrayVar(&allow, "allow-path", nil, "host directory workspaces may be prepared from (repeatable; symlinks are resolved)")
	c.Flags().BoolVar(&cleanup, "cleanup", false, "delete every sandbox an MCP server made and exit")
	c.Flags().StringVar(&image, "image", mcpserver.DefaultImage, "image of sandboxes created without one")
	return c
}
