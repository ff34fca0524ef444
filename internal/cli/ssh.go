package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"banger/internal/agent"
	"banger/internal/config"
	"banger/internal/hosttools"
	"banger/internal/model"
	"banger/internal/sshkeys"
)

// sshArgs builds the ssh command line for a VM: banger's key, banger's
// known_hosts with strict checking (the host keys came from the guest
// itself), and the remote command shell-quoted into one argument so that
// multi-word arguments arrive intact.
func (a *App) sshArgs(v model.VM, remote []string) ([]string, error) {
	cfg, err := config.Load(a.layout.ConfigFile())
	if err != nil {
		return nil, err
	}
	key := cfg.SSHKeyPath(a.layout)
	var host string
	port := 22
	switch v.Network {
	case "bridge":
		host = v.IP
	case "user":
		host, port = "127.0.0.1", v.SSHPort
	default:
		return nil, fmt.Errorf("vm %q has no network; use `banger vm exec %s`", v.Name, v.Name)
	}
	args := []string{
		"-i", key, "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + a.layout.KnownHosts(), "-o", "StrictHostKeyChecking=yes",
		"-o", "HostKeyAlias=" + hostAlias(v),
		"-o", "LogLevel=ERROR",
		"-p", strconv.Itoa(port), "root@" + host,
	}
	if len(remote) > 0 {
		args = append(args, "--", sshkeys.QuoteArgs(remote))
	}
	return args, nil
}

// hostAlias is the known_hosts name checked for a VM.
func hostAlias(v model.VM) string {
	if v.Network == "user" {
		return "[127.0.0.1]:" + strconv.Itoa(v.SSHPort)
	}
	return v.Name + ".vm"
}

func (a *App) vmSSHCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- CMD [ARGS...]]",
		Short: "SSH into a VM with banger's key (the remote exit code becomes banger's)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			before, remote := commandAfterDash(cmd, args)
			if len(before) != 1 {
				return fmt.Errorf("usage: banger vm ssh NAME [-- CMD [ARGS...]]")
			}
			var v model.VM
			if err := a.call(cmd.Context(), "GET", vmPath(before[0], ""), nil, &v); err != nil {
				return err
			}
			if v.State != model.StateRunning {
				return fmt.Errorf("vm %q is not running (state %s)", v.Name, v.State)
			}
			sshArgs, err := a.sshArgs(v, remote)
			if err != nil {
				return err
			}
			sshBin, err := hosttools.Path(hosttools.SSH)
			if err != nil {
				return err
			}
			c := exec.CommandContext(cmd.Context(), sshBin, sshArgs...)
			c.Stdin, c.Stdout, c.Stderr = a.Stdin, a.Stdout, a.Stderr
			err = c.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return &ExitError{Code: ee.ExitCode()}
			}
			return err
		},
		ValidArgsFunction: a.completeVMArgs(1),
	}
}

func (a *App) vmPortsCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "ports NAME",
		Short: "List the guest's listening ports and where the host reaches them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ports []agent.PortInfo
			if err := a.call(cmd.Context(), "GET", vmPath(args[0], "/ports"), nil, &ports); err != nil {
				return err
			}
			if asJSON {
				return printJSONList(a.Stdout, ports)
			}
			t := newTable(a.Stdout, "proto", "address", "port", "process", "endpoint")
			for _, p := range ports {
				ep := p.Endpoint
				if ep == "" {
					ep = "-"
				}
				proc := p.Process
				if proc == "" {
					proc = "-"
				}
				t.row(p.Proto, p.Addr, p.Port, proc, ep)
			}
			return t.flush()
		},
		ValidArgsFunction: a.completeVMArgs(1),
	}
	addJSONFlag(c, &asJSON)
	return c
}

func (a *App) sshConfigCmd() *cobra.Command {
	var install, uninstall bool
	c := &cobra.Command{
		Use:   "ssh-config (--install | --uninstall)",
		Short: "Make plain `ssh NAME.vm` work by including banger's ssh config in ~/.ssh/config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if install == uninstall {
				fmt.Fprintln(a.Stdout, a.layout.SSHConfig())
				if !install {
					return nil
				}
				return fmt.Errorf("give one of --install or --uninstall")
			}
			home, err := os.UserHomeDir()
			if err != nil {
				return err
			}
			user := filepath.Join(home, ".ssh", "config")
			var changed bool
			if install {
				changed, err = sshkeys.Install(user, a.layout.SSHConfig())
			} else {
				changed, err = sshkeys.Uninstall(user, a.layout.SSHConfig())
			}
			if err != nil {
				return err
			}
			state := "unchanged"
			if changed {
				state = "updated"
			}
			fmt.Fprintf(a.Stderr, "%s %s\n", user, state)
			return nil
		},
	}
	c.Flags().BoolVar(&install, "install", false, "add the Include line (once)")
	c.Flags().BoolVar(&uninstall, "uninstall", false, "remove it, restoring the file exactly")
	return c
}
