package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/agent"
	"banger/internal/model"
)

// detachKey (Ctrl-]) leaves an attached session running.
const detachKey = 0x1d

func sessionPath(vmName, session, suffix string) string {
	p := vmPath(vmName, "/sessions")
	if session != "" {
		p += "/" + url.PathEscape(session)
	}
	return p + suffix
}

func (a *App) sessionCmd() *cobra.Command {
	c := &cobra.Command{Use: "session", Short: "Long-lived guest processes (e.g. coding agents) that outlive clients"}

	var req agent.SessionRequest
	start := &cobra.Command{
		Use:   "start NAME [--name S] [--cwd DIR] [--env K=V] [--tty] -- CMD [ARGS...]",
		Short: "Start a session; launch problems are reported before it returns",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			before, argv := commandAfterDash(cmd, args)
			if len(before) != 1 || len(argv) == 0 {
				return fmt.Errorf("usage: banger vm session start NAME [flags] -- CMD [ARGS...]")
			}
			req.Argv = argv
			if req.TTY {
				req.Term = os.Getenv("TERM")
				if f, ok := a.Stdin.(*os.File); ok {
					if w, h, err := term.GetSize(int(f.Fd())); err == nil {
						req.Cols, req.Rows = uint16(w), uint16(h)
					}
				}
			}
			var info agent.SessionInfo
			if err := a.call(cmd.Context(), "POST", sessionPath(before[0], "", ""), req, &info); err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, info.Name)
			return nil
		},
	}
	start.Flags().StringVar(&req.Name, "name", "", "session name (generated when empty)")
	start.Flags().StringVar(&req.Cwd, "cwd", "", "working directory (default /root/repo with a workspace, else /root)")
	start.Flags().StringArrayVarP(&req.Env, "env", "e", nil, "KEY=VALUE for the session's environment")
	start.Flags().BoolVarP(&req.TTY, "tty", "t", false, "run under a terminal (for interactive programs)")
	start.ValidArgsFunction = a.completeVMArgs(1)

	var listJSON bool
	list := &cobra.Command{
		Use: "list NAME", Aliases: []string{"ls"}, Short: "List a VM's sessions", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ss []agent.SessionInfo
			if err := a.call(cmd.Context(), "GET", sessionPath(args[0], "", ""), nil, &ss); err != nil {
				return err
			}
			if listJSON {
				return printJSONList(a.Stdout, ss)
			}
			t := newTable(a.Stdout, "name", "state", "exit", "started", "command")
			for _, s := range ss {
				t.row(s.Name, s.State, exitText(s.Exit), ago(s.StartedAt), argvText(s.Argv))
			}
			return t.flush()
		},
		ValidArgsFunction: a.completeVMArgs(1),
	}
	addJSONFlag(list, &listJSON)

	var showJSON bool
	show := &cobra.Command{
		Use: "show NAME SESSION", Short: "Show one session", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var s agent.SessionInfo
			if err := a.call(cmd.Context(), "GET", sessionPath(args[0], args[1], ""), nil, &s); err != nil {
				return err
			}
			if showJSON {
				return printJSON(a.Stdout, s)
			}
			t := newTable(a.Stdout)
			t.row("name", s.Name)
			t.row("state", s.State)
			t.row("command", argvText(s.Argv))
			t.row("cwd", s.Cwd)
			t.row("tty", s.TTY)
			if s.PID != 0 {
				t.row("pid", s.PID)
			}
			t.row("started", timestamp(s.StartedAt))
			if s.Exit != nil {
				t.row("exit", exitText(s.Exit))
				t.row("ended", timestamp(s.EndedAt))
			}
			t.row("output", fmt.Sprintf("%d bytes", s.OutputBytes))
			t.row("attached", s.Attached)
			return t.flush()
		},
		ValidArgsFunction: a.completeSessionArgs,
	}
	addJSONFlag(show, &showJSON)

	var follow bool
	var tail int64
	logs := &cobra.Command{
		Use: "logs NAME SESSION", Short: "Print a session's output (kept in the guest, bounded)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := a.ensureDaemon(ctx); err != nil {
				return err
			}
			conn, r, err := a.client.Upgrade(ctx, sessionPath(args[0], args[1], "/logs"), agent.SessionRequest{Follow: follow, Tail: tail})
			if err != nil {
				return err
			}
			defer conn.Close()
			return a.readSessionFrames(r)
		},
		ValidArgsFunction: a.completeSessionArgs,
	}
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing output until the session ends")
	logs.Flags().Int64Var(&tail, "tail", 0, "only the last N bytes (default: all that is kept)")

	attach := &cobra.Command{
		Use:   "attach NAME SESSION",
		Short: "Attach to a session (Ctrl-] detaches and leaves it running)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var info agent.SessionInfo
			if err := a.call(ctx, "GET", sessionPath(args[0], args[1], ""), nil, &info); err != nil {
				return err
			}
			conn, r, err := a.client.Upgrade(ctx, sessionPath(args[0], args[1], "/attach"), agent.SessionRequest{Tail: tail})
			if err != nil {
				return err
			}
			return a.attach(conn, r, info.TTY)
		},
		ValidArgsFunction: a.completeSessionArgs,
	}
	attach.Flags().Int64Var(&tail, "tail", 0, "bytes of recent output to replay (default 64 KiB)")

	var sig string
	stop := &cobra.Command{
		Use: "stop NAME SESSION", Short: "Stop a session (TERM, then KILL after a grace period)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			n := 0
			if sig != "" {
				s, err := model.ParseSignal(sig)
				if err != nil {
					return err
				}
				n = int(s)
			}
			var s agent.SessionInfo
			if err := a.call(cmd.Context(), "POST", sessionPath(args[0], args[1], "/stop"), agent.SessionRequest{Signal: n}, &s); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "%s\t%s\t%s\n", s.Name, s.State, exitText(s.Exit))
			return nil
		},
		ValidArgsFunction: a.completeSessionArgs,
	}
	stop.Flags().StringVar(&sig, "signal", "", "signal to send first (default TERM)")
	c.AddCommand(start, list, show, logs, attach, stop)
	return c
}

func exitText(e *agent.ExitStatus) string {
	switch {
	case e == nil:
		return "-"
	case e.Signal != "":
		return "signal " + e.Signal
	}
	return fmt.Sprintf("%d", e.Code)
}

func argvText(argv []string) string {
	b, _ := json.Marshal(argv)
	if len(b) > 60 {
		return string(b[:57]) + "..."
	}
	return string(b)
}

// readSessionFrames prints output frames until the stream ends.
func (a *App) readSessionFrames(r io.Reader) error {
	for {
		t, p, err := agent.ReadFrame(r)
		if err != nil {
			return nil
		}
		switch t {
		case agent.FrameStdout:
			a.Stdout.Write(p)
		case agent.FrameStderr:
			a.Stderr.Write(p)
		case agent.FrameExit:
			var es agent.ExitStatus
			json.Unmarshal(p, &es)
			fmt.Fprintf(a.Stderr, "[session ended: %s]\n", exitText(&es))
		}
	}
}

// attach connects the terminal (or pipes) to a session until it ends or
// the user detaches with Ctrl-] (or Ctrl-C when not in raw mode).
func (a *App) attach(conn net.Conn, r io.Reader, tty bool) error {
	defer conn.Close()
	fw := agent.NewFrameWriter(conn)
	raw := false
	if tty {
		var restore func()
		if raw, restore = a.rawTerminal(fw, true); restore != nil {
			defer restore()
		}
	}
	detach := func() {
		if uc, ok := conn.(*net.UnixConn); ok {
			uc.CloseWrite()
		}
		conn.Close()
	}
	if !raw {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt)
		defer signal.Stop(sigs)
		go func() {
			if _, ok := <-sigs; ok {
				detach()
			}
		}()
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := a.Stdin.Read(buf)
			if n > 0 {
				chunk := buf[:n]
				if i := bytes.IndexByte(chunk, detachKey); i >= 0 {
					if i > 0 {
						fw.Write(agent.FrameStdin, chunk[:i])
					}
					detach()
					return
				}
				if fw.Write(agent.FrameStdin, chunk) != nil {
					return
				}
			}
			if err != nil {
				// Local input ended: keep watching the output; the
				// session's own stdin stays open.
				return
			}
		}
	}()
	err := a.readSessionFrames(r)
	if raw {
		fmt.Fprint(a.Stderr, "\r\n")
	}
	return err
}
