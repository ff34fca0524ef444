package guest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/fsutil"
)

// Session defaults.
const (
	// defaultOutputCap bounds the output retained per session.
	defaultOutputCap = 4 << 20
	// defaultAttachTail is how much recent output an attacher gets first.
	defaultAttachTail = 64 << 10
	// defaultStopGrace is how long stop waits before SIGKILL.
	defaultStopGrace = 5 * time.Second
	// defaultDrainGrace is how long output is still read once a session's
	// process has exited, in case something it left behind keeps its
	// output open.
	defaultDrainGrace = 2 * time.Second
	// sessionMetaFile holds a session's sessionMeta in its directory.
	sessionMetaFile = "session.json"
	// streamChunk is the most output sent in one frame.
	streamChunk = 32 << 10
)

// SessionManager runs named long-lived processes in the guest.
//
// Each session has a directory dir/<name> holding session.json (its
// metadata, replaced atomically when the session starts and ends) and its
// retained output (see outputLog). The process itself is the agent's child,
// in a session and process group of its own; its output is read by the
// agent whether or not anyone is attached, so a session goes on when hosts
// come and go. Attachers and followers read the output from the log at
// their own pace; one that falls more than the retained output behind is
// dropped.
type SessionManager struct {
	dir string
	log *log.Logger

	// Limits, set before the manager is used (tests lower them).
	outputCap  int64         // output retained per session
	stopGrace  time.Duration // from stop's signal to SIGKILL
	drainGrace time.Duration // see defaultDrainGrace

	mu       sync.Mutex
	sessions map[string]*session
	pending  map[string]bool // names of sessions being started
}

// NewSessionManager keeps per-session metadata and bounded output under dir
// (in the guest: /run/banger/sessions, a tmpfs that survives host daemon
// restarts and client disconnects). On creation it loads sessions recorded
// there by an earlier agent process: those whose process is gone are
// reported as agent.SessionLost (or exited, if their exit status was
// recorded).
func NewSessionManager(dir string, lg *log.Logger) *SessionManager {
	if lg == nil {
		lg = log.New(io.Discard, "", 0)
	}
	m := &SessionManager{
		dir:        dir,
		log:        lg,
		outputCap:  defaultOutputCap,
		stopGrace:  defaultStopGrace,
		drainGrace: defaultDrainGrace,
		sessions:   map[string]*session{},
		pending:    map[string]bool{},
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		lg.Printf("sessions: %v", err)
	}
	m.load()
	return m
}

// session is one session, running or not.
type session struct {
	name      string
	dir       string
	argv      []string
	cwd       string
	tty       bool
	pid       int
	startedAt time.Time
	bootID    string
	procStart uint64
	log       *log.Logger

	// For sessions this agent started: where input goes (the terminal in
	// TTY mode, else the stdin pipe). Nil for sessions loaded from disk.
	in *os.File
	// done is closed when the session has ended and that is recorded
	// (at once for sessions loaded from disk).
	done chan struct{}

	mu       sync.Mutex
	state    string
	exit     *agent.ExitStatus
	endedAt  time.Time
	out      *outputLog
	watchers map[*watcher]bool
	attached int
	// orphan: the session is lost, but its process was still alive when
	// this agent loaded it; stop may still signal it.
	orphan   bool
	writeErr bool // an output write error was logged
}

// sessionMeta is what session.json records.
type sessionMeta struct {
	Name      string            `json:"name"`
	Argv      []string          `json:"argv"`
	Cwd       string            `json:"cwd"`
	TTY       bool              `json:"tty,omitempty"`
	PID       int               `json:"pid"`
	State     string            `json:"state"`
	Exit      *agent.ExitStatus `json:"exit,omitempty"`
	StartedAt time.Time         `json:"started_at"`
	EndedAt   time.Time         `json:"ended_at,omitzero"`
	// BootID and ProcStart identify the process for a later agent.
	BootID    string `json:"boot_id,omitempty"`
	ProcStart uint64 `json:"proc_start,omitempty"`
}

// watcher is one attacher or log follower of a running session.
type watcher struct {
	attach bool
	// cursor is the offset of the next output byte to send; guarded by
	// the session's mutex.
	cursor int64
	// wake (capacity 1) is signalled on new output and at the end.
	wake chan struct{}
	// dropped is closed when the watcher fell so far behind that output
	// it has not sent yet is no longer retained.
	dropped   chan struct{}
	isDropped bool // guarded by the session's mutex
}

// Handle serves one session operation on conn (the request line has
// already been read; conn reads the rest of the stream and writes to it).
func (m *SessionManager) Handle(ctx context.Context, req agent.Request, conn io.ReadWriteCloser) {
	var sr agent.SessionRequest
	if req.Session != nil {
		sr = *req.Session
	}
	fail := func(err error) { reply(conn, agent.Response{Error: err.Error()}) }
	switch req.Op {
	case agent.OpSessionStart:
		info, err := m.start(sr)
		if err != nil {
			fail(err)
			return
		}
		reply(conn, agent.Response{OK: true, Session: &info})
	case agent.OpSessionList:
		reply(conn, agent.Response{OK: true, Sessions: m.list()})
	case agent.OpSessionShow, agent.OpSessionLogs, agent.OpSessionAttach, agent.OpSessionStop:
		s, err := m.get(sr.Name)
		if err != nil {
			fail(err)
			return
		}
		m.handleSession(ctx, req.Op, sr, s, conn)
	default:
		fail(fmt.Errorf("unknown session operation %q", req.Op))
	}
}

// handleSession serves an operation on an existing session.
func (m *SessionManager) handleSession(ctx context.Context, op string, sr agent.SessionRequest, s *session, conn io.ReadWriteCloser) {
	switch op {
	case agent.OpSessionShow:
		info := s.info()
		reply(conn, agent.Response{OK: true, Session: &info})
	case agent.OpSessionLogs:
		m.stream(ctx, conn, s, sr.Tail, sr.Follow, false)
	case agent.OpSessionAttach:
		tail := sr.Tail
		if tail == 0 {
			tail = defaultAttachTail
		}
		m.stream(ctx, conn, s, tail, true, true)
	case agent.OpSessionStop:
		sig := syscall.SIGTERM
		if sr.Signal != 0 {
			if sr.Signal < 1 || sr.Signal > 64 {
				reply(conn, agent.Response{Error: fmt.Sprintf("invalid signal %d", sr.Signal)})
				return
			}
			sig = syscall.Signal(sr.Signal)
		}
		info, err := m.stop(ctx, s, sig)
		if err != nil {
			reply(conn, agent.Response{Error: err.Error()})
			return
		}
		reply(conn, agent.Response{OK: true, Session: &info})
	}
}

// get returns the session called name.
func (m *SessionManager) get(name string) (*session, error) {
	if name == "" {
		return nil, errors.New("a session name is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[name]
	if s == nil {
		return nil, fmt.Errorf("session %q not found", name)
	}
	return s, nil
}

// list describes every session, oldest first.
func (m *SessionManager) list() []agent.SessionInfo {
	m.mu.Lock()
	all := make([]*session, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	m.mu.Unlock()
	infos := make([]agent.SessionInfo, len(all))
	for i, s := range all {
		infos[i] = s.info()
	}
	sort.Slice(infos, func(i, j int) bool {
		if !infos[i].StartedAt.Equal(infos[j].StartedAt) {
			return infos[i].StartedAt.Before(infos[j].StartedAt)
		}
		return infos[i].Name < infos[j].Name
	})
	return infos
}

// reserve claims name for a session being started, or picks the first
// free one of s1, s2, ... when name is empty.
func (m *SessionManager) reserve(name string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	taken := func(n string) bool { return m.sessions[n] != nil || m.pending[n] }
	if name == "" {
		for i := 1; ; i++ {
			if name = fmt.Sprintf("s%d", i); !taken(name) {
				break
			}
		}
	} else if taken(name) {
		return "", fmt.Errorf("session %q already exists", name)
	}
	m.pending[name] = true
	return name, nil
}

// start launches a session; problems launching it are returned, and leave
// nothing behind.
func (m *SessionManager) start(req agent.SessionRequest) (agent.SessionInfo, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return agent.SessionInfo{}, errors.New("no command given")
	}
	if req.Name != "" {
		if err := validSessionName(req.Name); err != nil {
			return agent.SessionInfo{}, err
		}
	}
	env, err := sessionEnv(req)
	if err != nil {
		return agent.SessionInfo{}, err
	}
	cwd, err := sessionCwd(req.Cwd)
	if err != nil {
		return agent.SessionInfo{}, err
	}
	path, err := lookPathEnv(req.Argv[0], envValue(env, "PATH"), cwd)
	if err != nil {
		return agent.SessionInfo{}, err
	}
	name, err := m.reserve(req.Name)
	if err != nil {
		return agent.SessionInfo{}, err
	}
	s, err := m.launch(name, path, cwd, env, req)
	m.mu.Lock()
	delete(m.pending, name)
	if s != nil {
		m.sessions[name] = s
	}
	m.mu.Unlock()
	if err != nil {
		return agent.SessionInfo{}, err
	}
	return s.info(), nil
}

// launch creates the session's directory and starts its process.
func (m *SessionManager) launch(name, path, cwd string, env []string, req agent.SessionRequest) (*session, error) {
	dir := filepath.Join(m.dir, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create session directory: %w", err)
	}
	argv := append([]string{}, req.Argv...)
	cmd := &exec.Cmd{Path: path, Args: argv, Env: env, Dir: cwd}
	out, in, err := startProcess(cmd, req.TTY, req.Rows, req.Cols)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", req.Argv[0], err)
	}
	s := &session{
		name:      name,
		dir:       dir,
		argv:      argv,
		cwd:       cwd,
		tty:       req.TTY,
		pid:       cmd.Process.Pid,
		startedAt: time.Now(),
		bootID:    bootID(),
		log:       m.log,
		in:        in,
		done:      make(chan struct{}),
		state:     agent.SessionRunning,
		out:       newOutputLog(dir, m.outputCap),
		watchers:  map[*watcher]bool{},
	}
	s.procStart, _ = procStartTime(s.pid)
	// Recorded before the process can be seen to end, so that the exit
	// record cannot be overwritten by this one.
	if err := writeSessionMeta(dir, s.meta()); err != nil {
		m.log.Printf("session %s: %v", name, err)
	}
	go s.run(cmd, out, m.drainGrace)
	return s, nil
}

// run collects the session's output until its process has exited and its
// output is drained, then records how it ended.
func (s *session) run(cmd *exec.Cmd, out *os.File, drainGrace time.Duration) {
	pumped := make(chan struct{})
	go func() {
		defer close(pumped)
		buf := make([]byte, streamChunk)
		for {
			n, err := out.Read(buf)
			if n > 0 {
				s.output(buf[:n])
			}
			if err != nil {
				// EOF, or EIO from a terminal whose other side is gone.
				return
			}
		}
	}()
	err := cmd.Wait()
	execPIDs.done(cmd.Process.Pid)
	t := time.NewTimer(drainGrace)
	select {
	case <-pumped:
	case <-t.C:
		// Something the process left behind holds its output open.
		out.Close()
		<-pumped
	}
	t.Stop()
	out.Close()
	s.in.Close()
	s.finish(sessionExitStatus(err))
}

// output records p as the session's output and tells its watchers.
func (s *session) output(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.out.write(p); err != nil {
		if !s.writeErr {
			s.log.Printf("session %s: %v", s.name, err)
		}
		s.writeErr = true
	} else {
		s.writeErr = false
	}
	first := s.out.first()
	for w := range s.watchers {
		if w.cursor < first {
			s.log.Printf("session %s: dropping a watcher that fell %d bytes behind", s.name, s.out.total-w.cursor)
			w.isDropped = true
			close(w.dropped)
			s.removeLocked(w)
			continue
		}
		notify(w.wake)
	}
}

// finish records the end of the session.
func (s *session) finish(st agent.ExitStatus) {
	s.mu.Lock()
	s.state = agent.SessionExited
	s.exit = &st
	s.endedAt = time.Now()
	s.out.close()
	meta := s.meta()
	// The watchers still send what they have not yet sent, then the end;
	// they no longer count as attached.
	for w := range s.watchers {
		notify(w.wake)
		s.removeLocked(w)
	}
	s.mu.Unlock()
	if err := writeSessionMeta(s.dir, meta); err != nil {
		s.log.Printf("session %s: %v", s.name, err)
	}
	close(s.done)
}

// notify signals c without waiting.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// info describes the session.
func (s *session) info() agent.SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.infoLocked()
}

// infoLocked is info for a caller holding s.mu.
func (s *session) infoLocked() agent.SessionInfo {
	info := agent.SessionInfo{
		Name:        s.name,
		Argv:        append([]string{}, s.argv...),
		Cwd:         s.cwd,
		TTY:         s.tty,
		PID:         s.pid,
		State:       s.state,
		StartedAt:   s.startedAt,
		EndedAt:     s.endedAt,
		OutputBytes: s.out.total,
		Attached:    s.attached,
	}
	if s.exit != nil {
		e := *s.exit
		info.Exit = &e
	}
	return info
}

// meta returns what session.json should say; the caller holds s.mu or is
// the only user.
func (s *session) meta() sessionMeta {
	return sessionMeta{
		Name:      s.name,
		Argv:      s.argv,
		Cwd:       s.cwd,
		TTY:       s.tty,
		PID:       s.pid,
		State:     s.state,
		Exit:      s.exit,
		StartedAt: s.startedAt,
		EndedAt:   s.endedAt,
		BootID:    s.bootID,
		ProcStart: s.procStart,
	}
}

// endStatusLocked is what the exit frame of an ended session says.
func (s *session) endStatusLocked() agent.ExitStatus {
	if s.exit != nil {
		return *s.exit
	}
	return agent.ExitStatus{Code: 255, Error: "session lost: the agent that ran it has restarted"}
}

// removeLocked forgets watcher w.
func (s *session) removeLocked(w *watcher) {
	if s.watchers[w] {
		delete(s.watchers, w)
		if w.attach {
			s.attached--
		}
	}
}

// signal sends sig to the session's process group while it runs.
func (s *session) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == agent.SessionRunning && s.in != nil {
		unix.Kill(-s.pid, sig)
	}
}

// stream serves session_logs and session_attach: a response line, the
// output from tail bytes back (all retained output when 0, none when
// negative), and with follow the live output until the session ends and
// its exit frame. Attachers also send input.
func (m *SessionManager) stream(ctx context.Context, conn io.ReadWriteCloser, s *session, tail int64, follow, attach bool) {
	w := &watcher{attach: attach, wake: make(chan struct{}, 1), dropped: make(chan struct{})}
	s.mu.Lock()
	total, first := s.out.total, s.out.first()
	switch {
	case tail < 0:
		w.cursor = total
	case tail == 0 || tail > total-first:
		w.cursor = first
	default:
		w.cursor = total - tail
	}
	live := follow && s.state == agent.SessionRunning
	limit := int64(-1) // follow to the end
	if live {
		s.watchers[w] = true
		if attach {
			s.attached++
		}
	} else {
		limit = total
	}
	ended := s.state != agent.SessionRunning
	info := s.infoLocked()
	s.mu.Unlock()

	if live {
		defer func() {
			s.mu.Lock()
			s.removeLocked(w)
			s.mu.Unlock()
		}()
	}
	reply(conn, agent.Response{OK: true, Session: &info})
	fw := agent.NewFrameWriter(conn)
	gone := make(chan struct{})
	if live {
		go func() {
			defer close(gone)
			s.readInput(conn, attach)
		}()
		// Whatever ends the stream early also unblocks a write stuck on a
		// peer that does not read.
		finished := make(chan struct{})
		defer close(finished)
		go func() {
			select {
			case <-w.dropped:
			case <-gone:
			case <-ctx.Done():
			case <-finished:
				return
			}
			conn.Close()
		}()
	}
	buf := make([]byte, streamChunk)
	for {
		n, st, done, dropped := s.read(w, buf, limit)
		switch {
		case dropped:
			return
		case n > 0:
			if err := fw.Write(agent.FrameStdout, buf[:n]); err != nil {
				return
			}
			continue
		case !live:
			if ended {
				fw.WriteJSON(agent.FrameExit, st)
			}
			return
		case done:
			fw.WriteJSON(agent.FrameExit, st)
			conn.Close()
			return
		}
		select {
		case <-w.wake:
		case <-w.dropped:
			return
		case <-gone:
			return
		case <-ctx.Done():
			return
		}
	}
}

// read copies output at w's cursor, up to offset limit (the end of the
// output when negative), into p. With nothing left to copy it reports
// whether the session has ended and how. dropped reports that w fell
// behind the retained output.
func (s *session) read(w *watcher, p []byte, limit int64) (n int, st agent.ExitStatus, ended, dropped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.isDropped {
		return 0, st, false, true
	}
	// Only a watcher that does not follow can be overtaken here (one that
	// follows is dropped instead); it skips what is gone.
	w.cursor = max(w.cursor, s.out.first())
	if limit < 0 {
		limit = s.out.total
	}
	if w.cursor < limit {
		n, w.cursor = s.out.readAt(p[:min(int64(len(p)), limit-w.cursor)], w.cursor)
		if n > 0 {
			return n, st, false, false
		}
	}
	if s.state != agent.SessionRunning {
		return 0, s.endStatusLocked(), true, false
	}
	return 0, st, false, false
}

// readInput applies the frames an attacher sends until its stream ends;
// a follower's are read and ignored, to notice it leave.
func (s *session) readInput(r io.Reader, attach bool) {
	for {
		t, p, err := agent.ReadFrame(r)
		if err != nil {
			return
		}
		if !attach || s.in == nil {
			continue
		}
		switch t {
		case agent.FrameStdin:
			switch {
			case len(p) > 0:
				s.in.Write(p)
			case !s.tty:
				s.in.Close()
			}
		case agent.FrameResize:
			if rows, cols, err := agent.ParseResize(p); err == nil && s.tty && rows > 0 && cols > 0 {
				setWinsize(s.in, rows, cols)
			}
		case agent.FrameSignal:
			if len(p) == 1 && p[0] > 0 && p[0] <= 64 {
				s.signal(syscall.Signal(p[0]))
			}
		}
	}
}

// stop signals the session's process group with sig, and with SIGKILL if
// it is still running after the grace period, and returns its final state.
func (m *SessionManager) stop(ctx context.Context, s *session, sig syscall.Signal) (agent.SessionInfo, error) {
	if s.in == nil {
		m.stopOrphan(ctx, s, sig)
		return s.info(), nil
	}
	select {
	case <-s.done:
		return s.info(), nil
	default:
	}
	s.signal(sig)
	t := time.NewTimer(m.stopGrace)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		s.signal(syscall.SIGKILL)
		select {
		case <-s.done:
		case <-ctx.Done():
			return agent.SessionInfo{}, fmt.Errorf("stop session %s: %w", s.name, ctx.Err())
		}
	case <-ctx.Done():
		return agent.SessionInfo{}, fmt.Errorf("stop session %s: %w", s.name, ctx.Err())
	}
	return s.info(), nil
}

// stopOrphan stops the process of a lost session that an earlier agent
// started, if it is still alive: the agent cannot wait for it, so it
// watches /proc instead.
func (m *SessionManager) stopOrphan(ctx context.Context, s *session, sig syscall.Signal) {
	alive := func() bool {
		start, ok := procStartTime(s.pid)
		return ok && start == s.procStart
	}
	s.mu.Lock()
	orphan := s.orphan
	s.mu.Unlock()
	if !orphan {
		return
	}
	if alive() {
		unix.Kill(-s.pid, sig)
		deadline := time.Now().Add(m.stopGrace)
		killed := false
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for alive() {
			if !killed && time.Now().After(deadline) {
				unix.Kill(-s.pid, syscall.SIGKILL)
				killed = true
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}
	s.mu.Lock()
	s.orphan = false
	s.mu.Unlock()
}

// load picks up the sessions an earlier agent recorded in m.dir.
func (m *SessionManager) load() {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.log.Printf("sessions: %v", err)
		}
		return
	}
	ended := make(chan struct{})
	close(ended)
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() || validSessionName(name) != nil {
			continue
		}
		dir := filepath.Join(m.dir, name)
		meta, err := readSessionMeta(dir)
		if err == nil && meta.Name != name {
			err = fmt.Errorf("metadata names session %q", meta.Name)
		}
		if err != nil {
			// Left by a start that did not complete.
			m.log.Printf("session %s: removing it: %v", name, err)
			os.RemoveAll(dir)
			continue
		}
		s := &session{
			name:      name,
			dir:       dir,
			argv:      meta.Argv,
			cwd:       meta.Cwd,
			tty:       meta.TTY,
			pid:       meta.PID,
			startedAt: meta.StartedAt,
			bootID:    meta.BootID,
			procStart: meta.ProcStart,
			log:       m.log,
			done:      ended,
			state:     agent.SessionLost,
			endedAt:   meta.EndedAt,
			out:       loadOutputLog(dir, m.outputCap),
			watchers:  map[*watcher]bool{},
		}
		if meta.State == agent.SessionExited && meta.Exit != nil {
			s.state = agent.SessionExited
			s.exit = meta.Exit
		} else if meta.BootID == bootID() && meta.ProcStart != 0 {
			start, ok := procStartTime(meta.PID)
			s.orphan = ok && start == meta.ProcStart
		}
		m.sessions[name] = s
	}
}

// writeSessionMeta replaces dir's session.json with meta.
func writeSessionMeta(dir string, meta sessionMeta) error {
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("encode session metadata: %w", err)
	}
	if err := fsutil.AtomicWriteFile(filepath.Join(dir, sessionMetaFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write session metadata: %w", err)
	}
	return nil
}

// readSessionMeta reads dir's session.json.
func readSessionMeta(dir string) (sessionMeta, error) {
	var meta sessionMeta
	b, err := os.ReadFile(filepath.Join(dir, sessionMetaFile))
	if err != nil {
		return meta, err
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return meta, fmt.Errorf("decode %s: %w", sessionMetaFile, err)
	}
	return meta, nil
}
