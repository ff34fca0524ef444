package vm

// Running commands in a VM through its guest agent.

import (
	"context"
	"fmt"
	"net"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/workspace"
)

// agentClient returns the runtime's agent connection, dialing a new one
// when there is none (e.g. after a daemon restart).
func (m *Manager) agentClient(ctx context.Context, rt *runtime, timeout time.Duration) (*agent.Client, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.agent != nil && !rt.agent.Closed() {
		return rt.agent, nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, _, err := waitAgent(wctx, rt)
	if err != nil {
		return nil, err
	}
	rt.agent = c
	return c, nil
}

// OpenExec starts a command in a running VM and returns the stream that
// speaks the exec frame protocol.
func (m *Manager) OpenExec(ctx context.Context, ref string, p api.ExecParams) (net.Conn, error) {
	if len(p.Argv) == 0 {
		return nil, api.Errorf(api.CodeBadRequest, "no command given")
	}
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	rt, err := m.requireRunning(vm)
	if err != nil {
		return nil, err
	}
	if p.Cwd == "" && vm.WorkspacePath != "" {
		p.Cwd = workspace.GuestDir
	}
	c, err := m.agentClient(ctx, rt, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("vm %q: guest agent unreachable: %w", vm.Name, err)
	}
	st, err := c.Open(ctx, agent.Request{Op: agent.OpExec, Exec: &agent.ExecRequest{
		Argv: p.Argv, Env: append(egressEnv(vm), p.Env...), Cwd: p.Cwd, TTY: p.TTY, Rows: p.Rows, Cols: p.Cols, Term: p.Term,
	}})
	if err != nil {
		rt.mu.Lock()
		if rt.agent == c {
			c.Close()
			rt.agent = nil
		}
		rt.mu.Unlock()
		return nil, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return st, nil
}
