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
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/cli/style"
	"banger/internal/client"
	"banger/internal/paths"
	"banger/internal/sysinstall"
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
	// Getenv looks environment variables up for the App's own decisions
	// (colours, progress); os.Getenv when nil.
	Getenv func(string) string
	layout paths.Layout
	client *client.Client
	// live is the last progress renderer made, ended before Main prints
	// (so that an error never lands on a half-drawn bar).
	live *progressRenderer
}

// Main runs the CLI and returns the process exit code.
func Main(version string, args []string) int {
	app := &App{Version: version, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	root := app.rootCmd()
	root.SetArgs(args)
	err := root.Execute()
	app.endProgress()
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	fmt.Fprintln(app.Stderr, formatError(err, app.errStyle()))
	return 1
}

func (a *App) getenv(key string) string {
	if a.Getenv == nil {
		return os.Getenv(key)
	}
	return a.Getenv(key)
}

// isTTY reports whether w is a terminal.
func isTTY(w any) bool {
	f, ok := w.(io.Writer)
	return ok && style.IsTerminal(f)
}

// outStyle styles what goes to Stdout; errStyle what goes to Stderr.
func (a *App) outStyle() style.Style { return style.New(a.Stdout, a.getenv) }
func (a *App) errStyle() style.Style { return style.New(a.Stderr, a.getenv) }

// errorLabel is the short, human name of an API error code: empty for
// the generic failure (the message says it all), the code itself for a
// code this build does not know.
func errorLabel(code string) string {
	switch code {
	case api.CodeNotFound:
		return "not found"
	case api.CodeAlreadyExists:
		return "already exists"
	case api.CodeBadRequest:
		return "invalid request"
	case api.CodeConflict:
		return "conflict"
	case api.CodeNotRunning:
		return "not running"
	case api.CodeUnknownMethod:
		return "unknown command"
	case api.CodeBadVersion:
		return "version mismatch"
	case api.CodeOperationFailed, "":
		return ""
	}
	return code
}

// formatError renders an error for people: "banger: LABEL: MESSAGE (op
// ID)", where LABEL names the API error code and ID finds the daemon's
// log line for the failure. On a terminal the prefix is bold red and the
// operation id dim.
func formatError(err error, st style.Style) string {
	msg := err.Error()
	var ae *api.Error
	if errors.As(err, &ae) {
		if l := errorLabel(ae.Code); l != "" && !hasPrefixFold(msg, l) {
			msg = l + ": " + msg
		}
		if ae.OpID != "" {
			msg += " " + st.Dim("(op "+ae.OpID+")")
		}
	}
	return st.BoldRed("banger:") + " " + msg
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func (a *App) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "banger",
		Short:         "Disposable Linux microVMs for running commands and agents in isolation",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       a.Version,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return a.setup()
		},
	}
	root.AddCommand(a.vmCmd(), a.snapshotCmd(), a.kernelCmd(), a.imageCmd(), a.daemonCmd(), a.doctorCmd(), a.sshConfigCmd(), a.catalogCmd(), a.systemCmd(), a.updateCmd(), a.mcpCmd(), a.secretCmd())
	// Cobra's completion command, added below, binds its output writer
	// when it is made.
	if a.Stdout != nil {
		root.SetOut(a.Stdout)
	}
	if a.Stderr != nil {
		root.SetErr(a.Stderr)
	}
	refuseUnknownSubcommands(root)
	return root
}

// setup resolves the installation's layout (unless already set, as tests
// do) and the daemon client. It contacts nothing.
func (a *App) setup() error {
	if a.client != nil {
		return nil
	}
	if a.layout.Runtime == "" {
		l, err := paths.FromEnv()
		if err != nil {
			return err
		}
		a.layout = l
	}
	a.client = client.New(a.layout.Socket())
	return nil
}

// NoAutostartEnv names the environment variable that, when non-empty,
// forbids the CLI to start (or replace) a daemon: commands then fail when
// none answers. Test harnesses set it so that a CLI call made after their
// own daemon died never starts another one somewhere else (e.g. as root
// in the host's network namespace).
const NoAutostartEnv = "BANGER_NO_AUTOSTART"

// ensureDaemon pings the daemon and starts one in the background when
// none answers (unless NoAutostartEnv forbids it).
func (a *App) ensureDaemon(ctx context.Context) error {
	// A socket in a directory another user controls could be theirs.
	if err := a.layout.CheckRuntime(); err != nil {
		return err
	}
	var p api.Ping
	err := a.client.Do(ctx, "GET", "/ping", nil, &p)
	service := a.serviceManaged()
	noAutostart := a.getenv(NoAutostartEnv) != ""
	if err == nil {
		if service || noAutostart || p.Version == a.Version || a.Version == "dev" || os.Getenv("BANGER_NO_DAEMON_RESTART") != "" {
			return nil
		}
		// A daemon from another build (e.g. before an upgrade) speaks an
		// older API: replace it. VMs survive a daemon restart.
		fmt.Fprintf(a.Stderr, "banger: restarting bangerd (%s -> %s)\n", p.Version, a.Version)
		// One that does not go in time is left for the start below to
		// report (it cannot take the daemon's lock).
		if err := a.stopDaemon(ctx, p.PID, 15*time.Second); err != nil && !errors.Is(err, errStillRunning) {
			return err
		}
		err = client.ErrUnavailable
	}
	if !errors.Is(err, client.ErrUnavailable) {
		return err
	}
	if service {
		return fmt.Errorf("the bangerd service does not answer on %s: see `banger system status`, or `sudo systemctl restart bangerd`", a.layout.Socket())
	}
	if noAutostart {
		return fmt.Errorf("no daemon answers on %s and %s is set: start bangerd yourself", a.layout.Socket(), NoAutostartEnv)
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

// serviceManaged reports whether this user's daemon is the installed
// bangerd service (systemd starts and restarts it, not the CLI).
func (a *App) serviceManaged() bool {
	meta, err := sysinstall.ReadMetadata("/")
	return err == nil && meta.UID == os.Getuid() && a.layout.Runtime == meta.RuntimeDir
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
	return a.startDaemonFrom(bin)
}

// startDaemonFrom starts bin as a detached daemon logging to the state dir.
func (a *App) startDaemonFrom(bin string) error {
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
