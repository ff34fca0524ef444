package guest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent"
)

// sessionHarness is a SessionManager behind a real agent server, reached
// like the host does: over yamux on an in-memory pipe.
type sessionHarness struct {
	t   *testing.T
	m   *SessionManager
	dir string
	mux *yamux.Session
}

// newSessionHarness starts a manager over dir (a new temporary directory
// when empty); tune, if set, adjusts its limits before it is used.
func newSessionHarness(t *testing.T, dir string, tune func(*SessionManager)) *sessionHarness {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	m := NewSessionManager(dir, log.New(io.Discard, "", 0))
	m.stopGrace = 2 * time.Second
	if tune != nil {
		tune(m)
	}
	hostEnd, guestEnd := net.Pipe()
	srv := &Server{Log: log.New(io.Discard, "", 0), Sessions: m}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.ServeConn(ctx, guestEnd)
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.EnableKeepAlive = false
	mux, err := yamux.Client(hostEnd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &sessionHarness{t: t, m: m, dir: dir, mux: mux}
	t.Cleanup(func() {
		mux.Close()
		cancel()
		h.killAll()
	})
	return h
}

// killAll kills every session process this manager runs and waits for
// the sessions to end.
func (h *sessionHarness) killAll() {
	h.m.mu.Lock()
	var all []*session
	for _, s := range h.m.sessions {
		all = append(all, s)
	}
	h.m.mu.Unlock()
	for _, s := range all {
		s.signal(syscall.SIGKILL)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			h.t.Errorf("session %s did not end after SIGKILL", s.name)
		}
	}
}

// sessionConn is one stream to the agent.
type sessionConn struct {
	t    *testing.T
	st   net.Conn
	br   *bufio.Reader
	fw   *agent.FrameWriter
	resp agent.Response
	out  bytes.Buffer // stdout frames received so far
	exit *agent.ExitStatus
}

// open sends a session request and reads the response line.
func (h *sessionHarness) open(op string, sr agent.SessionRequest) *sessionConn {
	h.t.Helper()
	st, err := h.mux.OpenStream()
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { st.Close() })
	b, _ := json.Marshal(agent.Request{Op: op, Session: &sr})
	if _, err := st.Write(append(b, '\n')); err != nil {
		h.t.Fatal(err)
	}
	c := &sessionConn{t: h.t, st: st, br: bufio.NewReader(st), fw: agent.NewFrameWriter(st)}
	st.SetReadDeadline(time.Now().Add(15 * time.Second))
	line, err := c.br.ReadBytes('\n')
	if err != nil {
		h.t.Fatalf("%s: read response: %v", op, err)
	}
	if err := json.Unmarshal(line, &c.resp); err != nil {
		h.t.Fatalf("%s: bad response %q: %v", op, line, err)
	}
	return c
}

// call makes a request answered by one response line.
func (h *sessionHarness) call(op string, sr agent.SessionRequest) agent.Response {
	h.t.Helper()
	c := h.open(op, sr)
	c.st.Close()
	return c.resp
}

// start starts a session and fails the test if that fails.
func (h *sessionHarness) start(sr agent.SessionRequest) agent.SessionInfo {
	h.t.Helper()
	r := h.call(agent.OpSessionStart, sr)
	if !r.OK || r.Session == nil {
		h.t.Fatalf("start %v: %+v", sr.Argv, r)
	}
	return *r.Session
}

func (h *sessionHarness) show(name string) agent.SessionInfo {
	h.t.Helper()
	r := h.call(agent.OpSessionShow, agent.SessionRequest{Name: name})
	if !r.OK || r.Session == nil {
		h.t.Fatalf("show %s: %+v", name, r)
	}
	return *r.Session
}

// waitEnded waits until session name has ended and that is recorded.
func (h *sessionHarness) waitEnded(name string) agent.SessionInfo {
	h.t.Helper()
	s, err := h.m.get(name)
	if err != nil {
		h.t.Fatal(err)
	}
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		h.t.Fatalf("session %s did not end", name)
	}
	return h.show(name)
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// frame reads one frame, collecting output and the exit status.
func (c *sessionConn) frame() error {
	t, p, err := agent.ReadFrame(c.br)
	if err != nil {
		return err
	}
	switch t {
	case agent.FrameStdout, agent.FrameStderr:
		if c.exit != nil {
			c.t.Errorf("output after the exit frame: %q", p)
		}
		c.out.Write(p)
	case agent.FrameExit:
		if c.exit != nil {
			c.t.Errorf("second exit frame")
		}
		c.exit = &agent.ExitStatus{}
		if err := json.Unmarshal(p, c.exit); err != nil {
			c.t.Errorf("exit frame %q: %v", p, err)
		}
	default:
		c.t.Errorf("unexpected frame %q", t)
	}
	return nil
}

// readUntil reads until the output received contains want.
func (c *sessionConn) readUntil(want string) {
	c.t.Helper()
	for !strings.Contains(c.out.String(), want) {
		if err := c.frame(); err != nil {
			c.t.Fatalf("waiting for %q: %v (got %q, exit %+v)", want, err, c.out.String(), c.exit)
		}
	}
}

// readAll reads until the stream ends and returns why it ended.
func (c *sessionConn) readAll() error {
	for {
		if err := c.frame(); err != nil {
			return err
		}
	}
}

// logs fetches a session's output without following.
func (h *sessionHarness) logs(name string, tail int64) (string, *agent.ExitStatus) {
	h.t.Helper()
	c := h.open(agent.OpSessionLogs, agent.SessionRequest{Name: name, Tail: tail})
	if !c.resp.OK {
		h.t.Fatalf("logs %s: %+v", name, c.resp)
	}
	if err := c.readAll(); err != io.EOF {
		h.t.Fatalf("logs %s: stream ended with %v", name, err)
	}
	return c.out.String(), c.exit
}

func TestSessionStartListShow(t *testing.T) {
	h := newSessionHarness(t, "", nil)
	cwd := t.TempDir()
	web := h.start(agent.SessionRequest{Name: "web", Argv: []string{"sleep", "30"}, Cwd: cwd})
	if web.Name != "web" || web.State != agent.SessionRunning || web.PID <= 0 || web.Cwd != cwd || web.TTY ||
		web.StartedAt.IsZero() || web.Exit != nil || strings.Join(web.Argv, " ") != "sleep 30" {
		t.Errorf("start: %+v", web)
	}
	s1 := h.start(agent.SessionRequest{Argv: []string{"sleep", "30"}})
	wantCwd, _ := sessionCwd("")
	if s1.Name != "s1" || s1.Cwd != wantCwd {
		t.Errorf("generated session: %+v (want name s1, cwd %s)", s1, wantCwd)
	}

	// The command is looked up in the session's PATH, not the agent's.
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "mytool"), []byte("#!/bin/sh\necho \"tool $FOO\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tool := h.start(agent.SessionRequest{Argv: []string{"mytool"}, Env: []string{"PATH=" + bin + ":/usr/bin:/bin", "FOO=bar"}})
	if tool.Name != "s2" {
		t.Errorf("second generated name %q, want s2", tool.Name)
	}
	h.waitEnded("s2")
	if out, exit := h.logs("s2", 0); out != "tool bar\n" || exit == nil || exit.Code != 0 {
		t.Errorf("s2 output %q, exit %+v", out, exit)
	}

	r := h.call(agent.OpSessionList, agent.SessionRequest{})
	var names []string
	for _, s := range r.Sessions {
		names = append(names, s.Name+":"+s.State)
	}
	if got := strings.Join(names, " "); !r.OK || got != "web:running s1:running s2:exited" {
		t.Errorf("list: %q (%+v)", got, r)
	}
	if got := h.show("web"); got.PID != web.PID || got.State != agent.SessionRunning || got.Attached != 0 {
		t.Errorf("show: %+v", got)
	}
	if r := h.call(agent.OpSessionShow, agent.SessionRequest{Name: "nope"}); r.OK || !strings.Contains(r.Error, `"nope"`) {
		t.Errorf("show of a missing session: %+v", r)
	}
}

func TestSessionLaunchErrors(t *testing.T) {
	h := newSessionHarness(t, "", nil)
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	os.WriteFile(file, nil, 0o644)
	// Executable, but not something the kernel can run.
	garbage := filepath.Join(tmp, "garbage")
	os.WriteFile(garbage, []byte{0, 1, 2, 3}, 0o755)
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		req  agent.SessionRequest
		want string
	}{
		{agent.SessionRequest{}, "no command"},
		{agent.SessionRequest{Argv: []string{"true"}, Cwd: "/nonexistent-dir-xyz"}, "/nonexistent-dir-xyz does not exist"},
		{agent.SessionRequest{Argv: []string{"true"}, Cwd: file}, "not a directory"},
		{agent.SessionRequest{Argv: []string{"true"}, Cwd: "relative"}, "not an absolute path"},
		{agent.SessionRequest{Argv: []string{"definitely-not-a-command-xyz"}}, `command "definitely-not-a-command-xyz" is not in PATH`},
		{agent.SessionRequest{Argv: []string{"sh"}, Env: []string{"PATH=/nonexistent-dir-xyz"}}, `command "sh" is not in PATH`},
		{agent.SessionRequest{Argv: []string{"./nope"}, Cwd: "/"}, "./nope"},
		{agent.SessionRequest{Argv: []string{"./file"}, Cwd: tmp}, "not executable"},
		{agent.SessionRequest{Argv: []string{garbage}}, "exec format error"},
		{agent.SessionRequest{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}, "NOEQUALS"},
		{agent.SessionRequest{Argv: []string{"true"}, Name: "-a"}, "invalid session name"},
		{agent.SessionRequest{Argv: []string{"true"}, Name: "a-"}, "invalid session name"},
		{agent.SessionRequest{Argv: []string{"true"}, Name: "Web"}, "invalid session name"},
		{agent.SessionRequest{Argv: []string{"true"}, Name: "a_b"}, "invalid session name"},
		{agent.SessionRequest{Argv: []string{"true"}, Name: "../x"}, "invalid session name"},
		{agent.SessionRequest{Argv: []string{"true"}, Name: long}, "invalid session name"},
	} {
		r := h.call(agent.OpSessionStart, tc.req)
		if r.OK || !strings.Contains(r.Error, tc.want) {
			t.Errorf("start %+v: got %+v, want an error with %q", tc.req, r, tc.want)
		}
	}
	if entries, _ := os.ReadDir(h.dir); len(entries) != 0 {
		t.Errorf("failed starts left %v behind", entries)
	}

	// Names stay taken after their session has ended.
	h.start(agent.SessionRequest{Name: "dup", Argv: []string{"true"}})
	h.waitEnded("dup")
	if r := h.call(agent.OpSessionStart, agent.SessionRequest{Name: "dup", Argv: []string{"true"}}); r.OK || !strings.Contains(r.Error, `"dup" already exists`) {
		t.Errorf("duplicate start: %+v", r)
	}
	a := h.start(agent.SessionRequest{Name: "a-1", Argv: []string{"true"}})
	if a.Name != "a-1" {
		t.Errorf("start a-1: %+v", a)
	}
	r := h.call(agent.OpSessionList, agent.SessionRequest{})
	if len(r.Sessions) != 2 {
		t.Errorf("list after failed starts: %+v", r.Sessions)
	}
	if entries, _ := os.ReadDir(h.dir); len(entries) != 2 {
		t.Errorf("session directories: %v", entries)
	}
}

func TestSessionOutputSurvivesDisconnect(t *testing.T) {
	h := newSessionHarness(t, "", nil)
	// The start stream closes at once: nobody is attached while it runs.
	h.start(agent.SessionRequest{Name: "bg", Argv: []string{"sh", "-c", "echo a; sleep 0.3; echo b >&2; exit 7"}, Cwd: "/"})
	info := h.waitEnded("bg")
	if info.State != agent.SessionExited || info.Exit == nil || info.Exit.Code != 7 || info.OutputBytes != 4 ||
		!info.EndedAt.After(info.StartedAt) {
		t.Errorf("ended session: %+v", info)
	}
	out, exit := h.logs("bg", 0)
	if out != "a\nb\n" || exit == nil || exit.Code != 7 {
		t.Errorf("logs: %q, exit %+v", out, exit)
	}
	if out, _ := h.logs("bg", 2); out != "b\n" {
		t.Errorf("logs with tail 2: %q", out)
	}
}

func TestSessionLogsFollow(t *testing.T) {
	h := newSessionHarness(t, "", nil)
	h.start(agent.SessionRequest{Name: "f", Argv: []string{"sh", "-c", `echo one; read x; echo "two $x"; exit 3`}, Cwd: "/"})
	follow := h.open(agent.OpSessionLogs, agent.SessionRequest{Name: "f", Follow: true})
	if !follow.resp.OK || follow.resp.Session == nil || follow.resp.Session.Name != "f" {
		t.Fatalf("logs -f: %+v", follow.resp)
	}
	follow.readUntil("one\n")

	// Without follow, the output so far and no exit frame.
	if out, exit := h.logs("f", 0); out != "one\n" || exit != nil {
		t.Errorf("logs of a running session: %q, exit %+v", out, exit)
	}
	// A follower is not an attacher, and its input is ignored.
	follow.fw.Write(agent.FrameStdin, []byte("ignored\n"))
	if info := h.show("f"); info.Attached != 0 || info.State != agent.SessionRunning {
		t.Errorf("show while followed: %+v", info)
	}

	in := h.open(agent.OpSessionAttach, agent.SessionRequest{Name: "f", Tail: -1})
	in.fw.Write(agent.FrameStdin, []byte("go\n"))
	if err := follow.readAll(); err != io.EOF {
		t.Errorf("follow ended with %v", err)
	}
	if got := follow.out.String(); got != "one\ntwo go\n" || follow.exit == nil || follow.exit.Code != 3 {
		t.Errorf("followed %q, exit %+v", got, follow.exit)
	}
	// The attacher replayed nothing (tail -1) and saw the rest.
	if err := in.readAll(); err != io.EOF || in.out.String() != "two go\n" || in.exit == nil || in.exit.Code != 3 {
		t.Errorf("attacher: %v, %q, exit %+v", err, in.out.String(), in.exit)
	}
}

func TestSessionAttach(t *testing.T) {
	h := newSessionHarness(t, "", nil)
	h.call(agent.OpSessionList, agent.SessionRequest{}) // the server side is up
	baseline := runtime.NumGoroutine()
	h.start(agent.SessionRequest{Name: "cat", Argv: []string{"sh", "-c", "echo ready; exec cat"}, Cwd: "/"})
	waitFor(t, "the session's first output", func() bool { return h.show("cat").OutputBytes == 6 })

	a := h.open(agent.OpSessionAttach, agent.SessionRequest{Name: "cat"})
	if !a.resp.OK || a.resp.Session.Attached != 1 {
		t.Fatalf("attach: %+v", a.resp)
	}
	a.readUntil("ready\n")
	b := h.open(agent.OpSessionAttach, agent.SessionRequest{Name: "cat", Tail: 3})
	b.readUntil("dy\n")
	if got := b.out.String(); got != "dy\n" {
		t.Errorf("replay of the last 3 bytes: %q", got)
	}
	if info := h.show("cat"); info.Attached != 2 {
		t.Errorf("attached: %d, want 2", info.Attached)
	}

	a.fw.Write(agent.FrameStdin, []byte("hello\n"))
	a.readUntil("hello\n")
	b.readUntil("hello\n")
	if a.out.String() != "ready\nhello\n" || b.out.String() != "dy\nhello\n" {
		t.Errorf("a saw %q, b saw %q", a.out.String(), b.out.String())
	}

	// Detaching one leaves the session and the other attacher going.
	b.st.Close()
	waitFor(t, "the detach", func() bool { return h.show("cat").Attached == 1 })
	b.fw.Write(agent.FrameStdin, nil) // a write to a closed stream goes nowhere
	a.fw.Write(agent.FrameStdin, []byte("more\n"))
	a.readUntil("more\n")
	if info := h.show("cat"); info.State != agent.SessionRunning {
		t.Errorf("after a detach: %+v", info)
	}

	// An empty stdin frame closes stdin: cat ends.
	a.fw.Write(agent.FrameStdin, nil)
	if err := a.readAll(); err != io.EOF || a.exit == nil || a.exit.Code != 0 {
		t.Errorf("attacher at the end: %v, exit %+v", err, a.exit)
	}
	a.st.Close()
	info := h.waitEnded("cat")
	if info.Attached != 0 || info.OutputBytes != int64(len("ready\nhello\nmore\n")) {
		t.Errorf("ended: %+v", info)
	}
	// Attaching to an ended session replays its output and its end.
	c := h.open(agent.OpSessionAttach, agent.SessionRequest{Name: "cat"})
	if err := c.readAll(); err != io.EOF || c.out.String() != "ready\nhello\nmore\n" || c.exit == nil {
		t.Errorf("attach after the end: %v, %q, %+v", err, c.out.String(), c.exit)
	}
	c.st.Close()

	// Nothing of the session or its attachers is left running.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the session:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSessionSlowAttacherIsDropped(t *testing.T) {
	h := newSessionHarness(t, "", func(m *SessionManager) { m.outputCap = 64 << 10 })
	h.start(agent.SessionRequest{Name: "cat", Argv: []string{"cat"}, Cwd: "/"})
	slow := h.open(agent.OpSessionAttach, agent.SessionRequest{Name: "cat"}) // never reads
	fast := h.open(agent.OpSessionAttach, agent.SessionRequest{Name: "cat"})

	// 1 MiB through cat, at the fast attacher's pace; the slow one's
	// stream window (256 KiB) fills long before that.
	const chunk, rounds = 16 << 10, 64
	var want bytes.Buffer
	for i := range rounds {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, chunk-1)
		p = append(p, '\n')
		want.Write(p)
		fast.fw.Write(agent.FrameStdin, p)
		for fast.out.Len() < want.Len() {
			if err := fast.frame(); err != nil {
				t.Fatalf("fast attacher: %v after %d bytes", err, fast.out.Len())
			}
		}
	}
	if !bytes.Equal(fast.out.Bytes(), want.Bytes()) {
		t.Errorf("fast attacher got %d bytes, not what was sent", fast.out.Len())
	}
	waitFor(t, "the slow attacher to be dropped", func() bool { return h.show("cat").Attached == 1 })

	fast.fw.Write(agent.FrameStdin, nil)
	if err := fast.readAll(); err != io.EOF || fast.exit == nil || fast.exit.Code != 0 {
		t.Errorf("fast attacher at the end: %v, %+v", err, fast.exit)
	}
	// The slow one gets what was in flight, then the stream ends without
	// an exit frame (possibly in the middle of the frame it was stuck on).
	if err := slow.readAll(); (err != io.EOF && err != io.ErrUnexpectedEOF) || slow.exit != nil || slow.out.Len() >= want.Len() ||
		!bytes.HasPrefix(want.Bytes(), slow.out.Bytes()) {
		t.Errorf("slow attacher: %v, %d bytes, exit %+v", err, slow.out.Len(), slow.exit)
	}
	if info := h.waitEnded("cat"); info.OutputBytes != int64(want.Len()) {
		t.Errorf("output bytes %d, want %d", info.OutputBytes, want.Len())
	}
}

func TestSessionTTY(t *testing.T) {
	h := newSessionHarness(t, "", nil)
	info := h.start(agent.SessionRequest{Name: "tty", TTY: true, Rows: 30, Cols: 100, Cwd: "/",
		Argv: []string{"sh", "-c", `test -t 0 && echo "term $TERM"; stty size; read x; stty size; echo "got $x"`}})
	if !info.TTY {
		t.Errorf("start: %+v", info)
	}
	a := h.open(agent.OpSessionAttach, agent.SessionRequest{Name: "tty"})
	a.readUntil("30 100")
	a.fw.Write(agent.FrameResize, agent.ResizePayload(40, 120))
	a.fw.Write(agent.FrameStdin, nil) // ignored in TTY mode (no ^D)
	a.fw.Write(agent.FrameStdin, []byte("hi\n"))
	if err := a.readAll(); err != io.EOF || a.exit == nil || a.exit.Code != 0 {
		t.Errorf("end: %v, %+v", err, a.exit)
	}
	out := a.out.String()
	for _, want := range []string{"term xterm\r\n", "30 100\r\n", "40 120\r\n", "got hi\r\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
}

func TestSessionLeftoverProcessDoesNotHoldItOpen(t *testing.T) {
	const grace = 200 * time.Millisecond
	h := newSessionHarness(t, "", func(m *SessionManager) { m.drainGrace = grace })
	for _, tty := range []bool{false, true} {
		name := fmt.Sprintf("tty-%v", tty)
		// The background sleep (immune to the terminal's hangup) keeps
		// the output open after sh has exited.
		begin := time.Now()
		info := h.start(agent.SessionRequest{Name: name, TTY: tty, Cwd: "/",
			Argv: []string{"sh", "-c", `trap "" HUP; sleep 30 & echo started`}})
		t.Cleanup(func() { syscall.Kill(-info.PID, syscall.SIGKILL) })
		info = h.waitEnded(name)
		if info.Exit == nil || info.Exit.Code != 0 || time.Since(begin) < grace {
			t.Errorf("%s ended after %v: %+v", name, time.Since(begin), info)
		}
		if out, _ := h.logs(name, 0); !strings.Contains(out, "started") {
			t.Errorf("%s output %q", name, out)
		}
	}
}

func TestSessionStop(t *testing.T) {
	h := newSessionHarness(t, "", func(m *SessionManager) { m.stopGrace = 300 * time.Millisecond })
	h.start(agent.SessionRequest{Name: "plain", Argv: []string{"sleep", "60"}, Cwd: "/"})
	r := h.call(agent.OpSessionStop, agent.SessionRequest{Name: "plain"})
	if !r.OK || r.Session.State != agent.SessionExited || r.Session.Exit == nil ||
		r.Session.Exit.Signal != syscall.SIGTERM.String() || r.Session.Exit.Code != 128+15 {
		t.Errorf("stop: %+v (%+v)", r, r.Session)
	}

	h.start(agent.SessionRequest{Name: "stubborn", Argv: []string{"sh", "-c", `trap "" TERM; echo ready; sleep 60`}, Cwd: "/"})
	waitFor(t, "the trap", func() bool { return h.show("stubborn").OutputBytes > 0 })
	begin := time.Now()
	r = h.call(agent.OpSessionStop, agent.SessionRequest{Name: "stubborn"})
	if !r.OK || r.Session.Exit == nil || r.Session.Exit.Signal != syscall.SIGKILL.String() || r.Session.Exit.Code != 128+9 {
		t.Errorf("stop: %+v (%+v)", r, r.Session)
	}
	if d := time.Since(begin); d < 300*time.Millisecond {
		t.Errorf("SIGKILL came after %v, before the grace period", d)
	}
	// The signal is recorded, and stopping again is fine.
	r = h.call(agent.OpSessionStop, agent.SessionRequest{Name: "stubborn", Signal: 9})
	if !r.OK || r.Session.Exit.Signal != syscall.SIGKILL.String() {
		t.Errorf("second stop: %+v", r)
	}
	h.start(agent.SessionRequest{Name: "custom", Argv: []string{"sleep", "60"}, Cwd: "/"})
	if r := h.call(agent.OpSessionStop, agent.SessionRequest{Name: "custom", Signal: 99}); r.OK {
		t.Errorf("stop with signal 99: %+v", r)
	}
	r = h.call(agent.OpSessionStop, agent.SessionRequest{Name: "custom", Signal: int(syscall.SIGINT)})
	if !r.OK || r.Session.Exit == nil || r.Session.Exit.Signal != syscall.SIGINT.String() {
		t.Errorf("stop with SIGINT: %+v", r)
	}
	if r := h.call(agent.OpSessionStop, agent.SessionRequest{Name: "ghost"}); r.OK || !strings.Contains(r.Error, "ghost") {
		t.Errorf("stop of a missing session: %+v", r)
	}
}

func TestSessionSignalFrame(t *testing.T) {
	h := newSessionHarness(t, "", nil)
	h.start(agent.SessionRequest{Name: "sig", Argv: []string{"sh", "-c", "echo ready; sleep 60"}, Cwd: "/"})
	a := h.open(agent.OpSessionAttach, agent.SessionRequest{Name: "sig"})
	a.readUntil("ready")
	a.fw.Write(agent.FrameSignal, []byte{byte(syscall.SIGHUP)})
	if err := a.readAll(); err != io.EOF || a.exit == nil || a.exit.Signal != syscall.SIGHUP.String() {
		t.Errorf("after SIGHUP: %v, %+v", err, a.exit)
	}
}

func TestSessionOutputBounded(t *testing.T) {
	const limit = 1000
	h := newSessionHarness(t, "", func(m *SessionManager) { m.outputCap = limit })
	h.start(agent.SessionRequest{Name: "loud", Cwd: "/",
		Argv: []string{"sh", "-c", `i=0; while [ $i -lt 500 ]; do echo "line $i"; i=$((i+1)); done`}})
	var want strings.Builder
	for i := range 500 {
		fmt.Fprintf(&want, "line %d\n", i)
	}
	info := h.waitEnded("loud")
	if info.OutputBytes != int64(want.Len()) {
		t.Errorf("output bytes %d, want %d", info.OutputBytes, want.Len())
	}
	out, exit := h.logs("loud", 0)
	if len(out) > limit || len(out) < limit/2 || !strings.HasSuffix(want.String(), out) || exit == nil {
		t.Errorf("retained %d bytes (want %d to %d of the tail): %q", len(out), limit/2, limit, out)
	}
	if out, _ := h.logs("loud", 20); out != want.String()[want.Len()-20:] {
		t.Errorf("tail 20: %q", out)
	}
	// On disk: at most two segments, within the cap.
	files, _ := filepath.Glob(filepath.Join(h.dir, "loud", segmentPrefix+"*"))
	var size int64
	for _, f := range files {
		fi, _ := os.Stat(f)
		size += fi.Size()
	}
	if len(files) > 2 || size > limit {
		t.Errorf("%d segment files, %d bytes", len(files), size)
	}
}

func TestOutputLogWrites(t *testing.T) {
	dir := t.TempDir()
	l := newOutputLog(dir, 10)
	var all []byte
	for i := range 50 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, i%7+1)
		all = append(all, p...)
		if err := l.write(p); err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, 3)
		for off := l.first(); off < l.total; {
			var n int
			n, off = l.readAt(buf, off)
			got = append(got, buf[:n]...)
		}
		if l.total != int64(len(all)) || len(got) > 10 || (len(all) >= 10 && len(got) < 5) || !bytes.HasSuffix(all, got) {
			t.Fatalf("after %d bytes: total %d, retained %q", len(all), l.total, got)
		}
	}
	l.close()
	loaded := loadOutputLog(dir, 10)
	if loaded.total != l.total || loaded.first() != l.first() {
		t.Errorf("loaded total %d first %d, want %d %d", loaded.total, loaded.first(), l.total, l.first())
	}
}

// copySessionDirs copies the session directories under src into dst, as an agent
// restart would find them.
func copySessionDirs(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSessionsAfterAgentRestart(t *testing.T) {
	a := newSessionHarness(t, "", func(m *SessionManager) { m.stopGrace = 300 * time.Millisecond })
	a.start(agent.SessionRequest{Name: "done", Argv: []string{"sh", "-c", "echo bye; exit 3"}, Cwd: "/"})
	a.waitEnded("done")
	a.start(agent.SessionRequest{Name: "runner", Argv: []string{"sh", "-c", "echo hi; exec sleep 60"}, Cwd: "/"})
	waitFor(t, "runner's output", func() bool { return a.show("runner").OutputBytes == 3 })

	// Restart while runner's process lives on (as it may when the agent
	// itself dies): it is lost, but stop still ends it.
	alive := t.TempDir()
	copySessionDirs(t, a.dir, alive)
	b := newSessionHarness(t, alive, func(m *SessionManager) { m.stopGrace = 300 * time.Millisecond })
	if info := b.show("runner"); info.State != agent.SessionLost || info.Exit != nil || info.OutputBytes != 3 {
		t.Errorf("runner after a restart: %+v", info)
	}
	if r := b.call(agent.OpSessionStop, agent.SessionRequest{Name: "runner"}); !r.OK || r.Session.State != agent.SessionLost {
		t.Errorf("stop of a lost session: %+v", r)
	}
	if info := a.waitEnded("runner"); info.Exit == nil || info.Exit.Signal != syscall.SIGTERM.String() {
		t.Errorf("the original agent saw runner end with %+v", info.Exit)
	}

	// Restart after runner's process has gone, with its record still
	// saying it runs.
	gone := t.TempDir()
	copySessionDirs(t, alive, gone)
	c := newSessionHarness(t, gone, nil)
	r := c.call(agent.OpSessionList, agent.SessionRequest{})
	if len(r.Sessions) != 2 {
		t.Fatalf("list after a restart: %+v", r)
	}
	done, runner := r.Sessions[0], r.Sessions[1]
	if done.Name != "done" || done.State != agent.SessionExited || done.Exit == nil || done.Exit.Code != 3 ||
		done.EndedAt.IsZero() || done.OutputBytes != 4 || done.PID == 0 {
		t.Errorf("done after a restart: %+v", done)
	}
	if runner.Name != "runner" || runner.State != agent.SessionLost || runner.Exit != nil {
		t.Errorf("runner after a restart: %+v", runner)
	}
	if out, exit := c.logs("done", 0); out != "bye\n" || exit == nil || exit.Code != 3 {
		t.Errorf("logs of done: %q, %+v", out, exit)
	}
	f := c.open(agent.OpSessionLogs, agent.SessionRequest{Name: "runner", Follow: true})
	if err := f.readAll(); err != io.EOF || f.out.String() != "hi\n" || f.exit == nil || f.exit.Error == "" {
		t.Errorf("logs -f of a lost session: %v, %q, %+v", err, f.out.String(), f.exit)
	}
	if r := c.call(agent.OpSessionStop, agent.SessionRequest{Name: "runner"}); !r.OK || r.Session.State != agent.SessionLost {
		t.Errorf("stop of a lost session: %+v", r)
	}
	// Names of recorded sessions stay taken, and generated names skip them.
	if r := c.call(agent.OpSessionStart, agent.SessionRequest{Name: "done", Argv: []string{"true"}}); r.OK {
		t.Errorf("reused a recorded name: %+v", r)
	}

	// A directory without metadata (a start cut short) is cleared away.
	junk := filepath.Join(gone, "junk")
	os.Mkdir(junk, 0o700)
	NewSessionManager(gone, nil)
	if _, err := os.Stat(junk); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("junk directory: %v", err)
	}
}
