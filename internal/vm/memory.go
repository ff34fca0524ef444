package vm

import (
	"context"
	"errors"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/memstat"
	"banger/internal/model"
)

// guestMemTimeout bounds asking the guest agent for its meminfo in Show: a
// busy or wedged guest must not hold up `vm show`.
const guestMemTimeout = 5 * time.Second

// Show returns a VM by name or ID with, when it runs, its memory use:
// the VMM's resident memory and the guest's own figures.
func (m *Manager) Show(ctx context.Context, ref string) (*model.VM, error) {
	v, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if rt := m.runtimeOf(v.ID); rt != nil && (v.State == model.StateRunning || v.State == model.StatePaused) {
		// A paused guest cannot answer: its host figures only.
		v.Memory = m.memoryUsage(ctx, rt, v.State == model.StateRunning)
	}
	return v, nil
}

// ListWithMemory is List with each running VM's host memory (the VMM's
// resident set; the guests are not asked).
func (m *Manager) ListWithMemory(ctx context.Context) ([]*model.VM, error) {
	vms, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, v := range vms {
		if rt := m.runtimeOf(v.ID); rt != nil && (v.State == model.StateRunning || v.State == model.StatePaused) {
			v.Memory = m.memoryUsage(ctx, rt, false)
		}
	}
	return vms, nil
}

// memoryUsage measures rt's VMM and, with guest, asks its agent. It
// returns nil when the VMM's RSS cannot be read (the process just went).
func (m *Manager) memoryUsage(ctx context.Context, rt *runtime, guest bool) *model.MemoryUsage {
	rss, err := memstat.ProcessRSS(rt.inst.PID())
	if err != nil {
		return nil
	}
	u := &model.MemoryUsage{HostRSS: rss << 10}
	if !guest {
		return u
	}
	gctx, cancel := context.WithTimeout(ctx, guestMemTimeout)
	defer cancel()
	if err := guestMemory(gctx, m, rt, u); err != nil {
		u.GuestError = err.Error()
	}
	return u
}

func guestMemory(ctx context.Context, m *Manager, rt *runtime, u *model.MemoryUsage) error {
	c, err := m.agentClient(ctx, rt, guestMemTimeout)
	if err != nil {
		return err
	}
	resp, err := c.Call(ctx, agent.Request{Op: agent.OpMeminfo})
	if err != nil {
		if strings.Contains(err.Error(), "unknown operation") {
			return errAgentTooOld
		}
		return err
	}
	mi, err := memstat.ParseMeminfo(strings.NewReader(resp.Meminfo))
	if err != nil {
		return err
	}
	u.GuestTotal, u.GuestUsed, u.GuestAvailable = mi.TotalKiB<<10, mi.UsedKiB()<<10, mi.AvailableKiB<<10
	switch {
	case resp.BalloonDriver:
		u.Balloon = model.BalloonReporting
	case resp.BalloonDevice:
		u.Balloon = model.BalloonNoDriver
	default:
		u.Balloon = model.BalloonOff
	}
	return nil
}

// errAgentTooOld: a guest started by an older banger has an agent without
// the meminfo operation until it restarts.
var errAgentTooOld = errors.New("the guest agent predates memory reporting (restart the vm)")
