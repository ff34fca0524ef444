package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/agent"
	"banger/internal/api"
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
	var proxy bool
	var waitTimeout time.Duration
	c := &cobra.Command{
		Use:   "ssh NAME [-- CMD [ARGS...]]",
		Short: "SSH into a VM with banger's key (the remote exit code becomes banger's)",
		Long: "SSH into a VM with banger's key. A guest whose sshd is not listening yet (right after\n" +
			"`vm create`) is waited for, at most --wait-timeout.\n\n" +
			"With --proxy it connects stdin and stdout to the guest's sshd instead of running ssh:\n" +
			"the generated ssh config uses it as ProxyCommand, so plain `ssh NAME.vm` waits too.",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			before, remote := commandAfterDash(cmd, args)
			if len(before) != 1 {
				return fmt.Errorf("usage: banger vm ssh NAME [-- CMD [ARGS...]]")
			}
			if proxy && len(remote) > 0 {
				return fmt.Errorf("--proxy takes no command: ssh runs it")
			}
			if waitTimeout <= 0 {
				return fmt.Errorf("--wait-timeout must be positive, got %v", waitTimeout)
			}
			ctx := cmd.Context()
			var v model.VM
			if err := a.call(ctx, "GET", vmPath(before[0], ""), nil, &v); err != nil {
				return err
			}
			if v.State == model.StatePaused {
				return fmt.Errorf("vm %q is paused: run `banger vm resume %s` first", v.Name, v.Name)
			}
			if v.State != model.StateRunning {
				return fmt.Errorf("vm %q is not running (state %s)", v.Name, v.State)
			}
			if err := a.waitSSH(ctx, v, waitTimeout); err != nil {
				return err
			}
			if proxy {
				return a.sshProxy(ctx, v)
			}
			sshArgs, err := a.sshArgs(v, remote)
			if err != nil {
				return err
			}
			sshBin, err := hosttools.Path(hosttools.SSH)
			if err != nil {
				return err
			}
			c := exec.CommandContext(ctx, sshBin, sshArgs...)
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
	c.Flags().BoolVar(&proxy, "proxy", false, "connect stdin/stdout to the guest's sshd (for ssh's ProxyCommand)")
	c.Flags().DurationVar(&waitTimeout, "wait-timeout", 5*time.Minute, "how long to wait for the guest's sshd while it boots (once booted, a missing sshd fails after a minute)")
	return c
}

// waitSSH returns once the VM's sshd listens, saying on stderr that it
// waits when it has to, at most timeout.
func (a *App) waitSSH(ctx context.Context, v model.VM, timeout time.Duration) error {
	if v.Network != "bridge" && v.Network != "user" {
		return fmt.Errorf("vm %q has no network; use `banger vm exec %s`", v.Name, v.Name)
	}
	var rd api.Readiness
	if err := a.client.Do(ctx, "GET", vmPath(v.ID, "/readiness"), nil, &rd); err != nil {
		return err
	}
	if rd.SSH {
		return nil
	}
	fmt.Fprintf(a.Stderr, "waiting for sshd on %s…\n", v.Name)
	return a.client.Do(ctx, "POST", vmPath(v.ID, "/wait"),
		api.VMWaitParams{For: api.WaitSSH, TimeoutMS: timeout.Milliseconds()}, &rd)
}

// sshProxy connects stdin and stdout to the guest's sshd until either
// side closes.
func (a *App) sshProxy(ctx context.Context, v model.VM) error {
	addr := net.JoinHostPort(v.IP, "22")
	if v.Network == "user" {
		addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(v.SSHPort))
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	conn, err := d.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return fmt.Errorf("vm %q: connect to sshd: %w", v.Name, err)
	}
	defer conn.Close()
	go func() {
		io.Copy(conn, a.Stdin)
		// ssh is done sending; sshd answers the rest and closes.
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	}()
	done := make(chan struct{})
	go func() {
		io.Copy(a.Stdout, conn)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
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
