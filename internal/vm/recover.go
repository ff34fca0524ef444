package vm

// Re-attaching to VMs after a daemon restart.

import (
	"context"
	"os"
	"syscall"
	"time"

	"banger/internal/model"
)

// Recover re-adopts the VMMs a previous daemon left running, marks the
// ones that are gone as stopped, and deletes auto-remove VMs whose client
// went away with the old daemon.
func (m *Manager) Recover(ctx context.Context) error {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	var adopted []*model.VM
	defer func() {
		m.recoverNetwork(ctx, adopted)
		m.changed()
	}()
	for _, vm := range vms {
		if vm.AutoRemove {
			m.log.Info("deleting auto-remove vm left by a previous daemon", "vm", vm.Name)
			if err := m.deleteAfterRecover(ctx, vm); err != nil {
				m.log.Error("delete", "vm", vm.Name, "err", err)
			}
			continue
		}
		if !isActive(vm.State) {
			continue
		}
		k, err := m.store.GetKernel(ctx, vm.Kernel)
		if err != nil {
			m.markGone(ctx, vm, "kernel missing")
			continue
		}
		eng, err := m.engineFor(vm)
		if err != nil {
			m.markGone(ctx, vm, err.Error())
			continue
		}
		spec := m.specFor(vm, eng, k, k.Initramfs, vm.Accel)
		inst, err := eng.Adopt(ctx, spec)
		if err != nil {
			m.markGone(ctx, vm, err.Error())
			continue
		}
		rt := &runtime{eng: eng, inst: inst, spec: spec, closed: make(chan struct{})}
		m.mu.Lock()
		m.running[vm.ID] = rt
		m.mu.Unlock()
		m.followSerial(vm, rt)
		// A paused VM stays paused; what the VMM says wins over the row
		// (a daemon that died between pausing and recording it).
		state := model.StateRunning
		if eng.Pauser != nil {
			if paused, err := eng.Pauser.Paused(ctx, inst); err == nil && paused {
				state = model.StatePaused
			}
		}
		if vm.State != state {
			vm.State = state
			m.store.UpdateVM(ctx, vm)
		}
		m.log.Info("re-adopted running vm", "vm", vm.Name, "pid", inst.PID())
		adopted = append(adopted, vm)
		go m.monitor(vm.ID, rt)
	}
	return nil
}

func (m *Manager) deleteAfterRecover(ctx context.Context, vm *model.VM) error {
	if isActive(vm.State) {
		if k, err := m.store.GetKernel(ctx, vm.Kernel); err == nil {
			eng, eerr := m.engineFor(vm)
			if eerr != nil {
				eng = m.engines.Default()
			}
			if inst, err := eng.Adopt(ctx, m.specFor(vm, eng, k, k.Initramfs, vm.Accel)); err == nil {
				inst.Kill(syscall.SIGKILL)
				select {
				case <-inst.Done():
				case <-time.After(10 * time.Second):
				}
				inst.Close()
			}
		}
	}
	m.netDown(ctx, vm)
	m.removeFiles(vm)
	return m.store.DeleteVM(ctx, vm.ID)
}

func (m *Manager) markGone(ctx context.Context, vm *model.VM, why string) {
	m.log.Warn("vm's VMM is gone", "vm", vm.Name, "why", why)
	m.netDown(ctx, vm)
	os.RemoveAll(m.layout.VMRunDir(vm.ID))
	vm.State, vm.PID = model.StateStopped, 0
	m.store.UpdateVM(ctx, vm)
}
