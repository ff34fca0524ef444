package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/workspace"
)

// commandAfterDash returns the arguments after "--" (or all positional
// arguments after the first `skip` when there is no dash).
func commandAfterDash(cmd *cobra.Command, args []string) (before, after []string) {
	if i := cmd.ArgsLenAtDash(); i >= 0 {
		return args[:i], args[i:]
	}
	return args, nil
}

func (a *App) vmExecCmd() *cobra.Command {
	var tty, autoPrepare bool
	var env []string
	var cwd string
	c := &cobra.Command{
		Use:   "exec NAME [-t] [--auto-prepare] -- CMD [ARGS...]",
		Short: "Run a command in a running VM; its exit code becomes banger's",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			before, argv := commandAfterDash(cmd, args)
			if len(before) != 1 {
				return fmt.Errorf("usage: banger vm exec NAME -- CMD [ARGS...]")
			}
			if len(argv) == 0 {
				if !tty {
					return fmt.Errorf("no command given: banger vm exec %s -- CMD [ARGS...] (or -t for a shell)", before[0])
				}
				argv = []string{"/bin/sh", "-l"}
			}
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			if autoPrepare {
				if err := a.autoPrepare(ctx, before[0]); err != nil {
					return err
				}
			}
			p := a.execParams(before[0], argv, env, cwd, tty)
			conn, r, err := a.client.Upgrade(ctx, vmPath(before[0], "/exec"), p)
			if err != nil {
				return err
			}
			return a.pump(conn, r, tty, nil, nil)
		},
	}
	c.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal (interactive programs)")
	c.Flags().StringArrayVarP(&env, "env", "e", nil, "set KEY=VALUE in the command's environment")
	c.Flags().StringVar(&cwd, "cwd", "", "working directory in the guest (default /root/repo with a workspace, else /root)")
	c.Flags().BoolVar(&autoPrepare, "auto-prepare", false, "re-sync the VM's workspace from the host first")
	c.ValidArgsFunction = a.completeVMArgs(1)
	return c
}

func (a *App) execParams(vm string, argv, env []string, cwd string, tty bool) api.ExecParams {
	p := api.ExecParams{VM: vm, Argv: argv, Env: env, Cwd: cwd, TTY: tty}
	if tty {
		if f, ok := a.Stdin.(*os.File); ok {
			if w, h, err := term.GetSize(int(f.Fd())); err == nil {
				p.Cols, p.Rows = uint16(w), uint16(h)
			}
		}
		p.Term = os.Getenv("TERM")
	}
	return p
}

func (a *App) vmRunCmd() *cobra.Command {
	var f createFlags
	var rm, detach, tty bool
	var wsOpts workspace.Options
	var env []string
	c := &cobra.Command{
		Use:   "run [flags] [PATH] [-- CMD [ARGS...]]",
		Short: "Create a VM, boot it, ship PATH's repository in and run a command (--rm: delete it afterwards)",
		RunE: func(cmd *cobra.Command, args []string) error {
			before, argv := commandAfterDash(cmd, args)
			if len(before) > 1 {
				return fmt.Errorf("unexpected argument %q: put the command after --", before[1])
			}
			// Refuse contradictory flags before anything is created.
			if detach && rm {
				return fmt.Errorf("-d and --rm cannot be combined: a detached VM must outlive the command")
			}
			if detach && len(argv) > 0 {
				return fmt.Errorf("-d takes no command: it leaves the VM running; use `banger vm exec NAME -- CMD` afterwards")
			}
			p, err := f.params(cmd)
			if err != nil {
				return err
			}
			if !detach && len(argv) == 0 {
				return fmt.Errorf("no command given: banger vm run [--rm] [PATH] -- CMD [ARGS...] (or -d to leave a VM running)")
			}
			a.warnAgentAuth(f)
			var plan *workspace.Plan
			if len(before) == 1 {
				if detach {
					return fmt.Errorf("-d takes no workspace; use `banger vm workspace prepare NAME PATH` afterwards")
				}
				if plan, err = a.inspect(cmd.Context(), before[0], wsOpts); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			start := time.Now()
			pr := a.progress(false)
			defer pr.Done()
			if detach {
				var v struct{ Name string }
				err := a.client.Stream(ctx, "POST", "/vms", p, pr.Event, &v)
				pr.Done()
				if err != nil {
					return err
				}
				fmt.Fprintln(a.Stdout, v.Name)
				a.readyIn(start)
				return nil
			}
			p.AutoRemove = rm
			rp := api.RunParams{Create: p, Exec: a.execParams("", argv, env, "", tty)}
			var upload func(*agent.FrameWriter) error
			if plan != nil {
				rp.Workspace = plan.Params()
				upload = func(fw *agent.FrameWriter) error { return sendTar(ctx, plan, fw, pr.Event) }
			}
			conn, r, err := a.client.Upgrade(ctx, "/run", rp)
			if err != nil {
				return err
			}
			errTTY := isTTY(a.Stderr)
			return a.pump(conn, r, tty, func(pg api.Progress) {
				pr.Event(pg)
				if pg.Stage == "exec" && errTTY {
					a.readyIn(start)
				}
			}, upload)
		},
	}
	f.register(c)
	a.completeCreateFlags(c)
	c.Flags().BoolVar(&rm, "rm", false, "delete the VM when the command ends, whatever happens")
	c.Flags().BoolVarP(&detach, "detach", "d", false, "leave the VM running and print its name (no command)")
	c.Flags().BoolVarP(&tty, "tty", "t", false, "allocate a terminal")
	c.Flags().StringArrayVarP(&env, "env", "e", nil, "set KEY=VALUE in the command's environment")
	c.Flags().BoolVar(&wsOpts.IncludeUntracked, "include-untracked", false, "also ship untracked files (never ignored ones)")
	c.Flags().StringVar(&wsOpts.Mode, "mode", "copy", "workspace mode: copy, or full_copy to include submodules")
	return c
}

// pump runs the client side of the frame protocol: stdin and signals go
// to the guest; stdout, stderr, progress and the exit status come back.
// It returns an ExitError carrying the command's exit code.
func (a *App) pump(conn net.Conn, r io.Reader, tty bool, onProgress func(api.Progress), upload func(*agent.FrameWriter) error) error {
	defer conn.Close()
	fw := agent.NewFrameWriter(conn)

	if tty {
		if _, restore := a.rawTerminal(fw, false); restore != nil {
			defer restore()
		}
	}

	// Stdin goes to the guest once the command runs (for run, after the
	// boot and the workspace upload, which share the stream).
	var stdinOnce sync.Once
	startStdin := func() {
		stdinOnce.Do(func() {
			go func() {
				buf := make([]byte, 256<<10)
				for {
					n, err := a.Stdin.Read(buf)
					if n > 0 {
						if fw.Write(agent.FrameStdin, buf[:n]) != nil {
							return
						}
					}
					if err != nil {
						fw.Write(agent.FrameStdin, nil)
						return
					}
				}
			}()
		})
	}
	if onProgress == nil {
		startStdin()
	}

	// Ctrl-C: the first is passed to the command; the second gives up on
	// it. Giving up half-closes the connection, so the daemon kills the
	// command (and, for run --rm, deletes the VM) before it hangs up.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var execStarted, interrupted atomic.Bool
	execStarted.Store(onProgress == nil)
	go func() {
		n := 0
		for s := range sigs {
			n++
			interrupted.Store(true)
			if n == 1 && execStarted.Load() && s == os.Interrupt {
				fw.Write(agent.FrameSignal, []byte{byte(syscall.SIGINT)})
				continue
			}
			if uc, ok := conn.(*net.UnixConn); ok {
				uc.CloseWrite()
			} else {
				conn.Close()
			}
		}
	}()

	var status *agent.ExitStatus
	var failure *api.Error
	for {
		t, p, err := agent.ReadFrame(r)
		if err != nil {
			break
		}
		switch t {
		case agent.FrameStdout:
			a.Stdout.Write(p)
		case agent.FrameStderr:
			a.Stderr.Write(p)
		case agent.FrameExit:
			var es agent.ExitStatus
			json.Unmarshal(p, &es)
			status = &es
		case agent.FrameProgress:
			var pg api.Progress
			json.Unmarshal(p, &pg)
			if pg.Stage == "exec" {
				execStarted.Store(true)
				startStdin()
			}
			if pg.Stage == api.StageSendWorkspace && upload != nil {
				go func() {
					if err := upload(fw); err != nil {
						fmt.Fprintf(a.Stderr, "banger: send workspace: %v\n", err)
						conn.Close()
					}
				}()
			}
			if onProgress != nil {
				onProgress(pg)
			}
		case agent.FrameError:
			var ae api.Error
			json.Unmarshal(p, &ae)
			if failure == nil {
				failure = &ae
			}
		}
	}
	if failure != nil {
		return failure
	}
	if status == nil {
		if interrupted.Load() {
			return &ExitError{Code: 130}
		}
		return errors.New("connection to the daemon ended before the command finished")
	}
	if status.Error != "" {
		fmt.Fprintf(a.Stderr, "banger: %s\n", status.Error)
	}
	if status.Code != 0 {
		return &ExitError{Code: status.Code}
	}
	return nil
}

// rawTerminal puts a terminal stdin into raw mode and forwards its size
// changes as resize frames (the current size first when sendSize). It
// reports whether stdin is a terminal in raw mode; restore undoes it.
func (a *App) rawTerminal(fw *agent.FrameWriter, sendSize bool) (raw bool, restore func()) {
	f, ok := a.Stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, nil
	}
	old, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return false, nil
	}
	resize := func() {
		if w, h, err := term.GetSize(int(f.Fd())); err == nil {
			fw.Write(agent.FrameResize, agent.ResizePayload(uint16(h), uint16(w)))
		}
	}
	if sendSize {
		resize()
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		for range winch {
			resize()
		}
	}()
	return true, func() {
		signal.Stop(winch)
		close(winch)
		term.Restore(int(f.Fd()), old)
	}
}
