// Package guest is the inside of banger-agent: the init stage that brings a
// guest up from banger's initramfs, and the server that answers the host over
// the virtio-serial agent port.
package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"banger/internal/agent"
)

// Version is reported by ping; set by the build.
var Version = "dev"

// Server answers agent requests.
type Server struct {
	Log *log.Logger
	// Poweroff turns the machine off. It is a field so that tests (and the
	// PID-1 mode, which has no init system to ask) can replace it.
	Poweroff func(force bool) error
	// Sessions runs long-lived guest sessions; nil refuses session
	// operations.
	Sessions *SessionManager
	// Readiness answers the readiness operation; nil asks this guest
	// (a field so that tests can stand in for a guest).
	Readiness func(ctx context.Context) agent.Readiness
	// SetClock sets the wall clock to a checked time (ns since the
	// epoch); nil sets CLOCK_REALTIME (a field so that tests never set
	// the clock of the host they run on).
	SetClock func(ns int64) error

	system systemCache
	// bound, when set, is called once a listener holds its address (tests
	// wait on it instead of probing the port, which would race the bind).
	bound func()
}

// FindPort returns the device node of the virtio-serial port called name.
func FindPort(name string) (string, error) {
	matches, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			return filepath.Join("/dev", filepath.Base(filepath.Dir(m))), nil
		}
	}
	return "", fmt.Errorf("no virtio-serial port named %q", name)
}

// ServePort serves the host over the named virtio-serial port until ctx
// ends. When the host side disconnects (e.g. the daemon restarts) the port
// reads EOF; the session is dropped and a new one starts on the next host.
func (s *Server) ServePort(ctx context.Context, name string) error {
	var dev string
	for {
		var err error
		if dev, err = FindPort(name); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.Log.Printf("serving on %s", dev)
	for ctx.Err() == nil {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			s.Log.Printf("open %s: %v", dev, err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if !waitHost(ctx, f) {
			f.Close()
			continue
		}
		start := time.Now()
		err = s.ServeConn(ctx, &portConn{f})
		f.Close()
		if time.Since(start) < 100*time.Millisecond {
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			s.Log.Printf("session ended: %v", err)
		}
	}
	return ctx.Err()
}

// waitHost blocks until a host is attached to the port and has sent
// something. The virtio console driver reports POLLHUP while no host is
// connected (reads then return EOF at once); bytes a previous host left
// behind are drained then, so a new session never starts mid-stream.
func waitHost(ctx context.Context, f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	scratch := make([]byte, 4096)
	for ctx.Err() == nil {
		var revents int16
		var perr error
		rc.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			_, perr = unix.Poll(fds, 200)
			revents = fds[0].Revents
		})
		if perr != nil && perr != unix.EINTR {
			return false
		}
		switch {
		case revents&unix.POLLHUP != 0:
			rc.Read(func(fd uintptr) bool {
				unix.Read(int(fd), scratch)
				return true
			})
			time.Sleep(50 * time.Millisecond)
		case revents&unix.POLLIN != 0:
			return true
		}
	}
	return false
}

// ServeConn runs one yamux session over conn.
func (s *Server) ServeConn(ctx context.Context, conn io.ReadWriteCloser) error {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	cfg.MaxStreamWindowSize = agent.StreamWindow
	sess, err := yamux.Server(conn, cfg)
	if err != nil {
		return err
	}
	defer sess.Close()
	go func() {
		<-ctx.Done()
		sess.Close()
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return err
		}
		go s.handle(ctx, st)
	}
}

func (s *Server) handle(ctx context.Context, st net.Conn) {
	defer st.Close()
	br := bufio.NewReader(st)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return
	}
	var req agent.Request
	if err := json.Unmarshal(line, &req); err != nil {
		reply(st, agent.Response{Error: "bad request: " + err.Error()})
		return
	}
	switch req.Op {
	case agent.OpPing:
		reply(st, agent.Response{OK: true, Version: Version, BootID: bootID(), PID1: pid1()})
	case agent.OpSync:
		unix.Sync()
		reply(st, agent.Response{OK: true})
	case agent.OpPoweroff:
		unix.Sync()
		reply(st, agent.Response{OK: true})
		st.Close()
		if s.Poweroff != nil {
			// Give the reply a moment to leave before the machine goes.
			time.Sleep(50 * time.Millisecond)
			if err := s.Poweroff(req.Force); err != nil {
				s.Log.Printf("poweroff: %v", err)
			}
		}
	case agent.OpExec:
		if req.Exec == nil || len(req.Exec.Argv) == 0 {
			fw := agent.NewFrameWriter(st)
			fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 126, Error: "exec: no command given"})
			return
		}
		runExec(ctx, s.Log, *req.Exec, &readerConn{Reader: br, Conn: st})
	case agent.OpSSHSetup:
		keys, err := authorizeKey(req.AuthorizedKey)
		if err != nil {
			reply(st, agent.Response{Error: "ssh setup: " + err.Error()})
			return
		}
		reply(st, agent.Response{OK: true, HostKeys: keys})
	case agent.OpPorts:
		ports, err := ListeningPorts()
		if err != nil {
			reply(st, agent.Response{Error: "list ports: " + err.Error()})
			return
		}
		out := make([]agent.PortInfo, 0, len(ports))
		for _, p := range ports {
			out = append(out, agent.PortInfo{Proto: p.Proto, Addr: p.Addr, Port: p.Port, PID: p.PID, Process: p.Process})
		}
		reply(st, agent.Response{OK: true, Ports: out})
	case agent.OpMeminfo:
		text, err := readMeminfo()
		if err != nil {
			reply(st, agent.Response{Error: "meminfo: " + err.Error()})
			return
		}
		reply(st, agent.Response{OK: true, Meminfo: text, BalloonDevice: balloonDevice(), BalloonDriver: balloonDriverBound()})
	case agent.OpReadiness:
		var r agent.Readiness
		if s.Readiness != nil {
			r = s.Readiness(ctx)
		} else {
			r = checkReadiness(ctx, &s.system)
		}
		reply(st, agent.Response{OK: true, Readiness: &r})
	case agent.OpSetClock:
		if err := s.setClock(req.ClockNS); err != nil {
			reply(st, agent.Response{Error: "set clock: " + err.Error()})
			return
		}
		reply(st, agent.Response{OK: true})
	case agent.OpUntar:
		runUntar(req.Untar, &readerConn{Reader: br, Conn: st})
	case agent.OpFileStat, agent.OpFileList, agent.OpFileRead, agent.OpFileWrite,
		agent.OpFileRemove, agent.OpFileMkdir, agent.OpFileWatch,
		agent.OpFileArchive, agent.OpFileExtract:
		s.handleFile(ctx, req, &readerConn{Reader: br, Conn: st})
	case agent.OpSessionStart, agent.OpSessionList, agent.OpSessionShow,
		agent.OpSessionLogs, agent.OpSessionAttach, agent.OpSessionStop:
		if s.Sessions == nil {
			reply(st, agent.Response{Error: "sessions are not available in this agent"})
			return
		}
		s.Sessions.Handle(ctx, req, &readerConn{Reader: br, Conn: st})
	default:
		reply(st, agent.Response{Error: fmt.Sprintf("unknown operation %q", req.Op)})
	}
}

func reply(w io.Writer, r agent.Response) {
	b, _ := json.Marshal(r)
	w.Write(append(b, '\n'))
}

func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

func pid1() string {
	b, _ := os.ReadFile("/proc/1/comm")
	return strings.TrimSpace(string(b))
}

// portConn adapts the port file to io.ReadWriteCloser.
type portConn struct{ f *os.File }

func (p *portConn) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	return n, err
}
func (p *portConn) Write(b []byte) (int, error) { return p.f.Write(b) }
func (p *portConn) Close() error                { return nil }

// readerConn reads through the buffered reader that consumed the request
// line, and writes to the stream.
type readerConn struct {
	io.Reader
	net.Conn
}

func (r *readerConn) Read(b []byte) (int, error) { return r.Reader.Read(b) }
