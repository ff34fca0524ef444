package mcpserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/workspace"
)

// --- exec ---

// ExecIn is sandbox_exec's input.
type ExecIn struct {
	Sandbox        string   `json:"sandbox" jsonschema:"the sandbox's name"`
	Command        []string `json:"command" jsonschema:"the command and its arguments (an argv, not shell text)"`
	Cwd            string   `json:"cwd,omitempty" jsonschema:"working directory in the guest (default /root/repo with a workspace, else /root)"`
	Env            []string `json:"env,omitempty" jsonschema:"entries of the form KEY=VALUE added to the command's environment"`
	Stdin          string   `json:"stdin,omitempty" jsonschema:"text given to the command on its standard input (default: none, stdin is closed)"`
	TimeoutSeconds int      `json:"timeout_seconds,omitempty" jsonschema:"kill the command after this many seconds (default 600, at most 3600)"`
}

// ExecOut is sandbox_exec's output.
type ExecOut struct {
	ExitCode        int    `json:"exit_code" jsonschema:"the command's exit code (128+N when killed by signal N; 127: command not found)"`
	Signal          string `json:"signal,omitempty" jsonschema:"the signal that killed the command"`
	Error           string `json:"error,omitempty" jsonschema:"why the command could not start"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutBytes     int64  `json:"stdout_bytes" jsonschema:"bytes the command wrote to stdout, before truncation"`
	StderrBytes     int64  `json:"stderr_bytes" jsonschema:"bytes the command wrote to stderr, before truncation"`
	StdoutTruncated bool   `json:"stdout_truncated" jsonschema:"stdout was cut to its first and last part"`
	StderrTruncated bool   `json:"stderr_truncated" jsonschema:"stderr was cut to its first and last part"`
	TimedOut        bool   `json:"timed_out,omitempty" jsonschema:"the command ran out of time and was killed"`
}

func timeoutOf(sec int) (time.Duration, error) {
	switch {
	case sec < 0:
		return 0, errors.New("timeout_seconds must not be negative")
	case sec == 0:
		return DefaultTimeout, nil
	case time.Duration(sec)*time.Second > MaxTimeout:
		return 0, fmt.Errorf("timeout_seconds must be at most %d", int(MaxTimeout/time.Second))
	}
	return time.Duration(sec) * time.Second, nil
}

func (s *Server) exec(ctx context.Context, _ *mcp.CallToolRequest, in ExecIn) (*mcp.CallToolResult, ExecOut, error) {
	if _, err := s.own(in.Sandbox); err != nil {
		return nil, ExecOut{}, err
	}
	if len(in.Command) == 0 {
		return nil, ExecOut{}, errors.New("command is empty")
	}
	timeout, err := timeoutOf(in.TimeoutSeconds)
	if err != nil {
		return nil, ExecOut{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := runExec(ctx, s.opts.Daemon, in.Sandbox, api.ExecParams{VM: in.Sandbox, Argv: in.Command, Env: in.Env, Cwd: in.Cwd}, []byte(in.Stdin), MaxOutput)
	return nil, out, err
}

// runExec runs one command over the daemon's upgraded exec stream: stdin
// (then its end) goes in, stdout and stderr come back into buffers of at
// most max bytes each, until the exit frame. When ctx ends first the
// connection is closed, which makes the guest agent kill the command.
func runExec(ctx context.Context, d Daemon, vm string, p api.ExecParams, stdin []byte, max int) (ExecOut, error) {
	conn, r, err := d.Upgrade(ctx, vmPath(vm, "/exec"), p)
	if err != nil {
		return ExecOut{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fw := agent.NewFrameWriter(conn)
	go func() {
		if len(stdin) > 0 && fw.Write(agent.FrameStdin, stdin) != nil {
			return
		}
		fw.Write(agent.FrameStdin, nil)
	}()
	stdout, stderr := newBoundedBuffer(max), newBoundedBuffer(max)
	var status *agent.ExitStatus
	for status == nil {
		t, payload, err := agent.ReadFrame(r)
		if err != nil {
			if ctx.Err() != nil {
				o := execOut(stdout, stderr)
				o.TimedOut, o.ExitCode, o.Error = true, -1, "timed out: the command was killed"
				return o, nil
			}
			return ExecOut{}, fmt.Errorf("exec stream ended before the command did: %w", err)
		}
		switch t {
		case agent.FrameStdout:
			stdout.Write(payload)
		case agent.FrameStderr:
			stderr.Write(payload)
		case agent.FrameError:
			var ae api.Error
			if json.Unmarshal(payload, &ae) != nil || ae.Code == "" {
				return ExecOut{}, errors.New("exec failed (bad error frame from daemon)")
			}
			return ExecOut{}, &ae
		case agent.FrameExit:
			status = &agent.ExitStatus{}
			if err := json.Unmarshal(payload, status); err != nil {
				return ExecOut{}, fmt.Errorf("bad exit status from guest: %w", err)
			}
		}
	}
	o := execOut(stdout, stderr)
	o.ExitCode, o.Signal, o.Error = status.Code, status.Signal, status.Error
	return o, nil
}

func execOut(stdout, stderr *boundedBuffer) ExecOut {
	return ExecOut{
		Stdout: stdout.String(), Stderr: stderr.String(),
		StdoutBytes: stdout.Total(), StderrBytes: stderr.Total(),
		StdoutTruncated: stdout.Truncated(), StderrTruncated: stderr.Truncated(),
	}
}

// --- files ---

// FileReadIn is file_read's input.
type FileReadIn struct {
	Sandbox  string `json:"sandbox" jsonschema:"the sandbox's name"`
	Path     string `json:"path" jsonschema:"absolute path in the guest"`
	MaxBytes int    `json:"max_bytes,omitempty" jsonschema:"return at most this many bytes (default and maximum 1 MiB)"`
}

// FileReadOut is file_read's output.
type FileReadOut struct {
	Path      string `json:"path"`
	Content   string `json:"content"`
	Encoding  string `json:"encoding" jsonschema:"utf-8 or base64"`
	Bytes     int    `json:"bytes" jsonschema:"bytes returned"`
	Truncated bool   `json:"truncated" jsonschema:"the file is longer than what was returned"`
}

// FileWriteIn is file_write's input.
type FileWriteIn struct {
	Sandbox  string `json:"sandbox" jsonschema:"the sandbox's name"`
	Path     string `json:"path" jsonschema:"absolute path in the guest"`
	Content  string `json:"content" jsonschema:"the file's new content"`
	Encoding string `json:"encoding,omitempty" jsonschema:"utf-8 (default) or base64"`
	Mode     string `json:"mode,omitempty" jsonschema:"octal permissions, e.g. 0644 (default) or 0755"`
	Parents  bool   `json:"parents,omitempty" jsonschema:"create missing parent directories"`
}

// FileWriteOut is file_write's output.
type FileWriteOut struct {
	Path  string `json:"path"`
	Bytes int    `json:"bytes"`
}

// FileListIn is file_list's input.
type FileListIn struct {
	Sandbox string `json:"sandbox" jsonschema:"the sandbox's name"`
	Path    string `json:"path" jsonschema:"absolute directory path in the guest"`
}

// FileInfo describes one guest file (the daemon's wire type).
type FileInfo struct {
	Name   string    `json:"name"`
	Path   string    `json:"path"`
	Type   string    `json:"type" jsonschema:"file, dir, symlink or other"`
	Size   int64     `json:"size"`
	Mode   string    `json:"mode" jsonschema:"octal permissions"`
	MTime  time.Time `json:"mtime"`
	Target string    `json:"target,omitempty" jsonschema:"a symlink's target"`
}

// FileListOut is file_list's output.
type FileListOut struct {
	Path      string     `json:"path"`
	Entries   []FileInfo `json:"entries"`
	Truncated bool       `json:"truncated" jsonschema:"the directory has more entries than were listed"`
}

func filesPath(vm, suffix, guestPath string, extra url.Values) string {
	q := url.Values{"path": {guestPath}}
	for k, v := range extra {
		q[k] = v
	}
	return vmPath(vm, "/files"+suffix) + "?" + q.Encode()
}

// errCapped stops a read at its cap.
var errCapped = errors.New("capped")

// capWriter keeps at most max bytes and then fails, which ends the copy.
type capWriter struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	room := w.max - w.buf.Len()
	if len(p) > room {
		w.buf.Write(p[:room])
		w.truncated = true
		return room, errCapped
	}
	return w.buf.Write(p)
}

func (s *Server) fileRead(ctx context.Context, _ *mcp.CallToolRequest, in FileReadIn) (*mcp.CallToolResult, FileReadOut, error) {
	if _, err := s.own(in.Sandbox); err != nil {
		return nil, FileReadOut{}, err
	}
	max := MaxFileRead
	if in.MaxBytes > 0 && in.MaxBytes < max {
		max = in.MaxBytes
	}
	w := &capWriter{max: max}
	if err := s.opts.Daemon.Do(ctx, "GET", filesPath(in.Sandbox, "", in.Path, nil), nil, w); err != nil && !errors.Is(err, errCapped) {
		return nil, FileReadOut{}, err
	}
	out := FileReadOut{Path: in.Path, Bytes: w.buf.Len(), Truncated: w.truncated, Encoding: "utf-8"}
	if b := w.buf.Bytes(); utf8.Valid(b) {
		out.Content = string(b)
	} else {
		out.Content, out.Encoding = base64.StdEncoding.EncodeToString(b), "base64"
	}
	return nil, out, nil
}

func (s *Server) fileWrite(ctx context.Context, _ *mcp.CallToolRequest, in FileWriteIn) (*mcp.CallToolResult, FileWriteOut, error) {
	if _, err := s.own(in.Sandbox); err != nil {
		return nil, FileWriteOut{}, err
	}
	data := []byte(in.Content)
	switch in.Encoding {
	case "", "utf-8", "utf8":
	case "base64":
		var err error
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return nil, FileWriteOut{}, fmt.Errorf("content is not base64: %w", err)
		}
	default:
		return nil, FileWriteOut{}, fmt.Errorf("unknown encoding %q: use utf-8 or base64", in.Encoding)
	}
	if len(data) > MaxFileWrite {
		return nil, FileWriteOut{}, fmt.Errorf("content is %d bytes, over the %d byte limit of one call", len(data), MaxFileWrite)
	}
	q := url.Values{}
	if in.Mode != "" {
		if _, err := strconv.ParseUint(in.Mode, 8, 32); err != nil {
			return nil, FileWriteOut{}, fmt.Errorf("mode %q is not octal", in.Mode)
		}
		q.Set("mode", in.Mode)
	}
	if in.Parents {
		q.Set("parents", "1")
	}
	if err := s.opts.Daemon.DoBody(ctx, "PUT", filesPath(in.Sandbox, "", in.Path, q), bytes.NewReader(data), int64(len(data)), nil); err != nil {
		return nil, FileWriteOut{}, err
	}
	return nil, FileWriteOut{Path: in.Path, Bytes: len(data)}, nil
}

func (s *Server) fileList(ctx context.Context, _ *mcp.CallToolRequest, in FileListIn) (*mcp.CallToolResult, FileListOut, error) {
	if _, err := s.own(in.Sandbox); err != nil {
		return nil, FileListOut{}, err
	}
	var out FileListOut
	if err := s.opts.Daemon.Do(ctx, "GET", filesPath(in.Sandbox, "/list", in.Path, nil), nil, &out); err != nil {
		return nil, FileListOut{}, err
	}
	if out.Entries == nil {
		out.Entries = []FileInfo{}
	}
	return nil, out, nil
}

// --- workspace ---

// PrepareIn is workspace_prepare's input.
type PrepareIn struct {
	Sandbox          string `json:"sandbox" jsonschema:"the sandbox's name"`
	Path             string `json:"path" jsonschema:"absolute host path inside a git repository, within a directory allowed with --allow-path"`
	IncludeUntracked bool   `json:"include_untracked,omitempty" jsonschema:"also send untracked files (never ignored ones)"`
}

// PrepareOut is workspace_prepare's output.
type PrepareOut struct {
	GuestDir string `json:"guest_dir" jsonschema:"where the repository is in the guest"`
	Root     string `json:"root" jsonschema:"the host repository's root"`
	Head     string `json:"head,omitempty" jsonschema:"the host commit it was prepared from"`
	Files    int    `json:"files"`
	Bytes    int64  `json:"bytes"`
	Dirty    bool   `json:"dirty,omitempty" jsonschema:"the host tree had uncommitted changes, sent as they are"`
}

// ExportIn is workspace_export's input.
type ExportIn struct {
	Sandbox    string `json:"sandbox" jsonschema:"the sandbox's name"`
	BaseCommit string `json:"base_commit,omitempty" jsonschema:"also include the guest's commits since this commit"`
}

// ExportOut is workspace_export's output.
type ExportOut struct {
	Patch     string `json:"patch" jsonschema:"the changes as a git patch (empty: no changes)"`
	Bytes     int    `json:"bytes"`
	Truncated bool   `json:"truncated" jsonschema:"the patch is longer than what was returned"`
}

func (s *Server) workspacePrepare(ctx context.Context, _ *mcp.CallToolRequest, in PrepareIn) (*mcp.CallToolResult, PrepareOut, error) {
	if _, err := s.own(in.Sandbox); err != nil {
		return nil, PrepareOut{}, err
	}
	dir, err := s.opts.Allow.Check(in.Path)
	if err != nil {
		return nil, PrepareOut{}, err
	}
	plan, err := workspace.Inspect(ctx, dir, workspace.Options{IncludeUntracked: in.IncludeUntracked})
	if err != nil {
		return nil, PrepareOut{}, err
	}
	// The repository may start above the allowed directory: everything
	// it would send must be allowed, so its root must be too.
	if _, err := s.opts.Allow.Check(plan.Root); err != nil {
		return nil, PrepareOut{}, fmt.Errorf("the repository containing %s starts at %s, outside the allowed directories", in.Path, plan.Root)
	}
	if err := sendWorkspace(ctx, s.opts.Daemon, in.Sandbox, plan); err != nil {
		return nil, PrepareOut{}, err
	}
	return nil, PrepareOut{GuestDir: workspace.GuestDir, Root: plan.Root, Head: plan.Head, Files: len(plan.Files), Bytes: plan.TotalBytes, Dirty: plan.Dirty}, nil
}

// sendWorkspace streams plan's tar as stdin frames over the daemon's
// workspace upgrade and waits for the guest's verdict.
func sendWorkspace(ctx context.Context, d Daemon, vm string, plan *workspace.Plan) error {
	conn, r, err := d.Upgrade(ctx, vmPath(vm, "/workspace"), plan.Params())
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fw := agent.NewFrameWriter(conn)
	sent := make(chan error, 1)
	go func() {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(workspace.WriteTar(ctx, plan, pw)) }()
		buf := make([]byte, 256<<10)
		for {
			n, err := io.ReadFull(pr, buf)
			if n > 0 {
				if werr := fw.Write(agent.FrameStdin, buf[:n]); werr != nil {
					pr.CloseWithError(werr)
					sent <- werr
					return
				}
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				sent <- fw.Write(agent.FrameStdin, nil)
				return
			}
			if err != nil {
				pr.CloseWithError(err)
				sent <- fmt.Errorf("pack workspace: %w", err)
				conn.Close()
				return
			}
		}
	}()
	for {
		t, p, err := agent.ReadFrame(r)
		if err != nil {
			select {
			case serr := <-sent:
				if serr != nil {
					return serr
				}
			default:
			}
			return fmt.Errorf("workspace upload ended early: %w", err)
		}
		switch t {
		case agent.FrameError:
			var ae api.Error
			if json.Unmarshal(p, &ae) != nil || ae.Code == "" {
				return errors.New("workspace upload failed (bad error frame from daemon)")
			}
			return &ae
		case agent.FrameExit:
			return nil
		}
	}
}

func (s *Server) workspaceExport(ctx context.Context, _ *mcp.CallToolRequest, in ExportIn) (*mcp.CallToolResult, ExportOut, error) {
	if _, err := s.own(in.Sandbox); err != nil {
		return nil, ExportOut{}, err
	}
	w := &capWriter{max: MaxPatch}
	if err := s.opts.Daemon.Do(ctx, "POST", vmPath(in.Sandbox, "/workspace/export"), api.ExportParams{BaseCommit: in.BaseCommit}, w); err != nil && !errors.Is(err, errCapped) {
		return nil, ExportOut{}, err
	}
	return nil, ExportOut{Patch: w.buf.String(), Bytes: w.buf.Len(), Truncated: w.truncated}, nil
}

// --- sessions ---

// SessionStartIn is session_start's input.
type SessionStartIn struct {
	Sandbox string   `json:"sandbox" jsonschema:"the sandbox's name"`
	Command []string `json:"command" jsonschema:"the command and its arguments (an argv)"`
	Name    string   `json:"name,omitempty" jsonschema:"the session's name (default: generated)"`
	Cwd     string   `json:"cwd,omitempty" jsonschema:"working directory in the guest"`
	Env     []string `json:"env,omitempty" jsonschema:"entries of the form KEY=VALUE added to the environment"`
}

// SessionRef names one session.
type SessionRef struct {
	Sandbox string `json:"sandbox" jsonschema:"the sandbox's name"`
	Session string `json:"session" jsonschema:"the session's name"`
}

// SessionReadIn is session_read's input.
type SessionReadIn struct {
	Sandbox   string `json:"sandbox" jsonschema:"the sandbox's name"`
	Session   string `json:"session" jsonschema:"the session's name"`
	TailBytes int    `json:"tail_bytes,omitempty" jsonschema:"return the last this many bytes of output (default and maximum 64 KiB)"`
}

// Session describes one session.
type Session struct {
	Name        string   `json:"name"`
	Command     []string `json:"command"`
	State       string   `json:"state" jsonschema:"running or exited"`
	ExitCode    *int     `json:"exit_code,omitempty" jsonschema:"set once the session ended"`
	Signal      string   `json:"signal,omitempty"`
	OutputBytes int64    `json:"output_bytes" jsonschema:"bytes of output written since the start"`
}

// SessionReadOut is session_read's output.
type SessionReadOut struct {
	Session   Session `json:"session"`
	Output    string  `json:"output"`
	Truncated bool    `json:"truncated" jsonschema:"older output was left out"`
}

func sessionOf(si agent.SessionInfo) Session {
	s := Session{Name: si.Name, Command: si.Argv, State: si.State, OutputBytes: si.OutputBytes}
	if si.Exit != nil {
		code := si.Exit.Code
		s.ExitCode, s.Signal = &code, si.Exit.Signal
	}
	if s.Command == nil {
		s.Command = []string{}
	}
	return s
}

func sessionPath(vm, session, suffix string) string {
	p := vmPath(vm, "/sessions")
	if session != "" {
		p += "/" + url.PathEscape(session)
	}
	return p + suffix
}

func (s *Server) sessionStart(ctx context.Context, _ *mcp.CallToolRequest, in SessionStartIn) (*mcp.CallToolResult, Session, error) {
	if _, err := s.own(in.Sandbox); err != nil {
		return nil, Session{}, err
	}
	if len(in.Command) == 0 {
		return nil, Session{}, errors.New("command is empty")
	}
	var si agent.SessionInfo
	if err := s.opts.Daemon.Do(ctx, "POST", sessionPath(in.Sandbox, "", ""), agent.SessionRequest{Name: in.Name, Argv: in.Command, Cwd: in.Cwd, Env: in.Env}, &si); err != nil {
		return nil, Session{}, err
	}
	return nil, sessionOf(si), nil
}

func (s *Server) sessionRead(ctx context.Context, _ *mcp.CallToolRequest, in SessionReadIn) (*mcp.CallToolResult, SessionReadOut, error) {
	if _, err := s.own(in.Sandbox); err != nil {
		return nil, SessionReadOut{}, err
	}
	tail := DefaultLogsTail
	if in.TailBytes > 0 && in.TailBytes < tail {
		tail = in.TailBytes
	}
	var si agent.SessionInfo
	if err := s.opts.Daemon.Do(ctx, "GET", sessionPath(in.Sandbox, in.Session, ""), nil, &si); err != nil {
		return nil, SessionReadOut{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, r, err := s.opts.Daemon.Upgrade(ctx, sessionPath(in.Sandbox, in.Session, "/logs"), agent.SessionRequest{Tail: int64(tail)})
	if err != nil {
		return nil, SessionReadOut{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	// The guest keeps the output; the tail asked for bounds it, and the
	// buffer bounds it again against a guest that sends more.
	out := newBoundedBuffer(2 * tail)
	for {
		t, p, err := agent.ReadFrame(r)
		if err != nil {
			break
		}
		if t == agent.FrameStdout || t == agent.FrameStderr {
			out.Write(p)
		}
	}
	return nil, SessionReadOut{Session: sessionOf(si), Output: out.String(), Truncated: si.OutputBytes > out.Total() || out.Truncated()}, nil
}

func (s *Server) sessionStop(ctx context.Context, _ *mcp.CallToolRequest, in SessionRef) (*mcp.CallToolResult, Session, error) {
	if _, err := s.own(in.Sandbox); err != nil {
		return nil, Session{}, err
	}
	var si agent.SessionInfo
	if err := s.opts.Daemon.Do(ctx, "POST", sessionPath(in.Sandbox, in.Session, "/stop"), agent.SessionRequest{}, &si); err != nil {
		return nil, Session{}, err
	}
	return nil, sessionOf(si), nil
}
