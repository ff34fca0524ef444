package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/client"
	"banger/internal/hosttools"
	"banger/internal/model"
	"banger/internal/network"
	"banger/internal/privhelper"
	"banger/internal/sysinstall"
)

func (a *App) systemCmd() *cobra.Command {
	c := &cobra.Command{Use: "system", Short: "Install banger as system services (bangerd + the root network helper)"}
	c.AddCommand(a.systemInstallCmd(), a.systemStatusCmd(), a.systemRestartCmd(), a.systemUninstallCmd())
	return c
}

// asRoot re-runs this command with sudo after the plan has been shown,
// so that the user authorises a scope they have read.
func (a *App) asRoot(cmd *cobra.Command, extra ...string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	sudo, err := hosttools.Path(hosttools.Sudo)
	if err != nil {
		return fmt.Errorf("this needs root and sudo is not installed: run it as root")
	}
	args := append([]string{"sudo", exe}, os.Args[1:]...)
	args = append(args, extra...)
	fmt.Fprintf(a.Stderr, "\nroot is needed for the steps above; asking sudo.\n")
	return syscall.Exec(sudo, args, os.Environ())
}

func (a *App) systemInstallCmd() *cobra.Command {
	var o sysinstall.Options
	var dryRun, described bool
	c := &cobra.Command{
		Use:   "install [--dry-run] [--owner USER]",
		Short: "Install the binaries and the bangerd and banger-helper systemd services",
		Long: `Install banger as two systemd services:

  bangerd.service        the daemon, running as the owning user
  banger-helper.service  a minimal root helper that only creates the bridge,
                         taps and NAT rules (typed operations over its own
                         socket, callers checked by their credentials)

Restarting or stopping either service never kills running VMs. --dry-run
prints every file and command without touching the system. Without root,
the plan is printed first and then sudo is asked for.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Version = a.Version
			if o.Owner == "" && os.Geteuid() != 0 {
				o.Owner = fmt.Sprint(os.Getuid())
			}
			p, err := sysinstall.PlanInstall(o)
			if err != nil {
				return err
			}
			if !described {
				p.Describe(a.Stdout)
			}
			if dryRun {
				fmt.Fprintln(a.Stdout, "\ndry run: nothing was changed")
				return nil
			}
			if p.NeedsRoot && os.Geteuid() != 0 {
				return a.asRoot(cmd, "--owner", o.Owner, "--described")
			}
			stopOnDemandDaemons(cmd.Context(), p.Owner.UID)
			if err := sysinstall.Apply(cmd.Context(), p, o); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "banger is installed: bangerd runs as %s; check it with `banger system status`\n", p.Owner.Name)
			return nil
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print every file and command, change nothing")
	c.Flags().StringVar(&o.Owner, "owner", "", "user the daemon runs as (default: you, or $SUDO_USER under sudo)")
	c.Flags().StringVar(&o.BinDir, "bin-dir", "", "where to install the binaries (default "+sysinstall.DefaultBinDir+")")
	c.Flags().BoolVar(&described, "described", false, "the plan was already shown (set when re-run through sudo)")
	c.Flags().MarkHidden("described")
	return c
}

// stopOnDemandDaemons stops a daemon the owner started on demand before
// the install, so that it and the service never share the store.
func stopOnDemandDaemons(ctx context.Context, uid int) {
	for _, dir := range []string{fmt.Sprintf("/run/user/%d/banger", uid), fmt.Sprintf("/tmp/banger-%d/banger", uid)} {
		sock := filepath.Join(dir, "bangerd.sock")
		if _, err := os.Stat(sock); err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		client.New(sock).Do(cctx, "POST", "/daemon/stop", nil, nil)
		cancel()
	}
}

func (a *App) systemStatusCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show whether banger is installed and how its services are",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := sysinstall.Status(cmd.Context(), sysinstall.Options{})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(a.Stdout, r)
			}
			r.Describe(a.Stdout)
			return nil
		},
	}
	addJSONFlag(c, &asJSON)
	return c
}

func (a *App) systemRestartCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "restart",
		Short: "Restart banger-helper and bangerd (running VMs stay up)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return a.asRoot(cmd)
			}
			return sysinstall.Restart(cmd.Context(), sysinstall.Options{})
		},
	}
}

// activeVMs names the VMs the daemon at socket runs (running, starting
// or stopping). A daemon that does not answer runs none that it knows of.
func activeVMs(ctx context.Context, socket string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var vms []model.VM
	err := client.New(socket).Do(ctx, "GET", "/vms", nil, &vms)
	if errors.Is(err, client.ErrUnavailable) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, v := range vms {
		switch v.State {
		case model.StateRunning, model.StateStarting, model.StateStopping, model.StatePaused:
			names = append(names, v.Name)
		}
	}
	return names, nil
}

// teardownNetwork removes the bridge, taps and nftables table the helper
// made for the installation meta describes.
func teardownNetwork(ctx context.Context, meta *sysinstall.Metadata) error {
	// The helper recorded ip_forward before turning it on: restore it.
	cfg := network.Config{Bridge: meta.Bridge, ForwardRecord: privhelper.ForwardRecord(meta.HelperSocket)}
	if meta.CIDR != "" {
		p, err := netip.ParsePrefix(meta.CIDR)
		if err != nil {
			return err
		}
		cfg.CIDR = p
	}
	h, err := network.NewHost(cfg)
	if err != nil {
		return err
	}
	return h.Teardown(ctx)
}

func (a *App) systemUninstallCmd() *cobra.Command {
	var purge, dryRun, described, force bool
	c := &cobra.Command{
		Use:   "uninstall [--purge] [--dry-run]",
		Short: "Remove the services and binaries (--purge: also banger's state)",
		Long: `Remove the two services, the binaries and /etc/banger. --purge also removes
banger's system state and the owner's banger state directory (VM disks,
images, kernels). The user's ssh config and keys and banger's config are never
touched.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var o sysinstall.Options
			meta, err := sysinstall.ReadMetadata("/")
			if err == nil {
				o.Owner, o.BinDir = meta.Owner, meta.BinDir
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			} else {
				meta = nil
			}
			// Uninstalling stops the daemon: VMs would keep running with
			// nothing managing them (and --purge would delete their disks).
			var active []string
			if meta != nil {
				if active, err = activeVMs(cmd.Context(), meta.DaemonSocket()); err != nil {
					return fmt.Errorf("ask bangerd which VMs run: %w", err)
				}
			}
			if len(active) > 0 && !force {
				return fmt.Errorf("%d VMs are running (%s): stop them first (banger vm stop NAME), or pass --force to leave them running with nothing managing them", len(active), strings.Join(active, ", "))
			}
			if len(active) > 0 && purge {
				return fmt.Errorf("--purge would delete the disks of running VMs (%s): stop them first", strings.Join(active, ", "))
			}
			p, err := sysinstall.PlanUninstall(o, purge)
			if err != nil {
				return err
			}
			if p.Empty() {
				fmt.Fprintln(a.Stdout, "banger is not installed as a system service: nothing to do")
				return nil
			}
			teardown := meta != nil && len(active) == 0
			if !described {
				p.Describe(a.Stdout)
			}
			if dryRun {
				fmt.Fprintln(a.Stdout, "\ndry run: nothing was changed")
				return nil
			}
			if p.NeedsRoot && os.Geteuid() != 0 {
				return a.asRoot(cmd, "--described")
			}
			if err := sysinstall.Apply(cmd.Context(), p, o); err != nil {
				return err
			}
			if teardown {
				if err := teardownNetwork(cmd.Context(), meta); err != nil {
					fmt.Fprintf(a.Stderr, "banger: warning: remove the bridge, taps and nftables table: %v\n", err)
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "uninstall even though VMs are running (they keep running, unmanaged)")
	c.Flags().BoolVar(&purge, "purge", false, "also remove banger's state (VM disks, images, kernels)")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be removed, change nothing")
	c.Flags().BoolVar(&described, "described", false, "the plan was already shown (set when re-run through sudo)")
	c.Flags().MarkHidden("described")
	return c
}
