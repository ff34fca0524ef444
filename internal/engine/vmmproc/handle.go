package vmmproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/engine"
)

// Handle is the part of an engine.Instance every driver shares: a VMM
// process watched for its exit, killed through its pidfd, and a control
// connection closed with the handle. Drivers embed it and add Quit (and
// whatever else their control channel offers).
type Handle struct {
	proc      *Proc
	closeCtl  func()
	done      chan struct{}
	watchDone chan struct{}
	closeOnce sync.Once
}

// Watch starts watching p. When the process exits, onExit runs (it removes
// what the dead VMM left behind and may wait briefly for its last control
// messages), then Done is closed. closeCtl closes the driver's control
// connection; Close calls it. Either may be nil.
func Watch(p *Proc, onExit, closeCtl func()) *Handle {
	h := &Handle{proc: p, closeCtl: closeCtl, done: make(chan struct{}), watchDone: make(chan struct{})}
	go func() {
		defer close(h.watchDone)
		if !p.Wait() {
			return // closed
		}
		if onExit != nil {
			onExit()
		}
		close(h.done)
	}()
	return h
}

// PID is the VMM's process id.
func (h *Handle) PID() int { return h.proc.PID }

// Done is closed once the VMM process has exited (see engine.Instance).
func (h *Handle) Done() <-chan struct{} { return h.done }

// Signal sends sig to the VMM; a VMM that already exited is not an error.
func (h *Handle) Signal(sig syscall.Signal) error { return h.proc.Signal(sig) }

// Kill sends sig to the VMM without waiting (see engine.Instance).
func (h *Handle) Kill(sig syscall.Signal) error {
	if err := h.proc.Signal(sig); err != nil {
		return fmt.Errorf("kill vmm: %w", err)
	}
	return nil
}

// Exited reports whether Done is closed.
func (h *Handle) Exited() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// WaitExit waits until the VMM has exited (nil), the handle was closed
// (os.ErrClosed) or ctx ends.
func (h *Handle) WaitExit(ctx context.Context) error {
	select {
	case <-h.done:
		return nil
	case <-h.watchDone:
		// The watcher also ends after an exit; only a closed handle is
		// an error (select picks at random when both are ready).
		if h.Exited() {
			return nil
		}
		return os.ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("wait for exit: %w", ctx.Err())
	}
}

// Close drops the control connection and stops watching the process; the
// VM keeps running. It is idempotent.
func (h *Handle) Close() error {
	h.closeOnce.Do(func() {
		if h.closeCtl != nil {
			h.closeCtl()
		}
		h.proc.Close()
	})
	<-h.watchDone
	return nil
}

// OpenVerified opens pid and checks that it is the VMM match identifies:
// its command line is read after the handle is opened, and the handle's
// process must still be alive then, so the command line belongs to it. A
// pid that is gone or now runs something else fails with an error wrapping
// engine.ErrNotRunning; what names the VMM in it ("qemu").
func OpenVerified(pid int, what string, match func(argv []string) bool) (*Proc, error) {
	p, err := Open(pid)
	if err != nil {
		return nil, err
	}
	if !match(Cmdline(pid)) || p.Exited() {
		p.Close()
		return nil, fmt.Errorf("pid %d is not the vm's %s (gone, or the pid was reused): %w", pid, what, engine.ErrNotRunning)
	}
	return p, nil
}

// FindPID returns the pid of a VMM started earlier: the first pid file of
// pidFiles that reads, else the only live process match accepts (a lost or
// mangled pidfile must not orphan a live VM). It fails with an error
// wrapping engine.ErrNotRunning when there is no such pid (the pid it
// returns still has to be verified; see OpenVerified).
func FindPID(match func(argv []string) bool, pidFiles ...string) (int, error) {
	var first error
	for _, f := range pidFiles {
		pid, err := ReadPIDFile(f)
		if err == nil {
			return pid, nil
		}
		if first == nil {
			first = err
		}
	}
	pids := Find(match)
	if len(pids) != 1 {
		return 0, fmt.Errorf("read pidfile: %w (%w)", first, engine.ErrNotRunning)
	}
	return pids[0], nil
}

// KillAll kills (SIGKILL) every live process match accepts, the one
// pidFile names included, and waits up to wait for them to die, rescanning
// until a scan comes back empty twice in a row (a VMM still forking may
// appear after a first scan). It fails if one survived.
func KillAll(pidFile string, match func(argv []string) bool, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for quiet := 0; quiet < 2; {
		pids := Find(match)
		if pid, err := ReadPIDFile(pidFile); err == nil && match(Cmdline(pid)) {
			pids = append(pids, pid)
		}
		if len(pids) == 0 {
			quiet++
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("vmm pid %d survived SIGKILL", pids[0])
		}
		quiet = 0
		for _, pid := range pids {
			p, err := Open(pid)
			if err != nil {
				continue
			}
			if match(Cmdline(pid)) {
				p.Signal(syscall.SIGKILL)
				for !p.Exited() && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
			}
			p.Close()
		}
	}
	return nil
}

// RemoveIfExists removes path; a missing file (or an empty path) is not
// an error.
func RemoveIfExists(path string) error {
	if path == "" {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// LastLines returns the last n lines of s, joined with "; " (for an error
// message quoting a VMM's log).
func LastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// ReadBounded reads at most max bytes of path ("" on error): a VMM's log
// holds what its guest made it print.
func ReadBounded(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, max))
	return string(b)
}

// VMName is how errors name spec's VM.
func VMName(spec engine.Spec) string {
	if spec.Name != "" {
		return spec.Name
	}
	return spec.ID
}

// File is a spec field's name and path, for CheckInputs and CheckDirs.
type File struct{ Field, Path string }

// CheckInputs fails, with the field named, on an input file (kernel,
// disk) that is missing or not a regular file: the VMM would reject it
// with a terser message. Empty paths are skipped.
func CheckInputs(files ...File) error {
	for _, f := range files {
		if f.Path == "" {
			continue
		}
		st, err := os.Stat(f.Path)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Field, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s %s is not a regular file", f.Field, f.Path)
		}
	}
	return nil
}

// CheckDirs fails, with the field named, when the directory a socket, log
// or pid file is to be made in does not exist. Empty paths are skipped.
func CheckDirs(files ...File) error {
	for _, f := range files {
		if f.Path == "" {
			continue
		}
		dir := filepath.Dir(f.Path)
		if st, err := os.Stat(dir); err != nil {
			return fmt.Errorf("%s directory: %w", f.Field, err)
		} else if !st.IsDir() {
			return fmt.Errorf("%s directory %s is not a directory", f.Field, dir)
		}
	}
	return nil
}
