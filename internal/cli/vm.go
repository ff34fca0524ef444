package cli

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/egress/policy"
	"banger/internal/engine"
	"banger/internal/model"
	"banger/internal/portfwd"
)

func (a *App) vmCmd() *cobra.Command {
	c := &cobra.Command{Use: "vm", Short: "Create, run and manage VMs"}
	c.AddCommand(a.vmCreateCmd(), a.vmStartCmd(), a.vmStopCmd(), a.vmRestartCmd(), a.vmKillCmd(),
		a.vmPauseCmd(), a.vmResumeCmd(),
		a.vmDeleteCmd(), a.vmShowCmd(), a.vmListCmd(), a.vmSetCmd(), a.vmPruneCmd(), a.vmLogsCmd(),
		a.vmExecCmd(), a.vmRunCmd(), a.workspaceCmd(), a.sessionCmd(), a.vmSSHCmd(), a.vmPortsCmd(), a.vmCpCmd(), a.vmEgressCmd())
	return c
}

func vmPath(name string, suffix string) string {
	return "/vms/" + url.PathEscape(name) + suffix
}

// createFlags are shared by vm create and vm run.
type createFlags struct {
	name, image, disk, network, engine, wait string
	vcpu, memory                             int
	nat                                      bool
	publish                                  []string
	egress                                   egressFlags
}

func (f *createFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.name, "name", "", "VM name (1-63 of a-z 0-9 -); generated when empty")
	c.Flags().StringVar(&f.image, "image", "", "image to boot (default: config default_image, or the only image)")
	c.Flags().IntVar(&f.vcpu, "vcpu", 0, "virtual CPUs (default from config)")
	c.Flags().IntVar(&f.memory, "memory", 0, "memory in MiB (default from config)")
	c.Flags().StringVar(&f.disk, "disk-size", "", "size of the work disk mounted at /root, e.g. 8G")
	c.Flags().StringVar(&f.network, "network", "", "bridge, user or none (default from config: bridge as root, user otherwise)")
	c.Flags().BoolVar(&f.nat, "nat", false, "let the guest reach beyond this host (the same as --egress all)")
	c.Flags().StringArrayVarP(&f.publish, "publish", "p", nil, "publish a guest port: [HOSTIP:]HOSTPORT:GUESTPORT (repeatable)")
	c.Flags().StringVar(&f.engine, "engine", "", "VMM: "+engine.Help()+" (default from config)")
	f.egress.register(c)
	c.Flags().StringVar(&f.wait, "wait", api.WaitAgent, "what ready means before returning: agent (the guest agent answers), ssh (sshd listens) or system (the guest's init finished booting)")
}

// params validates what can be checked without the daemon, so bad input
// is refused before anything is created.
func (f *createFlags) params(c *cobra.Command) (api.VMCreateParams, error) {
	if f.name != "" {
		if err := model.ValidateName(f.name); err != nil {
			return api.VMCreateParams{}, fmt.Errorf("invalid vm name: %w", err)
		}
	}
	if c.Flags().Changed("vcpu") {
		if err := model.CheckVCPU("--vcpu", f.vcpu); err != nil {
			return api.VMCreateParams{}, err
		}
	}
	if c.Flags().Changed("memory") {
		if err := model.CheckMemoryMiB("--memory", f.memory); err != nil {
			return api.VMCreateParams{}, err
		}
	}
	if f.disk != "" {
		if _, err := model.ParseDiskSize("--disk-size", f.disk); err != nil {
			return api.VMCreateParams{}, err
		}
	}
	if err := engine.ValidChoice(f.engine); f.engine != "" && err != nil {
		return api.VMCreateParams{}, fmt.Errorf("--engine %w", err)
	}
	if f.network != "" {
		if err := model.CheckNetworkMode("--network", f.network, false); err != nil {
			return api.VMCreateParams{}, err
		}
		if err := model.CheckNetworkOptions(f.network, f.nat, len(f.publish)); err != nil {
			return api.VMCreateParams{}, err
		}
	}
	for _, p := range f.publish {
		if _, err := portfwd.Parse(p); err != nil {
			return api.VMCreateParams{}, err
		}
	}
	if err := api.ValidWait(f.wait); err != nil {
		return api.VMCreateParams{}, fmt.Errorf("--wait: %w", err)
	}
	egress, err := f.egress.spec(c, f.nat)
	if err != nil {
		return api.VMCreateParams{}, err
	}
	if egress != nil && f.network == model.NetNone && egress.Egress != string(policy.None) {
		if p, _ := policy.Build(*egress); p != nil && p.Mode != policy.None {
			return api.VMCreateParams{}, fmt.Errorf("--egress %s needs a network (bridge or user)", p.Mode)
		}
	}
	wait := f.wait
	if wait == api.WaitAgent {
		wait = "" // the default, also for daemons that predate --wait
	}
	return api.VMCreateParams{Name: f.name, Image: f.image, VCPU: f.vcpu, MemoryMiB: f.memory, DiskSize: f.disk,
		Network: f.network, NAT: f.nat && egress == nil, Egress: egress, Publish: f.publish, Engine: f.engine, Wait: wait}, nil
}

func (a *App) vmCreateCmd() *cobra.Command {
	var f createFlags
	var noStart bool
	c := &cobra.Command{
		Use:   "create",
		Short: "Create a VM and boot it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := f.params(cmd)
			if err != nil {
				return err
			}
			p.NoStart = noStart
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			start := time.Now()
			var v model.VM
			pr := a.progress(true)
			err = a.client.Stream(ctx, "POST", "/vms", p, pr.Event, &v)
			pr.Done()
			if err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, v.Name)
			if !noStart {
				a.readyIn(start)
			}
			return nil
		},
	}
	f.register(c)
	a.completeCreateFlags(c)
	c.Flags().BoolVar(&noStart, "no-start", false, "only create; boot later with `vm start`")
	return c
}

func (a *App) simpleVMStream(use, short, suffix string) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			start := time.Now()
			var v model.VM
			pr := a.progress(true)
			err := a.client.Stream(ctx, "POST", vmPath(args[0], suffix), nil, pr.Event, &v)
			pr.Done()
			if err != nil {
				return err
			}
			a.readyIn(start)
			return nil
		},
		ValidArgsFunction: a.completeVMArgs(1),
	}
}

// readyIn prints, dimmed, how long a VM took to become ready.
func (a *App) readyIn(start time.Time) {
	fmt.Fprintln(a.Stderr, a.errStyle().Dim(fmt.Sprintf("ready in %s", time.Since(start).Round(10*time.Millisecond))))
}

func (a *App) vmStartCmd() *cobra.Command {
	return a.simpleVMStream("start", "Boot a stopped VM", "/start")
}

func (a *App) vmRestartCmd() *cobra.Command {
	return a.simpleVMStream("restart", "Stop a VM and boot it again (a fresh kernel boot)", "/restart")
}

func (a *App) vmStopCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stop NAME",
		Short: "Shut a VM down gracefully (disks are synced first)",
		Args:  cobra.ExactArgs(1),

		ValidArgsFunction: a.completeVMArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "POST", vmPath(args[0], "/stop"), nil, nil)
		},
	}
}

func (a *App) vmPauseCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pause NAME",
		Short: "Stop a VM's vCPUs; its memory and processes stay as they are",
		Long: `Stop a VM's vCPUs. The VM keeps its memory, devices and host resources
and shows "paused" in "banger vm list"; exec, ssh, files and sessions are
refused until "banger vm resume NAME". A paused VM stays paused across a
daemon restart; "banger vm stop" resumes it first, "banger vm kill" does not.`,
		Args: cobra.ExactArgs(1),

		ValidArgsFunction: a.completeVMArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "POST", vmPath(args[0], "/pause"), nil, nil)
		},
	}
}

func (a *App) vmResumeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "resume NAME",
		Short: "Continue a paused VM and set its clock from the host's",
		Long: `Continue a paused VM. The guest agent then sets the guest's wall clock
from the host's, which stood still while the VM was paused.`,
		Args: cobra.ExactArgs(1),

		ValidArgsFunction: a.completeVMArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "POST", vmPath(args[0], "/resume"), nil, nil)
		},
	}
}

func (a *App) vmKillCmd() *cobra.Command {
	var sig string
	c := &cobra.Command{
		Use:   "kill NAME",
		Short: "Stop a VM at once by signalling its VMM",
		Args:  cobra.ExactArgs(1),

		ValidArgsFunction: a.completeVMArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "POST", vmPath(args[0], "/kill"), api.VMKillParams{Signal: sig}, nil)
		},
	}
	c.Flags().StringVar(&sig, "signal", "KILL", "signal to send (name or number)")
	return c
}

func (a *App) vmDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete VMs (running ones are killed first)",
		Args:    cobra.MinimumNArgs(1),

		ValidArgsFunction: a.completeVMArgs(-1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, n := range args {
				if err := a.call(cmd.Context(), "DELETE", vmPath(n, ""), nil, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (a *App) call(ctx context.Context, method, path string, in, out any) error {
	if err := a.ensureDaemon(ctx); err != nil {
		return err
	}
	return a.client.Do(ctx, method, path, in, out)
}

func (a *App) vmShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a VM",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v model.VM
			if err := a.call(cmd.Context(), "GET", vmPath(args[0], ""), nil, &v); err != nil {
				return err
			}
			// How far the guest has booted: asked of a running VM only.
			// (A daemon that cannot tell, e.g. an older one, shows none.)
			var rd *api.Readiness
			if v.State == model.StateRunning {
				rd = &api.Readiness{}
				if err := a.client.Do(cmd.Context(), "GET", vmPath(v.ID, "/readiness"), nil, rd); err != nil {
					rd = nil
				}
			}
			if asJSON {
				return printJSON(a.Stdout, struct {
					model.VM
					Readiness *api.Readiness `json:"readiness,omitempty"`
				}{v, rd})
			}
			t := newTable(a.Stdout)
			t.row("name", v.Name)
			t.row("id", v.ID)
			t.row("state", v.State)
			if rd != nil {
				t.row("ready", readinessText(*rd))
			}
			t.row("image", v.Image)
			t.row("kernel", v.Kernel)
			t.row("vcpu", v.VCPU)
			t.row("memory", fmt.Sprintf("%d MiB", v.MemoryMiB))
			memoryRows(t, v.Memory)
			t.row("disk", humanBytes(v.DiskSize))
			if v.PID != 0 {
				t.row("pid", v.PID)
			}
			if v.Accel != "" {
				t.row("accel", v.Accel)
			}
			if v.Engine != "" {
				t.row("engine", v.Engine)
			}
			if v.DiskClone != "" {
				t.row("root disk", v.DiskClone)
			}
			if v.Network != "" {
				net := v.Network
				if v.IP != "" {
					net += " " + v.IP
				}
				t.row("network", net)
				t.row("egress", egressText(v))
			}
			for _, p := range v.Publish {
				t.row("publish", fmt.Sprintf("%s:%d -> %d", p.HostIP, p.HostPort, p.GuestPort))
			}
			if v.WorkspacePath != "" {
				opts := v.WorkspaceMode
				if v.WorkspaceIncludeUntracked {
					opts += ", untracked files included"
				}
				t.row("workspace", fmt.Sprintf("%s (%s)", v.WorkspacePath, opts))
			}
			t.row("created", timestamp(v.CreatedAt))
			if !v.StartedAt.IsZero() {
				t.row("started", timestamp(v.StartedAt))
			}
			if v.LastError != "" {
				t.row("last error", v.LastError)
			}
			return t.flush()
		},
		ValidArgsFunction: a.completeVMArgs(1),
	}
	addJSONFlag(c, &asJSON)
	return c
}

func (a *App) vmListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List VMs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var vms []model.VM
			if err := a.call(cmd.Context(), "GET", "/vms", nil, &vms); err != nil {
				return err
			}
			if asJSON {
				return printJSONList(a.Stdout, vms)
			}
			t := newTable(a.Stdout, "name", "state", "image", "vcpu", "memory", "host rss", "created")
			for _, v := range vms {
				rss := "-"
				if v.Memory != nil {
					rss = inMiB(v.Memory.HostRSS)
				}
				t.row(v.Name, v.State, v.Image, v.VCPU, fmt.Sprintf("%d MiB", v.MemoryMiB), rss, ago(v.CreatedAt))
			}
			return t.flush()
		},
	}
	addJSONFlag(c, &asJSON)
	return c
}

func (a *App) vmSetCmd() *cobra.Command {
	var vcpu, mem int
	var eg egressFlags
	c := &cobra.Command{
		Use:   "set NAME",
		Short: "Change a stopped VM's vCPUs or memory, or any VM's egress policy",
		Long: "Change a stopped VM's vCPUs or memory, or the egress policy of any VM.\n\n" +
			"Egress flags (--egress, --allow, --policy, --secret, --secret-host) replace the VM's whole\n" +
			"policy; on a running bridge-mode VM the new policy takes effect at once, without a restart.",
		Args: cobra.ExactArgs(1),

		ValidArgsFunction: a.completeVMArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("vcpu") && !cmd.Flags().Changed("memory") && !eg.changed(cmd) {
				return fmt.Errorf("nothing to change: give --vcpu, --memory or egress flags (--egress, --allow, --policy, --secret)")
			}
			egress, err := eg.spec(cmd, false)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("vcpu") {
				if err := model.CheckVCPU("--vcpu", vcpu); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("memory") {
				if err := model.CheckMemoryMiB("--memory", mem); err != nil {
					return err
				}
			}
			return a.call(cmd.Context(), "PATCH", vmPath(args[0], ""), api.VMSetParams{VCPU: vcpu, MemoryMiB: mem, Egress: egress}, nil)
		},
	}
	c.Flags().IntVar(&vcpu, "vcpu", 0, "virtual CPUs")
	c.Flags().IntVar(&mem, "memory", 0, "memory in MiB")
	eg.register(c)
	return c
}

func (a *App) vmPruneCmd() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "prune",
		Short: "Delete every VM that is not running",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var vms []model.VM
			if err := a.call(ctx, "GET", "/vms", nil, &vms); err != nil {
				return err
			}
			var doomed []model.VM
			for _, v := range vms {
				if v.State != model.StateRunning && v.State != model.StateStarting && v.State != model.StateStopping && v.State != model.StatePaused {
					doomed = append(doomed, v)
				}
			}
			if len(doomed) == 0 {
				fmt.Fprintln(a.Stderr, "nothing to prune")
				return nil
			}
			if !force {
				t := newTable(a.Stderr, "name", "state")
				for _, v := range doomed {
					t.row(v.Name, v.State)
				}
				t.flush()
				if !confirm(a, fmt.Sprintf("Delete these %d VM(s)?", len(doomed))) {
					return fmt.Errorf("not confirmed; nothing deleted (use -f to skip the question)")
				}
			}
			var res api.VMPruneResult
			if err := a.client.Do(ctx, "POST", "/vms/prune", nil, &res); err != nil {
				return err
			}
			for _, n := range res.Deleted {
				fmt.Fprintln(a.Stdout, n)
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	return c
}

func (a *App) vmLogsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logs NAME",
		Short: "Print the VM's serial console",
		Args:  cobra.ExactArgs(1),

		ValidArgsFunction: a.completeVMArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd.Context(), "GET", vmPath(args[0], "/logs"), nil, a.Stdout)
		},
	}
}

// memoryRows shows a running VM's memory use (see model.MemoryUsage).
func memoryRows(t *table, u *model.MemoryUsage) {
	if u == nil {
		return
	}
	t.row("host memory", inMiB(u.HostRSS)+" (VMM resident)")
	if u.GuestError != "" {
		t.row("guest memory", "unknown: "+u.GuestError)
		return
	}
	t.row("guest memory", fmt.Sprintf("%s used of %s (%s available)", inMiB(u.GuestUsed), inMiB(u.GuestTotal), inMiB(u.GuestAvailable)))
	switch u.Balloon {
	case model.BalloonReporting:
		t.row("balloon", "on, freed guest memory goes back to the host")
	case model.BalloonNoDriver:
		t.row("balloon", "no driver in the guest (re-import the kernel to add virtio_balloon)")
	case model.BalloonOff:
		t.row("balloon", "off")
	}
}

// inMiB renders bytes as whole MiB.
func inMiB(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

// readinessText lists the readiness levels a guest has reached, e.g.
// "agent, ssh; system: starting".
func readinessText(r api.Readiness) string {
	var got []string
	for _, l := range []struct {
		name string
		ok   bool
	}{{api.WaitAgent, r.Agent}, {api.WaitSSH, r.SSH}, {api.WaitSystem, r.System}} {
		if l.ok {
			got = append(got, l.name)
		}
	}
	s := strings.Join(got, ", ")
	if s == "" {
		s = "nothing yet"
	}
	var notes []string
	if r.Agent && !r.SSH && !r.SSHD {
		notes = append(notes, "no sshd in the image")
	}
	if r.SystemState != "" && r.SystemState != "running" && r.SystemState != "agent" {
		notes = append(notes, "system: "+r.SystemState)
	}
	if len(notes) > 0 {
		s += " (" + strings.Join(notes, "; ") + ")"
	}
	return s
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%dM", n>>20)
	}
	return fmt.Sprintf("%dB", n)
}

func confirm(a *App, q string) bool {
	fmt.Fprintf(a.Stderr, "%s [y/N] ", q)
	var ans string
	fmt.Fscanln(a.Stdin, &ans)
	ans = strings.ToLower(strings.TrimSpace(ans))
	return ans == "y" || ans == "yes"
}
