package vm

// Ending a VM: stop, kill, restart, delete and prune.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/model"
	"banger/internal/store"
)

// Stop shuts a running VM down gracefully: the agent syncs the disks and
// asks the guest's init to power off. A guest that does not go within the
// stop timeout is powered off by the agent directly, then killed.
func (m *Manager) Stop(ctx context.Context, ref string) (*model.VM, error) {
	return m.lockedLive(ctx, ref, func(vm *model.VM, rt *runtime) error { return m.stopLocked(ctx, vm, rt) })
}

func (m *Manager) stopLocked(ctx context.Context, vm *model.VM, rt *runtime) error {
	// A paused guest cannot shut itself down: continue it first.
	if vm.State == model.StatePaused {
		if err := m.resumeLocked(ctx, vm, rt); err != nil {
			return fmt.Errorf("stop vm %q: %w", vm.Name, err)
		}
	}
	rt.mu.Lock()
	rt.expectExit = true
	rt.mu.Unlock()
	vm.State = model.StateStopping
	m.store.UpdateVM(ctx, vm)

	graceful := func(force bool, wait time.Duration) bool {
		c, err := m.agentClient(ctx, rt, 5*time.Second)
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = c.Call(cctx, agent.Request{Op: agent.OpPoweroff, Force: force})
			cancel()
		}
		if err != nil {
			m.log.Warn("agent poweroff failed", "vm", vm.Name, "force", force, "err", err)
		}
		select {
		case <-rt.inst.Done():
			return true
		case <-time.After(wait):
			return false
		}
	}
	if !graceful(false, m.cfg.StopTimeout.Duration) && !graceful(true, 5*time.Second) {
		ctrlAltDel(ctx, rt)
		select {
		case <-rt.inst.Done():
		case <-time.After(5 * time.Second):
		}
	}
	if !isDone(rt.inst) {
		m.log.Warn("guest did not power off; killing the VMM", "vm", vm.Name)
		if !m.killAndWait(rt, syscall.SIGKILL, 10*time.Second) {
			return fmt.Errorf("stop vm %q: the VMM (pid %d) did not exit", vm.Name, rt.inst.PID())
		}
	}
	m.forget(vm.ID, rt)
	m.netDown(ctx, vm)
	os.RemoveAll(m.layout.VMRunDir(vm.ID))
	vm.State, vm.PID = model.StateStopped, 0
	defer m.changed()
	return m.store.UpdateVM(context.WithoutCancel(ctx), vm)
}

// Kill sends sig to the VMM. The VM ends up stopped, not in error.
func (m *Manager) Kill(ctx context.Context, ref string, sig syscall.Signal) (*model.VM, error) {
	return m.lockedLive(ctx, ref, func(vm *model.VM, rt *runtime) error { return m.killLocked(ctx, vm, rt, sig) })
}

func (m *Manager) killLocked(ctx context.Context, vm *model.VM, rt *runtime, sig syscall.Signal) error {
	rt.mu.Lock()
	rt.expectExit = true
	rt.mu.Unlock()
	if !m.killAndWait(rt, sig, 10*time.Second) {
		rt.mu.Lock()
		rt.expectExit = false
		rt.mu.Unlock()
		return api.Errorf(api.CodeOperationFailed, "vm %q is still running 10s after SIG%s", vm.Name, strings.ToUpper(unixSignalName(sig)))
	}
	m.forget(vm.ID, rt)
	m.netDown(ctx, vm)
	os.RemoveAll(m.layout.VMRunDir(vm.ID))
	vm.State, vm.PID = model.StateStopped, 0
	defer m.changed()
	return m.store.UpdateVM(context.WithoutCancel(ctx), vm)
}

// Restart stops the VM and boots it again: a fresh kernel boot.
func (m *Manager) Restart(ctx context.Context, ref string, progress Progress) (*model.VM, error) {
	return m.locked(ctx, ref, func(vm *model.VM) error {
		if rt := m.runtimeOf(vm.ID); rt != nil && (vm.State == model.StateRunning || vm.State == model.StatePaused) {
			if err := step(progress, "stop", func() error { return m.stopLocked(ctx, vm, rt) }); err != nil {
				return err
			}
		}
		return m.startLocked(ctx, vm, progress)
	})
}

// Delete removes a VM, killing it first if it runs.
func (m *Manager) Delete(ctx context.Context, ref string) error {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return err
	}
	defer m.lock(vm.ID)()
	return m.deleteLocked(ctx, vm)
}

func (m *Manager) deleteLocked(ctx context.Context, vm *model.VM) error {
	ctx = context.WithoutCancel(ctx)
	if rt := m.runtimeOf(vm.ID); rt != nil {
		if err := m.killLocked(ctx, vm, rt, syscall.SIGKILL); err != nil {
			return fmt.Errorf("delete vm %q: %w", vm.Name, err)
		}
	}
	m.removeFiles(vm)
	if err := m.store.DeleteVM(ctx, vm.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("delete vm %q: %w", vm.Name, err)
	}
	m.mu.Lock()
	delete(m.locks, vm.ID)
	m.mu.Unlock()
	if m.net != nil && m.net.Deleted != nil {
		m.net.Deleted(vm)
	}
	m.changed()
	m.log.Info("vm deleted", "vm", vm.Name, "id", vm.ID)
	return nil
}

// Prune deletes every VM that is not running.
func (m *Manager) Prune(ctx context.Context) ([]string, error) {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	deleted := []string{}
	for _, v := range vms {
		unlock := m.lock(v.ID)
		cur, err := m.store.GetVM(ctx, v.ID)
		if err == nil && !isActive(cur.State) && m.runtimeOf(v.ID) == nil {
			if err := m.deleteLocked(ctx, cur); err != nil {
				unlock()
				return deleted, err
			}
			deleted = append(deleted, cur.Name)
		}
		unlock()
	}
	return deleted, nil
}

func isActive(s model.VMState) bool {
	return s == model.StateRunning || s == model.StateStarting || s == model.StateStopping || s == model.StatePaused
}
