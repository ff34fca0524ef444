package banger

import (
	"context"
	"io"
	"net/http"
	"net/url"

	"banger/internal/agent"
)

// SessionParams starts a session: a long-lived guest command that
// survives detaches (Name is generated when empty).
type SessionParams struct {
	Name       string
	Argv       []string
	Cwd        string
	Env        []string
	TTY        bool
	Rows, Cols uint16
	Term       string
}

// Session describes a guest session.
type Session = agent.SessionInfo

// Session states.
const (
	SessionRunning = agent.SessionRunning
	SessionExited  = agent.SessionExited
	SessionLost    = agent.SessionLost
)

func sessionPath(vm, name, suffix string) string {
	return vmPath(vm, "/sessions/"+url.PathEscape(name)+suffix)
}

// StartSession starts a session in a running VM.
func (c *Client) StartSession(ctx context.Context, vm string, p SessionParams) (*Session, error) {
	req := agent.SessionRequest{Name: p.Name, Argv: p.Argv, Cwd: p.Cwd, Env: p.Env, TTY: p.TTY, Rows: p.Rows, Cols: p.Cols, Term: p.Term}
	var s Session
	if err := c.call(ctx, http.MethodPost, vmPath(vm, "/sessions"), req, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Sessions lists a VM's sessions.
func (c *Client) Sessions(ctx context.Context, vm string) ([]Session, error) {
	var list []Session
	if err := c.call(ctx, http.MethodGet, vmPath(vm, "/sessions"), nil, &list); err != nil {
		return nil, err
	}
	return list, nil
}

// GetSession describes one session.
func (c *Client) GetSession(ctx context.Context, vm, name string) (*Session, error) {
	var s Session
	if err := c.call(ctx, http.MethodGet, sessionPath(vm, name, ""), nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// StopSession signals a session (signal 0: SIGTERM, then SIGKILL after a
// grace period) and returns its final state.
func (c *Client) StopSession(ctx context.Context, vm, name string, signal int) (*Session, error) {
	var s Session
	if err := c.call(ctx, http.MethodPost, sessionPath(vm, name, "/stop"), agent.SessionRequest{Signal: signal}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// SessionLogs copies a session's retained output (the last tail bytes;
// all when 0) to w. With follow it goes on with live output until the
// session ends and returns its exit status; otherwise it returns after
// the retained output (with the status if the session has ended, else
// nil).
func (c *Client) SessionLogs(ctx context.Context, vm, name string, w io.Writer, follow bool, tail int64) (*ExitStatus, error) {
	conn, err := c.upgrade(ctx, sessionPath(vm, name, "/logs"), agent.SessionRequest{Follow: follow, Tail: tail})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st, err := c.pump(ctx, conn, Cmd{Stdout: w, Stderr: w}, true, nil)
	if err != nil && !follow && st == nil && ctx.Err() == nil {
		// Without follow the stream simply closes after the output.
		if _, ok := err.(*Error); !ok {
			return nil, nil
		}
	}
	return st, err
}
