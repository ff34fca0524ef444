package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/workspace"
)

// sessionStream opens a session operation on a running VM's agent and
// reads its response line, leaving the stream positioned at what follows
// (frames, for logs and attach).
func (m *Manager) sessionStream(ctx context.Context, ref, op string, req agent.SessionRequest) (net.Conn, agent.Response, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, agent.Response{}, err
	}
	rt, err := m.requireRunning(vm)
	if err != nil {
		return nil, agent.Response{}, err
	}
	if op == agent.OpSessionStart && req.Cwd == "" && vm.WorkspacePath != "" {
		req.Cwd = workspace.GuestDir
	}
	if op == agent.OpSessionStart {
		req.Env = append(egressEnv(vm), req.Env...)
	}
	c, err := m.agentClient(ctx, rt, 30*time.Second)
	if err != nil {
		return nil, agent.Response{}, fmt.Errorf("vm %q: guest agent unreachable: %w", vm.Name, err)
	}
	st, err := c.Open(ctx, agent.Request{Op: op, Session: &req})
	if err != nil {
		return nil, agent.Response{}, err
	}
	// The response line has the operation's deadline; what follows it
	// (logs, attach) is the caller's to bound.
	lctx, cancel := agent.WithOpDeadline(ctx, op)
	stop := context.AfterFunc(lctx, func() { st.SetReadDeadline(time.Unix(1, 0)) })
	line, err := agent.ReadLine(st, agent.MaxResponseLine)
	stop()
	cancel()
	if err != nil {
		st.Close()
		return nil, agent.Response{}, fmt.Errorf("vm %q: session %s: %w", vm.Name, op, err)
	}
	st.SetReadDeadline(time.Time{})
	var resp agent.Response
	if err := json.Unmarshal(line, &resp); err != nil {
		st.Close()
		return nil, resp, fmt.Errorf("vm %q: bad session response: %w", vm.Name, err)
	}
	if !resp.OK {
		st.Close()
		return nil, resp, sessionError(vm.Name, resp.Error)
	}
	return st, resp, nil
}

// sessionError classifies the agent's refusal.
func sessionError(vm, msg string) error {
	code := api.CodeBadRequest
	switch {
	case contains(msg, "not found", "no such session", "no session"):
		code = api.CodeNotFound
	case contains(msg, "already exists"):
		code = api.CodeAlreadyExists
	}
	return api.Errorf(code, "vm %q: %s", vm, msg)
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// SessionCall runs a session operation that answers with one line.
func (m *Manager) SessionCall(ctx context.Context, ref, op string, req agent.SessionRequest) (agent.Response, error) {
	st, resp, err := m.sessionStream(ctx, ref, op, req)
	if err != nil {
		return resp, err
	}
	st.Close()
	return resp, nil
}

// OpenSession runs logs or attach and returns the frame stream.
func (m *Manager) OpenSession(ctx context.Context, ref, op string, req agent.SessionRequest) (net.Conn, error) {
	st, _, err := m.sessionStream(ctx, ref, op, req)
	return st, err
}
