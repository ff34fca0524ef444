// Package cli implements the banger command line: it parses flags into API
// parameters, calls the daemon (starting it on demand) and renders results.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/paths"
)

// ExitError carries a process exit code (e.g. a guest command's) through
// cobra without printing anything.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// App holds what every command needs.
type App struct {
	Version string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	layout  paths.Layout
	client  *client.Client
}

// Main runs the CLI and returns the process exit code.
func Main(version string, args []string) int {
	app := &App{Version: version, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	root := app.rootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	fmt.Fprintln(app.Stderr, formatError(err))
	return 1
}

// formatError renders an error for people: the message, and the
// operation id (to find the daemon's log line) when there is one.
func formatError(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) && ae.OpID != "" {
		return fmt.Sprintf("banger: %s (op %s)", ae.Message, ae.OpID)
	}
	return "banger: " + err.Error()
}

func (a *App) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Disposable Linux microVMs for running commands and agents in isolation",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       a.Version,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			l, err := paths.FromEnv()
			if err != nil {
				return err
			}
			a.layout = l
			a.client = client.New(l.Socket())
			return nil
		},
	}
	root.AddCommand(a.vmCmd(), a.kernelCmd(), a.imageCmd(), a.daemonCmd(), a.doctorCmd(), a.sshConfigCmd())
	return root
}

// ensureDaemon pings the daemon and starts one in the background when
// none answers.
func (a *App) ensureDaemon(ctx context.Context) error {
	var p api.Ping
	err := a.client.Do(ctx, "GET", "/ping", nil, &p)
	if err == nil {
		if p.Version == a.Version || a.Version == "dev" || os.Getenv("BANGER_NO_DAEMON_RESTART") != "" {
			return nil
		}
		// A daemon from another build (e.g. before an upgrade) speaks an
		// older API: replace it. VMs survive a daemon restart.
		fmt.Fprintf(a.Stderr, "banger: restarting bangerd (%s -> %s)\n", p.Version, a.Version)
		if err := a.client.Do(ctx, "POST", "/daemon/stop", nil, nil); err != nil {
			return err
		}
		deadline := time.Now().Add(15 * time.Second)
		for pidAlive(p.PID) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		err = client.ErrUnavailable
	}
	if !errors.Is(err, client.ErrUnavailable) {
		return err
	}
	if err := a.startDaemon(); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err = a.client.Do(ctx, "GET", "/ping", nil, &p); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("started bangerd but it does not answer on %s; see %s", a.layout.Socket(), a.layout.DaemonLog())
}

func findBangerd() (string, error) {
	if exe, err := os.Executable(); err == nil {
		c := filepath.Join(filepath.Dir(exe), "bangerd")
		if _, err := os.Stat(c); err == nil {
			return c, nil
		}
	}
	return exec.LookPath("bangerd")
}

func (a *App) startDaemon() error {
	bin, err := findBangerd()
	if err != nil {
		return fmt.Errorf("no daemon running and bangerd not found: %w", err)
	}
	if err := os.MkdirAll(a.layout.State, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(a.layout.DaemonLog(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start bangerd: %w", err)
	}
	return cmd.Process.Release()
}

func isTTY(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressPrinter prints stages with their durations to stderr: always
// when verbose, otherwise only on a terminal.
func (a *App) progressPrinter(verbose bool) func(api.Progress) {
	tty := verbose || isTTY(a.Stderr) || os.Getenv("BANGER_PROGRESS") == "1"
	return func(p api.Progress) {
		switch {
		case p.Stage == "warning":
			fmt.Fprintf(a.Stderr, "banger: warning: %s\n", p.Detail)
		case tty && p.Stage != "vm" && p.Stage != "exec":
			fmt.Fprintf(a.Stderr, "  %-16s %s\n", p.Stage, time.Duration(p.DurationMS)*time.Millisecond)
		}
	}
}
