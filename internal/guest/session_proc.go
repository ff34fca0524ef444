package guest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"banger/internal/agent"
)

// sessionEnv returns the environment of a new session: the default one,
// then req.Env, then TERM in TTY mode (the order runExec uses).
func sessionEnv(req agent.SessionRequest) ([]string, error) {
	env := baseEnv()
	for _, kv := range req.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("bad environment entry %q: want KEY=VALUE", kv)
		}
		env = append(env, kv)
	}
	if req.TTY {
		term := req.Term
		if term == "" {
			term = "xterm"
		}
		env = append(env, "TERM="+term)
	}
	return env, nil
}

// envValue returns the value of key in env; as for exec, the last entry wins.
func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// sessionCwd returns the directory a session starts in: cwd, which must be
// an absolute path to a directory, or /root (/ when that is missing).
func sessionCwd(cwd string) (string, error) {
	if cwd == "" {
		if fi, err := os.Stat("/root"); err == nil && fi.IsDir() {
			return "/root", nil
		}
		return "/", nil
	}
	if !filepath.IsAbs(cwd) {
		return "", fmt.Errorf("working directory %q is not an absolute path", cwd)
	}
	fi, err := os.Stat(cwd)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("working directory %s does not exist", cwd)
	case err != nil:
		return "", fmt.Errorf("working directory: %w", err)
	case !fi.IsDir():
		return "", fmt.Errorf("working directory %s is not a directory", cwd)
	}
	return filepath.Clean(cwd), nil
}

// lookPathEnv resolves the command name file like exec.LookPath, but
// against the given PATH (the session's, not the agent's); a name with a
// slash is taken relative to cwd.
func lookPathEnv(file, path, cwd string) (string, error) {
	if strings.Contains(file, "/") {
		p := file
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("command %s: %w", file, err)
		}
		return p, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		p := filepath.Join(dir, file)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q is not in PATH (%s)", file, path)
}

// checkExecutable reports whether p is a file someone may execute (the
// agent runs as root, for whom any execute bit will do).
func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return errors.New("no such file")
	case err != nil:
		return err
	case fi.IsDir():
		return errors.New("is a directory")
	case fi.Mode()&0o111 == 0:
		return errors.New("not executable")
	}
	return nil
}

// startProcess starts cmd in a new session (so that its process group can
// be signalled as a whole) and registers it with execPIDs. It returns the
// file the session's output is read from and the one its input is written
// to: both the terminal's master side in TTY mode, else two pipes (stdout
// and stderr share one, so they merge in the order they were written).
func startProcess(cmd *exec.Cmd, tty bool, rows, cols uint16) (out, in *os.File, err error) {
	pid := func() int { return cmd.Process.Pid }
	if tty {
		attrs := &syscall.SysProcAttr{Setsid: true, Setctty: true}
		ws := &pty.Winsize{Rows: rows, Cols: cols}
		if ws.Rows == 0 || ws.Cols == 0 {
			ws = &pty.Winsize{Rows: 24, Cols: 80}
		}
		var ptmx *os.File
		err = execPIDs.start(func() (err error) {
			ptmx, err = pty.StartWithAttrs(cmd, ws, attrs)
			return err
		}, pid)
		if err != nil {
			return nil, nil, err
		}
		ptmx = pollable(ptmx)
		return ptmx, ptmx, nil
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, outW
	err = execPIDs.start(cmd.Start, pid)
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, nil, err
	}
	return outR, inW, nil
}

// pollable returns f (which creack/pty leaves in blocking mode) as a
// non-blocking file in the runtime poller, so that closing it interrupts
// a pending read or write. On failure it returns f as it is.
func pollable(f *os.File) *os.File {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return f
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return f
	}
	nf := os.NewFile(uintptr(fd), f.Name())
	f.Close()
	return nf
}

// setWinsize resizes the terminal whose master side is f. Unlike
// pty.Setsize it does not put f back into blocking mode.
func setWinsize(f *os.File, rows, cols uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	return ierr
}

// sessionExitStatus turns the result of cmd.Wait into an ExitStatus.
func sessionExitStatus(err error) agent.ExitStatus {
	var st agent.ExitStatus
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			st.Signal = ws.Signal().String()
			st.Code = 128 + int(ws.Signal())
		} else {
			st.Code = ee.ExitCode()
		}
	default:
		st.Code = 1
		st.Error = err.Error()
	}
	return st
}

// procStartTime returns when process pid started (in clock ticks since
// boot, field 22 of /proc/<pid>/stat), which with the pid identifies a
// process across pid reuse. ok is false when there is no such process or
// it is a zombie.
func procStartTime(pid int) (start uint64, ok bool) {
	if pid <= 0 {
		return 0, false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may contain
	// anything, so fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return start, err == nil
}

// validSessionName checks a session name: 1 to 63 characters of a-z, 0-9
// and '-', not starting or ending with '-' (it is a directory name, and
// fits where host names do).
func validSessionName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("invalid session name %q: want 1 to 63 characters", name)
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return fmt.Errorf("invalid session name %q: use only a-z, 0-9 and '-'", name)
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("invalid session name %q: must not start or end with '-'", name)
	}
	return nil
}
