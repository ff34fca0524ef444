package cli

import (
	"fmt"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/model"
)

// snapshotCmd is `banger snapshot`: save VMs and manage the snapshots.
func (a *App) snapshotCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshot",
		Short: "Save a VM's memory, devices and disks, and manage the snapshots",
		Long: `A snapshot is a VM saved while paused: its memory and device state (written
by the VMM) and copies of its root and work disks, consistent with each
other. It records the engine, VMM version, kernel, image and size it needs;
only the same engine and VMM version can restore it.`,
	}
	var name string
	var keepPaused bool
	create := &cobra.Command{
		Use:   "create VM [--name SNAP] [--keep-paused]",
		Short: "Snapshot a running or paused VM",
		Long: `Snapshot a running or paused VM. The VM is paused while its state is saved
and its disks are copied (the time is shown as "paused"), then runs on,
unless it was paused already or --keep-paused is given.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name != "" {
				if err := model.ValidateName(name); err != nil {
					return fmt.Errorf("invalid snapshot name: %w", err)
				}
			}
			var sn model.Snapshot
			if err := a.call(cmd.Context(), "POST", "/snapshots", api.SnapshotCreateParams{VM: args[0], Name: name, KeepPaused: keepPaused}, &sn); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "%s\tstate %s\tdisks %s\tpaused %s\n", sn.Name, humanBytes(sn.StateBytes), humanBytes(sn.DiskBytes),
				(time.Duration(sn.SaveMS) * time.Millisecond).String())
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "the snapshot's name (default: VM-<random>)")
	create.Flags().BoolVar(&keepPaused, "keep-paused", false, "leave the VM paused afterwards")

	var listJSON bool
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List snapshots", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var sns []model.Snapshot
			if err := a.call(cmd.Context(), "GET", "/snapshots", nil, &sns); err != nil {
				return err
			}
			if listJSON {
				return printJSONList(a.Stdout, sns)
			}
			t := newTable(a.Stdout, "name", "vm", "engine", "image", "memory", "state", "disks", "taken")
			for _, s := range sns {
				t.row(s.Name, s.VMName, s.Engine+" "+s.VMMVersion, s.Image, fmt.Sprintf("%d MiB", s.MemoryMiB),
					humanBytes(s.StateBytes), humanBytes(s.DiskBytes), ago(s.CreatedAt))
			}
			return t.flush()
		},
	}
	addJSONFlag(list, &listJSON)

	var showJSON bool
	show := &cobra.Command{
		Use: "show SNAP", Short: "Show a snapshot", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var s model.Snapshot
			if err := a.call(cmd.Context(), "GET", "/snapshots/"+url.PathEscape(args[0]), nil, &s); err != nil {
				return err
			}
			if showJSON {
				return printJSON(a.Stdout, s)
			}
			t := newTable(a.Stdout)
			t.row("name", s.Name)
			t.row("id", s.ID)
			t.row("vm", s.VMName+" ("+s.VMID+")")
			t.row("engine", s.Engine)
			t.row("vmm version", s.VMMVersion)
			t.row("kernel", s.Kernel)
			t.row("image", s.Image)
			t.row("vcpu", s.VCPU)
			t.row("memory", fmt.Sprintf("%d MiB", s.MemoryMiB))
			t.row("state", humanBytes(s.StateBytes))
			t.row("disks", humanBytes(s.DiskBytes))
			t.row("paused for", (time.Duration(s.SaveMS) * time.Millisecond).String())
			t.row("taken", timestamp(s.CreatedAt))
			return t.flush()
		},
	}
	addJSONFlag(show, &showJSON)
	rm := &cobra.Command{
		Use: "rm SNAP", Aliases: []string{"delete"}, Short: "Remove a snapshot and its files", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "DELETE", "/snapshots/"+url.PathEscape(args[0]), nil, nil)
		},
	}
	c.AddCommand(create, list, show, rm)
	return c
}
