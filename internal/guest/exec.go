package guest

import (
	"context"
	"errors"
	"io"
	"log"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"banger/internal/agent"
)

// defaultEnv is the environment of every command the agent runs; the
// agent's own environment (a systemd unit's, or PID 1's) is not inherited.
var defaultEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"USER=root",
	"LOGNAME=root",
	"SHELL=/bin/sh",
	"LANG=C.UTF-8",
}

// baseEnv is defaultEnv with HOME=/ when the guest has no /root directory
// (an image without one whose /root could not be made).
func baseEnv() []string {
	env := append([]string{}, defaultEnv...)
	if fi, err := os.Stat("/root"); err != nil || !fi.IsDir() {
		for i, kv := range env {
			if strings.HasPrefix(kv, "HOME=") {
				env[i] = "HOME=/"
			}
		}
	}
	return env
}

// runExec runs one command and speaks the frame protocol on st until the
// command has exited and its output is delivered. If the host goes away
// first, the command's process group is killed.
func runExec(ctx context.Context, lg *log.Logger, req agent.ExecRequest, st io.ReadWriteCloser) {
	fw := agent.NewFrameWriter(st)
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	cmd.Env = append(baseEnv(), req.Env...)
	if req.TTY {
		term := req.Term
		if term == "" {
			term = "xterm"
		}
		cmd.Env = append(cmd.Env, "TERM="+term)
	}
	cmd.Dir = req.Cwd
	if cmd.Dir == "" {
		cmd.Dir = "/root"
		if _, err := os.Stat(cmd.Dir); err != nil {
			cmd.Dir = "/"
		}
	}

	var (
		ptmx    *os.File
		readers []*os.File
		stdin   io.WriteCloser
		outputs sync.WaitGroup
		err     error
	)
	if req.TTY {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		ws := &pty.Winsize{Rows: req.Rows, Cols: req.Cols}
		if ws.Rows == 0 || ws.Cols == 0 {
			ws = &pty.Winsize{Rows: 24, Cols: 80}
		}
		err = execPIDs.start(func() (err error) {
			ptmx, err = pty.StartWithAttrs(cmd, ws, cmd.SysProcAttr)
			return err
		}, func() int { return cmd.Process.Pid })
		if err == nil {
			stdin = ptmx
			outputs.Add(1)
			go func() {
				defer outputs.Done()
				// EIO once the slave side is closed by the exiting process.
				io.Copy(fw.StreamWriter(agent.FrameStdout), ptmx)
			}()
		}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		// Our own pipes rather than StdoutPipe: cmd.Wait must not close
		// the read ends before every byte the command wrote is read.
		var outR, outW, errR, errW *os.File
		if outR, outW, err = os.Pipe(); err == nil {
			if errR, errW, err = os.Pipe(); err == nil {
				cmd.Stdout, cmd.Stderr = outW, errW
				if stdin, err = cmd.StdinPipe(); err == nil {
					err = execPIDs.start(cmd.Start, func() int { return cmd.Process.Pid })
				}
				errW.Close()
			}
			outW.Close()
		}
		if err == nil {
			readers = []*os.File{outR, errR}
			outputs.Add(2)
			go func() { defer outputs.Done(); io.Copy(fw.StreamWriter(agent.FrameStdout), outR) }()
			go func() { defer outputs.Done(); io.Copy(fw.StreamWriter(agent.FrameStderr), errR) }()
		}
	}
	if err != nil {
		code := 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = 127
		}
		fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: code, Error: err.Error()})
		return
	}

	pid := cmd.Process.Pid
	killGroup := func(sig syscall.Signal) { syscall.Kill(-pid, sig) }

	// Frames from the host: stdin, signals, resizes. When the stream ends
	// without the command having exited, the host is gone: kill it.
	exited := make(chan struct{})
	go func() {
		defer func() {
			select {
			case <-exited:
			default:
				killGroup(syscall.SIGKILL)
			}
		}()
		for {
			t, p, err := agent.ReadFrame(st)
			if err != nil {
				return
			}
			switch t {
			case agent.FrameStdin:
				if len(p) == 0 {
					if ptmx != nil {
						ptmx.Write([]byte{4}) // ^D: EOF for the terminal's reader
					} else {
						stdin.Close()
					}
					continue
				}
				stdin.Write(p)
			case agent.FrameSignal:
				if len(p) == 1 {
					if ptmx != nil {
						killGroup(syscall.Signal(p[0]))
					} else {
						cmd.Process.Signal(syscall.Signal(p[0]))
					}
				}
			case agent.FrameResize:
				if rows, cols, err := agent.ParseResize(p); err == nil && ptmx != nil {
					pty.Setsize(ptmx, &pty.Winsize{Rows: rows, Cols: cols})
				}
			}
		}
	}()

	waitErr := cmd.Wait()
	execPIDs.done(pid)
	close(exited)
	if ptmx != nil {
		// The process is gone; output it wrote is still readable until
		// EIO, after which the copier ends.
		outputs.Wait()
		ptmx.Close()
	} else {
		// Output is complete when every writer is gone. A background
		// process that keeps stdout open gets a short grace period.
		waited := make(chan struct{})
		go func() { outputs.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(2 * time.Second):
			for _, r := range readers {
				r.Close()
			}
			<-waited
		}
	}
	status := agent.ExitStatus{}
	var ee *exec.ExitError
	switch {
	case waitErr == nil:
	case errors.As(waitErr, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			status.Signal = ws.Signal().String()
			status.Code = 128 + int(ws.Signal())
		} else {
			status.Code = ws.ExitStatus()
		}
	default:
		status.Code = 1
		status.Error = waitErr.Error()
	}
	if err := fw.WriteJSON(agent.FrameExit, status); err != nil {
		lg.Printf("exec %q: send exit status: %v", req.Argv[0], err)
	}
}
