// Package vmmproc tracks VMM processes that are not the daemon's children
// (a detached QEMU or Firecracker is reparented to init): pidfd-based exit
// detection and signalling that can never hit a recycled pid, /proc
// inspection, and pid files. Both engine drivers use it.
package vmmproc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/engine"
	"banger/internal/fsutil"
)

// Proc is a handle on a process that is not our child (a daemonized VMM is
// reparented to init), so it cannot be waited for. It uses a pidfd, which
// names the process itself rather than its pid number, so neither signals
// nor exit detection can hit a later process that reuses the pid. On kernels
// without pidfds (before 5.10) it falls back to the pid plus the process
// start time, polled.
type Proc struct {
	PID int

	f *os.File // pidfd; nil in fallback mode

	startTime string // fallback: field 22 of /proc/PID/stat

	mu     sync.Mutex
	closed bool
	stop   chan struct{} // fallback: closed by close
}

// Open opens a handle on pid. It fails with an error wrapping
// engine.ErrNotRunning if there is no such process.
func Open(pid int) (*Proc, error) {
	p := &Proc{PID: pid, stop: make(chan struct{})}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	switch {
	case err == nil:
		// O_NONBLOCK makes os.NewFile register the fd with the runtime
		// poller, so waiting costs no thread and Close interrupts it.
		p.f = os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))
		return p, nil
	case errors.Is(err, unix.ESRCH):
		return nil, fmt.Errorf("pid %d: %w", pid, engine.ErrNotRunning)
	case errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL), errors.Is(err, unix.EPERM):
		st, serr := StartTime(pid)
		if serr != nil {
			return nil, fmt.Errorf("pid %d: %w", pid, engine.ErrNotRunning)
		}
		p.startTime = st
		return p, nil
	default:
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
}

// Exited reports whether the process has exited (zombies count as exited).
func (p *Proc) Exited() bool {
	if p.f == nil {
		st, err := StartTime(p.PID)
		return err != nil || st != p.startTime
	}
	rc, err := p.f.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	cerr := rc.Control(func(fd uintptr) { gone = pidfdReadable(fd) })
	return cerr == nil && gone
}

func pidfdReadable(fd uintptr) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && n > 0 && fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0
	}
}

// Wait blocks until the process exits (true) or the handle is closed
// (false).
func (p *Proc) Wait() bool {
	if p.f == nil {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if p.Exited() {
				return true
			}
			select {
			case <-p.stop:
				return false
			case <-t.C:
			}
		}
	}
	rc, err := p.f.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	// Read parks in the runtime poller until the pidfd becomes readable
	// (the process exited) whenever the callback returns false; closing
	// the file wakes it with an error.
	err = rc.Read(func(fd uintptr) bool {
		gone = pidfdReadable(fd)
		return gone
	})
	if err == nil {
		return gone
	}
	if errors.Is(err, os.ErrClosed) || p.IsClosed() {
		return false
	}
	// The pidfd could not be parked in the poller: poll it instead.
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for !p.Exited() {
		select {
		case <-p.stop:
			return false
		case <-t.C:
		}
	}
	return true
}

func (p *Proc) IsClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// Signal sends sig to the process. A process that already exited is not an
// error.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.IsClosed() {
		return fmt.Errorf("signal pid %d: %w", p.PID, os.ErrClosed)
	}
	var err error
	if p.f == nil {
		if p.Exited() {
			return nil
		}
		err = unix.Kill(p.PID, sig)
	} else {
		rc, rerr := p.f.SyscallConn()
		if rerr != nil {
			return fmt.Errorf("signal pid %d: %w", p.PID, rerr)
		}
		if cerr := rc.Control(func(fd uintptr) { err = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); cerr != nil {
			return fmt.Errorf("signal pid %d: %w", p.PID, cerr)
		}
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal pid %d: %w", p.PID, err)
	}
	return nil
}

// Close releases the handle and wakes wait. It is idempotent.
func (p *Proc) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	close(p.stop)
	if p.f != nil {
		p.f.Close()
	}
}

// StartTime returns the start time field of /proc/PID/stat, which with
// the pid identifies a process; it fails for missing and zombie processes.
func StartTime(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	// The command name (field 2) is parenthesised and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field 22 (starttime) is f[19].
	if len(f) < 20 {
		return "", errors.New("malformed stat")
	}
	if f[0] == "Z" || f[0] == "X" {
		return "", errors.New("zombie")
	}
	return f[19], nil
}

// Cmdline returns the argv of pid, or nil if it is gone or a zombie.
func Cmdline(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// ReadPIDFile parses a pidfile (one decimal pid).
func ReadPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s: bad content %.20q", path, b)
	}
	return pid, nil
}

// WritePIDFile writes pid to path atomically (a reader never sees a
// partial file). (Firecracker writes no pidfile of its own.)
func WritePIDFile(path string, pid int) error {
	return fsutil.AtomicWriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644)
}

// Find lists live processes (other than this one) whose argv satisfies
// match.
func Find(match func(argv []string) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if match(Cmdline(pid)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
