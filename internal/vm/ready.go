package vm

import (
	"context"
	"fmt"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/model"
)

// readinessPoll is how often WaitReady asks the guest again.
const readinessPoll = 500 * time.Millisecond

// defaultSSHGrace is how long WaitReady waits for sshd once the guest's
// init system has finished booting.
const defaultSSHGrace = time.Minute

func (m *Manager) sshGrace() time.Duration {
	if m.testSSHGrace > 0 {
		return m.testSSHGrace
	}
	return defaultSSHGrace
}

// Readiness asks a VM's guest agent how far its guest has booted. A VM
// that is not running, or whose agent does not answer, has reached
// nothing.
func (m *Manager) Readiness(ctx context.Context, ref string) (api.Readiness, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return api.Readiness{}, err
	}
	rt := m.runtimeOf(vm.ID)
	if rt == nil || vm.State != model.StateRunning {
		return api.Readiness{}, nil
	}
	return m.readiness(ctx, rt), nil
}

func (m *Manager) readiness(ctx context.Context, rt *runtime) api.Readiness {
	c, err := m.agentClient(ctx, rt, 10*time.Second)
	if err != nil {
		return api.Readiness{}
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := c.Call(cctx, agent.Request{Op: agent.OpReadiness})
	if err == nil && resp.Readiness != nil {
		g := resp.Readiness
		return api.Readiness{Agent: true, SSH: g.SSH, SSHD: g.SSHD, System: g.System, SystemState: cleanState(g.SystemState)}
	}
	if err != nil && strings.Contains(resp.Error, "unknown operation") {
		// An agent from before readiness (a VM re-adopted after an
		// upgrade): its port list still tells whether sshd listens; its
		// init system cannot be asked.
		r := api.Readiness{Agent: true, SSHD: true, System: true, SystemState: "unknown"}
		if pr, err := c.Call(cctx, agent.Request{Op: agent.OpPorts}); err == nil {
			for _, p := range pr.Ports {
				if p.Proto == "tcp" && p.Port == 22 {
					r.SSH = true
				}
			}
		}
		return r
	}
	return api.Readiness{}
}

// WaitReady waits until the running VM ref has reached level (api.WaitAgent,
// WaitSSH or WaitSystem), at most timeout. It fails at once when the VM is
// not running or stops, and when ssh is awaited from a guest that has no
// sshd and nothing on port 22.
func (m *Manager) WaitReady(ctx context.Context, ref, level string, timeout time.Duration) (api.Readiness, error) {
	if err := api.ValidWait(level); err != nil {
		return api.Readiness{}, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if level == "" {
		level = api.WaitAgent
	}
	if timeout <= 0 {
		timeout = m.cfg.BootTimeout.Duration
	}
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return api.Readiness{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var r api.Readiness
	var bootedAt time.Time // when the guest was first seen booted without ssh
	for {
		cur, err := m.Get(ctx, vm.ID)
		if err != nil {
			return r, err
		}
		rt := m.runtimeOf(vm.ID)
		if rt == nil || cur.State != model.StateRunning {
			return r, api.Errorf(api.CodeNotRunning, "vm %q is not running (state %s)", cur.Name, cur.State)
		}
		r = m.readiness(wctx, rt)
		if r.Reached(level) {
			return r, nil
		}
		if level == api.WaitSSH && r.Agent && !r.SSH {
			if !r.SSHD {
				return r, api.Errorf(api.CodeConflict, "vm %q: image %q has no sshd and nothing listens on the guest's port 22; use `banger vm exec %s`", cur.Name, cur.Image, cur.Name)
			}
			// A guest that has finished booting gets a grace period for
			// a late sshd, not the whole timeout.
			switch {
			case !r.System:
				bootedAt = time.Time{}
			case bootedAt.IsZero():
				bootedAt = time.Now()
			case time.Since(bootedAt) > m.sshGrace():
				return r, api.Errorf(api.CodeOperationFailed, "vm %q: the guest has booted (%s) but nothing listens on its port 22; see `banger vm exec %s -- systemctl status ssh` or `banger vm logs %s`", cur.Name, r.SystemState, cur.Name, cur.Name)
			}
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-wctx.Done():
			return r, api.Errorf(api.CodeOperationFailed, "vm %q: %s", cur.Name, notReady(level, r, timeout, cur.Name))
		case <-rt.closed:
		case <-time.After(readinessPoll):
		}
	}
}

// notReady says what a wait that timed out was still waiting for.
func notReady(level string, r api.Readiness, timeout time.Duration, name string) string {
	what := map[string]string{
		api.WaitAgent:  "the guest agent did not answer",
		api.WaitSSH:    "sshd did not listen on the guest's port 22",
		api.WaitSystem: "the guest's init system did not finish booting",
	}[level]
	state := ""
	if r.SystemState != "" {
		state = fmt.Sprintf(" (system state: %s)", r.SystemState)
	}
	return fmt.Sprintf("%s within %v%s; see `banger vm logs %s`", what, timeout, state, name)
}

// cleanState keeps a guest's word for its state fit to print: a short
// run of letters, digits, '.', '_' and '-' (systemd's states are such
// words); anything else from the guest becomes "invalid".
func cleanState(s string) string {
	if len(s) > 32 {
		return "invalid"
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return "invalid"
		}
	}
	return s
}
