package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/config"
	"banger/internal/hosttools"
	"banger/internal/sysinstall"
	"banger/internal/updater"
)

func (a *App) updateCmd() *cobra.Command {
	var check, dryRun, rollback, force bool
	var to, manifestURL, pubkeyFile string
	c := &cobra.Command{
		Use:   "update [--check] [--to VERSION] [--dry-run] [--rollback]",
		Short: "Update banger to a signed release, keeping running VMs up",
		Long: `Update banger to the latest (or --to) release.

The release manifest names an archive and its SHA256SUMS; the SHA256SUMS file
must carry a valid ECDSA P-256 signature by banger's release key (built into
this binary) and the archive must match its hash. Only then are the binaries
swapped (atomically, keeping NAME.previous copies) and the services restarted.
If the new daemon does not come up healthy, the previous binaries are restored
and restarted. Running VMs stay up throughout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			// A rollback puts back the local .previous binaries: it
			// needs no release channel.
			opts, err := a.updateOptions(manifestURL, pubkeyFile, !rollback)
			if err != nil {
				return err
			}
			opts.Version, opts.DryRun, opts.Force = to, dryRun, force
			switch {
			case rollback:
				res, err := updater.Rollback(ctx, opts)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.Stdout, "rolled back to %s\n", res.To)
				return nil
			case check:
				res, err := updater.Check(ctx, opts)
				if err != nil {
					return err
				}
				if res.UpdateAvailable {
					fmt.Fprintf(a.Stdout, "update available: %s -> %s\n", res.Current, res.Target.Version)
				} else {
					fmt.Fprintf(a.Stdout, "banger %s is up to date (latest %s)\n", res.Current, res.Latest)
				}
				return nil
			}
			res, err := updater.Update(ctx, opts)
			var utd *updater.UpToDateError
			if errors.As(err, &utd) {
				fmt.Fprintf(a.Stdout, "banger %s is up to date\n", utd.Current)
				return nil
			}
			if err != nil {
				return err
			}
			if res.DryRun {
				fmt.Fprintf(a.Stdout, "dry run: %s -> %s verified; nothing changed\n", res.From, res.To)
				return nil
			}
			fmt.Fprintf(a.Stdout, "updated %s -> %s in %s\n", res.From, res.To, res.BinDir)
			return nil
		},
	}
	f := c.Flags()
	f.BoolVar(&check, "check", false, "only say whether an update is available")
	f.StringVar(&to, "to", "", "install this version (default: the latest stable)")
	f.BoolVar(&dryRun, "dry-run", false, "download and verify everything, change nothing")
	f.BoolVar(&rollback, "rollback", false, "go back to the .previous binaries of the last update")
	f.BoolVar(&force, "force", false, "reinstall even when already at that version")
	// For tests and private release channels; not advertised.
	f.StringVar(&manifestURL, "manifest-url", "", "release manifest URL (default: update_url from the config)")
	f.StringVar(&pubkeyFile, "pubkey-file", "", "PEM public key to verify releases with instead of the built-in one")
	f.MarkHidden("manifest-url")
	f.MarkHidden("pubkey-file")
	return c
}

// updateOptions wires the updater to this installation: where the
// binaries are, and how to restart and health-check the services (systemd
// units after `system install`, else the on-demand daemon). needChannel
// makes a missing release manifest URL an error (Check and Update need
// one; Rollback does not).
func (a *App) updateOptions(manifestURL, pubkeyFile string, needChannel bool) (updater.Options, error) {
	var opts updater.Options
	if manifestURL == "" {
		cfg, err := config.Load(a.layout.ConfigFile())
		if err != nil {
			return opts, err
		}
		manifestURL = cfg.UpdateURL
	}
	if manifestURL == "" && needChannel {
		return opts, fmt.Errorf("no release channel is configured: banger has no published releases yet; set update_url in %s to a release manifest", a.layout.ConfigFile())
	}
	if pubkeyFile != "" {
		b, err := os.ReadFile(pubkeyFile)
		if err != nil {
			return opts, err
		}
		opts.PublicKeyPEM = string(b)
	}
	exe, err := os.Executable()
	if err != nil {
		return opts, err
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return opts, err
	}
	binDir := filepath.Dir(exe)
	opts.ManifestURL = manifestURL
	opts.CurrentVersion = a.Version
	opts.BinDir = binDir
	opts.Progress = func(stage updater.Stage, detail string) {
		if detail != "" {
			fmt.Fprintf(a.Stderr, "  %-10s %s\n", stage, detail)
		} else {
			fmt.Fprintf(a.Stderr, "  %s\n", stage)
		}
	}
	if meta, err := sysinstall.ReadMetadata("/"); err == nil && meta.BinDir == binDir {
		// Installed as services: systemd restarts them, and the health
		// check talks to the owner's daemon with the owner's store.
		so := sysinstall.Options{BinDir: meta.BinDir}
		cl := client.New(meta.DaemonSocket())
		env := append(os.Environ(), "XDG_STATE_HOME="+filepath.Dir(meta.StateDir), "XDG_CONFIG_HOME="+filepath.Dir(meta.ConfigDir))
		opts.Restart = func(ctx context.Context) error { return sysinstall.Restart(ctx, so) }
		opts.Health = func(ctx context.Context, version string) error {
			return daemonHealthy(ctx, cl, meta.DaemonSocket(), binDir, env, version)
		}
		return opts, nil
	}
	opts.Restart = func(ctx context.Context) error { return a.restartDaemon(ctx, binDir) }
	opts.Health = func(ctx context.Context, version string) error {
		return daemonHealthy(ctx, a.client, a.layout.Socket(), binDir, os.Environ(), version)
	}
	return opts, nil
}

// restartDaemon stops the on-demand daemon (VMs keep running) and starts
// bangerd from binDir.
func (a *App) restartDaemon(ctx context.Context, binDir string) error {
	var p api.Ping
	if err := a.client.Do(ctx, "GET", "/ping", nil, &p); err == nil {
		if err := a.stopDaemon(ctx, p.PID, 30*time.Second); err != nil {
			return err
		}
	}
	return a.startDaemonFrom(filepath.Join(binDir, "bangerd"))
}

// daemonHealthy waits for the daemon to answer as version (any when
// empty), then checks the store's migrations with that bangerd.
func daemonHealthy(ctx context.Context, cl *client.Client, socket, binDir string, env []string, version string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var p api.Ping
	var err error
	for {
		if err = cl.Do(ctx, "GET", "/ping", nil, &p); err == nil && (version == "" || p.Version == version) {
			break
		}
		if err == nil {
			err = fmt.Errorf("daemon answers as %s, want %s", p.Version, version)
		}
		select {
		case <-ctx.Done():
			if errors.Is(err, client.ErrUnavailable) {
				return fmt.Errorf("the new bangerd does not answer on %s", socket)
			}
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "bangerd"), "--check-migrations")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return hosttools.OutputError("bangerd --check-migrations", err, out)
	}
	return nil
}
