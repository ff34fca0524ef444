package guest

import (
	"context"
	"log"
	"os"
	"os/exec"
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
	mountPID1Extras(lg)
	startSSHD(lg)
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

// mountPID1Extras mounts what an init system would: /dev/pts (ptys for
// exec -t, sessions and ssh) and /dev/shm.
func mountPID1Extras(lg *log.Logger) {
	for _, m := range []struct{ fs, dir, opts string }{
		{"devpts", "/dev/pts", "gid=5,mode=620,ptmxmode=666"},
		{"tmpfs", "/dev/shm", "mode=1777"},
	} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.fs, m.dir, m.fs, unix.MS_NOSUID|unix.MS_NOEXEC, m.opts); err != nil && err != unix.EBUSY {
			lg.Printf("mount %s: %v", m.dir, err)
		}
	}
}

// sshdPaths are where images keep OpenSSH's server.
var sshdPaths = []string{"/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"}

// startSSHD starts the image's sshd, when it has one, and restarts it if
// it dies (at most once a second), so `banger vm ssh` works without an
// init system.
func startSSHD(lg *log.Logger) {
	bin := ""
	for _, p := range sshdPaths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			bin = p
			break
		}
	}
	if bin == "" {
		return
	}
	os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	go func() {
		for {
			cmd := exec.Command(bin, "-D", "-e")
			cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
			var err error
			started := time.Now()
			if err = execPIDs.start(cmd.Start, func() int { return cmd.Process.Pid }); err == nil {
				err = cmd.Wait()
				execPIDs.done(cmd.Process.Pid)
			}
			lg.Printf("sshd exited: %v", err)
			if time.Since(started) < time.Second {
				time.Sleep(time.Second)
			}
		}
	}()
}
