package guest

import (
	"context"
	"log"
	"os"
	"os/signal"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RunPID1 is the agent's mode for images without an init system: it stays
// PID 1, reaps orphaned processes, and serves the host.
func RunPID1(lg *log.Logger) error {
	go reap()
	srv := &Server{Log: lg, Poweroff: func(bool) error { return PoweroffNow() }, Sessions: NewSessionManager(SessionDir, lg)}
	// SIGTERM/SIGINT to PID 1 (e.g. ctrl-alt-del) mean power off.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGTERM, unix.SIGINT)
	go func() {
		<-sig
		PoweroffNow()
	}()
	return srv.Serve(context.Background())
}

// reap collects every exited process that no agent exec is waiting for,
// so orphans re-parented to PID 1 never linger as zombies. It peeks with
// waitid(WNOWAIT) and leaves the agent's own children to os/exec.
func reap() {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD)
	for range ch {
		for {
			var info unix.Siginfo
			execPIDs.mu.Lock()
			err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
			pid := int(siginfoPID(&info))
			if err != nil || pid == 0 {
				execPIDs.mu.Unlock()
				break
			}
			if execPIDs.pids[pid] {
				execPIDs.mu.Unlock()
				// Its exec will collect it; look again shortly for others.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			execPIDs.mu.Unlock()
		}
	}
}

// siginfoPID extracts si_pid from a Siginfo (offset 16 on 64-bit Linux).
func siginfoPID(info *unix.Siginfo) int32 {
	b := (*[128]byte)(unsafe.Pointer(info))
	return *(*int32)(unsafe.Pointer(&b[16]))
}

// execPIDs are the processes started by runExec, which os/exec reaps.
var execPIDs = &pidSet{pids: map[int]bool{}}

type pidSet struct {
	mu   sync.Mutex
	pids map[int]bool
}

func (s *pidSet) start(f func() error, pid func() int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := f(); err != nil {
		return err
	}
	s.pids[pid()] = true
	return nil
}

func (s *pidSet) done(pid int) {
	s.mu.Lock()
	delete(s.pids, pid)
	s.mu.Unlock()
}
