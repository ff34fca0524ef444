package sysinstall

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"banger/internal/hosttools"
)

// Systemctl runs systemctl commands. HostSystemctl is the real one; tests
// fake it.
type Systemctl interface {
	// Run runs systemctl with args.
	Run(ctx context.Context, args ...string) error
	// Output runs systemctl with args and returns its standard output.
	Output(ctx context.Context, args ...string) ([]byte, error)
}

// ErrSystemdNotRunning is wrapped by HostSystemctl's errors on a machine
// whose PID 1 is not systemd.
var ErrSystemdNotRunning = errors.New("systemd is not running on this machine")

// HostSystemctl runs the machine's systemctl, after checking that systemd
// is PID 1 (that /run/systemd/system exists, as sd_booted(3) does).
type HostSystemctl struct {
	// Binary is the systemctl to run (default "systemctl", from PATH).
	Binary string
	// Root is where /run/systemd/system and /proc/1/comm are looked for
	// (default "/"); tests only.
	Root string
}

// Run implements Systemctl.
func (s HostSystemctl) Run(ctx context.Context, args ...string) error {
	_, err := s.Output(ctx, args...)
	return err
}

// Output implements Systemctl.
func (s HostSystemctl) Output(ctx context.Context, args ...string) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	bin := s.Binary
	if bin == "" {
		bin = hosttools.Systemctl
	}
	cmd, err := hosttools.Command(ctx, bin, args...)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return out, fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, msg)
		}
		return out, fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// check fails with ErrSystemdNotRunning when systemd is not PID 1.
func (s HostSystemctl) check() error {
	root := s.Root
	if root == "" {
		root = "/"
	}
	fi, err := os.Stat(under(root, "/run/systemd/system"))
	if err == nil && fi.IsDir() {
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check for systemd: %w", err)
	}
	pid1 := "unknown"
	if b, err := os.ReadFile(under(root, "/proc/1/comm")); err == nil && len(bytes.TrimSpace(b)) > 0 {
		pid1 = string(bytes.TrimSpace(b))
	}
	return fmt.Errorf("%w (PID 1 is %s); banger can still run without services: the CLI starts bangerd on demand", ErrSystemdNotRunning, pid1)
}

// UnitStatus is what systemd says about one unit.
type UnitStatus struct {
	Name    string `json:"name"`
	Load    string `json:"load"`    // LoadState: loaded, not-found, ...
	Active  string `json:"active"`  // ActiveState: active, inactive, failed, activating, ...
	Sub     string `json:"sub"`     // SubState: running, dead, auto-restart, ...
	Enabled string `json:"enabled"` // UnitFileState: enabled, disabled, ...
	MainPID int    `json:"main_pid"`
}

// StatusReport describes an installation.
type StatusReport struct {
	Installed bool         `json:"installed"` // the install metadata exists
	Metadata  *Metadata    `json:"metadata,omitempty"`
	Units     []UnitStatus `json:"units,omitempty"`
	// SystemdErr says why systemd could not be asked about the units.
	SystemdErr string `json:"systemd_error,omitempty"`
}

// Status reads the install metadata and asks systemd about both units. It
// fails only on unreadable metadata; when systemd cannot be asked (e.g. it
// is not running), the report says why in SystemdErr.
func Status(ctx context.Context, o Options) (*StatusReport, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	r := &StatusReport{}
	m, err := ReadMetadata(o.Root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("status: %w", err)
	default:
		r.Installed, r.Metadata = true, m
	}
	if o.Systemctl == nil {
		r.SystemdErr = "no systemctl for root " + o.Root
		return r, nil
	}
	for _, u := range unitNames() {
		out, err := o.Systemctl.Output(ctx, "show", "--property=LoadState,ActiveState,SubState,UnitFileState,MainPID", u)
		if err != nil {
			r.Units, r.SystemdErr = nil, err.Error()
			return r, nil
		}
		r.Units = append(r.Units, parseShow(u, out))
	}
	return r, nil
}

// parseShow reads systemctl show's KEY=VALUE lines.
func parseShow(unit string, out []byte) UnitStatus {
	st := UnitStatus{Name: unit}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "LoadState":
			st.Load = v
		case "ActiveState":
			st.Active = v
		case "SubState":
			st.Sub = v
		case "UnitFileState":
			st.Enabled = v
		case "MainPID":
			st.MainPID, _ = strconv.Atoi(v)
		}
	}
	return st
}

// Describe writes the report in plain words.
func (r *StatusReport) Describe(w io.Writer) {
	if !r.Installed {
		fmt.Fprintf(w, "banger is not installed as a system service (no %s).\n", MetadataPath)
	} else {
		m := r.Metadata
		fmt.Fprintf(w, "banger %s installed as a system service for %s (uid %d), binaries in %s, since %s.\n",
			orUnknown(m.Version), m.Owner, m.UID, m.BinDir, m.InstalledAt.Format("2006-01-02 15:04:05 MST"))
		fmt.Fprintf(w, "Daemon socket: %s; helper socket: %s.\n", m.DaemonSocket(), m.HelperSocket)
	}
	if r.SystemdErr != "" {
		fmt.Fprintf(w, "Services: unknown: %s\n", r.SystemdErr)
		return
	}
	for _, u := range r.Units {
		if u.Load == "not-found" {
			fmt.Fprintf(w, "%s: not installed\n", u.Name)
			continue
		}
		pid := ""
		if u.MainPID > 0 {
			pid = fmt.Sprintf(", pid %d", u.MainPID)
		}
		fmt.Fprintf(w, "%s: %s (%s)%s, %s at boot\n", u.Name, u.Active, u.Sub, pid, u.Enabled)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown version)"
	}
	return s
}

// Restart restarts banger-helper.service, then bangerd.service (so that the
// daemon finds the new helper). Running VMs are not affected.
func Restart(ctx context.Context, o Options) error {
	o, err := o.withDefaults()
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if _, err := ReadMetadata(o.Root); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errors.New("restart: banger is not installed as a system service (run banger system install)")
		}
		return fmt.Errorf("restart: %w", err)
	}
	if o.Systemctl == nil {
		return fmt.Errorf("restart: no systemctl for root %s", o.Root)
	}
	for _, u := range unitNames() {
		if err := o.Systemctl.Run(ctx, "restart", u); err != nil {
			return fmt.Errorf("restart %s: %w", u, err)
		}
	}
	return nil
}
