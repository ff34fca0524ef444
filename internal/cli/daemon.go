package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/cli/style"
	"banger/internal/client"
	"banger/internal/doctor/report"
)

func (a *App) daemonCmd() *cobra.Command {
	c := &cobra.Command{Use: "daemon", Short: "Control the banger daemon"}
	var statusJSON bool
	status := &cobra.Command{
		Use: "status", Short: "Say whether the daemon runs", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var p api.Ping
			if err := a.client.Do(cmd.Context(), "GET", "/ping", nil, &p); err != nil {
				return err
			}
			if statusJSON {
				return printJSON(a.Stdout, p)
			}
			fmt.Fprintf(a.Stdout, "running\tpid %d\tversion %s\t%s\n", p.PID, p.Version, p.Socket)
			return nil
		},
	}
	addJSONFlag(status, &statusJSON)
	c.AddCommand(&cobra.Command{
		Use: "socket", Short: "Print the daemon's API socket path", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(a.Stdout, a.layout.Socket())
			return nil
		},
	}, &cobra.Command{
		Use: "start", Short: "Start the daemon in the background (done on demand anyway)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.ensureDaemon(cmd.Context())
		},
	}, status, &cobra.Command{
		Use: "stop", Short: "Stop the daemon (running VMs keep running)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var p api.Ping
			if err := a.client.Do(ctx, "GET", "/ping", nil, &p); err != nil {
				if errors.Is(err, client.ErrUnavailable) {
					fmt.Fprintln(a.Stderr, "daemon not running")
					return nil
				}
				return err
			}
			return a.stopDaemon(ctx, p.PID, 15*time.Second)
		},
	})
	return c
}

// errStillRunning: a daemon asked to stop had not exited in time.
var errStillRunning = errors.New("still running")

// stopDaemon asks the daemon (process pid) to stop and waits until that
// process is gone. Running VMs keep running.
func (a *App) stopDaemon(ctx context.Context, pid int, timeout time.Duration) error {
	if err := a.client.Do(ctx, "POST", "/daemon/stop", nil, nil); err != nil {
		return fmt.Errorf("stop bangerd: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("bangerd (pid %d) did not stop within %v: %w", pid, timeout, errStillRunning)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func pidAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

func (a *App) doctorCmd() *cobra.Command {
	var asJSON, probe bool
	c := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run banger VMs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks, err := a.runDoctor(cmd.Context(), probe)
			if err != nil {
				return err
			}
			if asJSON {
				printJSONList(a.Stdout, checks)
			} else {
				st := a.outStyle()
				for _, c := range checks {
					fmt.Fprintf(a.Stdout, "%s  %-10s %s\n", statusWord(st, c.Status), c.Name, c.Detail)
					if c.Fix != "" && c.Status != report.Pass {
						fmt.Fprintf(a.Stdout, "      fix: %s\n", c.Fix)
					}
				}
			}
			if report.Failed(checks) {
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	addJSONFlag(c, &asJSON)
	c.Flags().BoolVar(&probe, "probe", false, "boot a throwaway guest under KVM (about 15 s) to learn whether KVM works, instead of reading the daemon's cached verdict")
	return c
}

// maxDoctorReport bounds what `bangerd doctor` may print (a report is a
// few KiB).
const maxDoctorReport = 4 << 20

// runDoctor runs the checks in `bangerd doctor`, found as for autostart:
// the checks read the store and the engines, which this binary does not
// link. It works whether or not a daemon runs (and says why none starts);
// bangerd's own messages go to our stderr.
func (a *App) runDoctor(ctx context.Context, probe bool) ([]report.Check, error) {
	bin, err := findBangerd()
	if err != nil {
		return nil, fmt.Errorf("doctor runs its checks in bangerd, which was not found next to banger or on PATH: %w", err)
	}
	args := []string{"doctor"}
	if probe {
		args = append(args, "--probe")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = a.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s doctor: %w", bin, err)
	}
	b, rerr := io.ReadAll(io.LimitReader(out, maxDoctorReport+1))
	if rerr != nil || len(b) > maxDoctorReport {
		cmd.Process.Kill() // never wait on a bangerd blocked on a full pipe
	}
	werr := cmd.Wait()
	switch {
	case rerr != nil:
		return nil, fmt.Errorf("read %s doctor: %w", bin, rerr)
	case werr != nil:
		return nil, fmt.Errorf("%s doctor: %w", bin, werr)
	case len(b) > maxDoctorReport:
		return nil, fmt.Errorf("%s doctor: report larger than %d bytes", bin, maxDoctorReport)
	}
	var checks []report.Check
	if err := json.Unmarshal(b, &checks); err != nil {
		return nil, fmt.Errorf("%s doctor: unreadable report: %w", bin, err)
	}
	return checks, nil
}

// statusWord colours a doctor status: PASS green, WARN yellow, FAIL red,
// SKIP dim.
func statusWord(st style.Style, s report.Status) string {
	switch s {
	case report.Pass:
		return st.Pass(string(s))
	case report.Warn:
		return st.Warn(string(s))
	case report.Fail:
		return st.Fail(string(s))
	case report.Skip:
		return st.Dim(string(s))
	}
	return string(s)
}
