package vm

// Pausing and resuming a VM: its vCPUs stop, its VMM, memory and devices
// stay.

import (
	"context"
	"fmt"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/model"
)

// clockTimeout bounds setting a resumed guest's clock.
const clockTimeout = 10 * time.Second

// Pause stops a running VM's vCPUs. Pausing a paused VM is a no-op.
func (m *Manager) Pause(ctx context.Context, ref string) (*model.VM, error) {
	return m.locked(ctx, ref, func(vm *model.VM) error {
		if vm.State == model.StatePaused {
			return nil
		}
		rt, err := m.requireRunning(vm)
		if err != nil {
			return err
		}
		if rt.eng.Pauser == nil {
			return api.Errorf(api.CodeBadRequest, "engine %q cannot pause a vm", rt.eng.Name())
		}
		if err := rt.eng.Pauser.Pause(ctx, rt.inst); err != nil {
			return api.Errorf(api.CodeOperationFailed, "pause vm %q: %v", vm.Name, err)
		}
		vm.State = model.StatePaused
		defer m.changed()
		m.log.Info("vm paused", "vm", vm.Name, "id", vm.ID)
		return m.store.UpdateVM(context.WithoutCancel(ctx), vm)
	})
}

// Resume continues a paused VM and sets its clock from the host's.
// Resuming a running VM is a no-op.
func (m *Manager) Resume(ctx context.Context, ref string) (*model.VM, error) {
	return m.locked(ctx, ref, func(vm *model.VM) error {
		if vm.State == model.StateRunning {
			return nil
		}
		rt := m.runtimeOf(vm.ID)
		if rt == nil || vm.State != model.StatePaused {
			return api.Errorf(api.CodeConflict, "vm %q is not paused (state %s)", vm.Name, vm.State)
		}
		if err := m.resumeLocked(ctx, vm, rt); err != nil {
			return err
		}
		m.setClock(ctx, vm, rt)
		return nil
	})
}

// resumeLocked continues rt's vCPUs and records vm running.
func (m *Manager) resumeLocked(ctx context.Context, vm *model.VM, rt *runtime) error {
	if rt.eng.Pauser == nil {
		return api.Errorf(api.CodeBadRequest, "engine %q cannot resume a vm", rt.eng.Name())
	}
	if err := rt.eng.Pauser.Resume(ctx, rt.inst); err != nil {
		return api.Errorf(api.CodeOperationFailed, "resume vm %q: %v", vm.Name, err)
	}
	vm.State = model.StateRunning
	defer m.changed()
	m.log.Info("vm resumed", "vm", vm.Name, "id", vm.ID)
	return m.store.UpdateVM(context.WithoutCancel(ctx), vm)
}

// setClock sets the guest's wall clock from the host's: while paused (or
// saved in a snapshot) the guest's clock stood still. A guest whose agent
// does not answer keeps its clock, and the daemon logs why; NTP in the guest,
// if any, catches up later.
func (m *Manager) setClock(ctx context.Context, vm *model.VM, rt *runtime) {
	cctx, cancel := context.WithTimeout(ctx, clockTimeout)
	defer cancel()
	err := func() error {
		c, err := m.agentClient(cctx, rt, clockTimeout)
		if err != nil {
			return err
		}
		resp, err := c.Call(cctx, agent.Request{Op: agent.OpSetClock, ClockNS: time.Now().UnixNano()})
		if err != nil {
			return err
		}
		if !resp.OK {
			return fmt.Errorf("%s", resp.Error)
		}
		return nil
	}()
	if err != nil {
		m.log.Warn("set guest clock", "vm", vm.Name, "err", err)
	}
}
