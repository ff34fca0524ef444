package vm

// Booting a VM: the VMM spec, the boot itself and the watch on the running VMM.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/engine"
	"banger/internal/model"
	"banger/internal/seriallog"
)

// Start boots a created or stopped VM and waits for its guest agent.
func (m *Manager) Start(ctx context.Context, ref string, progress Progress) (*model.VM, error) {
	return m.locked(ctx, ref, func(vm *model.VM) error { return m.startLocked(ctx, vm, progress) })
}

// specFor is the spec that boots vm with engine e: banger's part (what
// every engine boots), completed by the engine's layout of its files.
func (m *Manager) specFor(vm *model.VM, e *engine.Engine, k *model.Kernel, initrd, accel string) engine.Spec {
	dir := m.layout.VMDir(vm.ID)
	s := engine.Spec{
		ID: vm.ID, Name: vm.Name, VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB,
		Kernel: k.Vmlinux, Initramfs: initrd,
		Cmdline:   bootCmdline(vm, accel),
		WorkDisk:  filepath.Join(dir, "work.ext4"),
		SerialLog: filepath.Join(dir, "serial.log"),
		VMMLog:    filepath.Join(dir, "vmm.log"),
		Accel:     accel,
		Balloon:   m.cfg.Balloon,
	}
	if vm.NoWorkDisk {
		s.WorkDisk = ""
	}
	return e.Layout(s, m.dirs(vm))
}

// bootCmdline is banger's part of the kernel command line: parameters for
// the agent's init stage. The driver adds console, panic and timekeeping
// parameters itself.
func bootCmdline(vm *model.VM, accel string) string {
	args := []string{"quiet", "banger.name=" + vm.Name, "banger.root=/dev/vda"}
	if !vm.NoWorkDisk {
		args = append(args, "banger.work=/dev/vdb")
	}
	return strings.Join(args, " ")
}

func (m *Manager) startLocked(ctx context.Context, vm *model.VM, progress Progress) (err error) {
	switch vm.State {
	case model.StateCreated, model.StateStopped, model.StateError:
	case model.StateRunning, model.StateStarting:
		return api.Errorf(api.CodeConflict, "vm %q is already running", vm.Name)
	default:
		return api.Errorf(api.CodeConflict, "vm %q cannot start while %s", vm.Name, vm.State)
	}
	k, err := m.store.GetKernel(ctx, vm.Kernel)
	if err != nil {
		return fmt.Errorf("start vm %q: kernel %q: %w", vm.Name, vm.Kernel, err)
	}
	var accel, warning string
	if err := step(progress, "resolve_accel", func() error {
		accel, warning, err = m.accel(ctx, k.Vmlinux)
		return err
	}); err != nil {
		return fmt.Errorf("start vm %q: %w", vm.Name, err)
	}
	if warning != "" && progress != nil {
		progress(api.Progress{Stage: "warning", Detail: warning})
	}
	// An engine that cannot run here is refused before the VM is marked
	// starting.
	eng, err := m.engineFor(vm)
	if err != nil {
		return fmt.Errorf("start vm %q: %w", vm.Name, err)
	}
	if err := m.checkAccel(vm, eng, accel); err != nil {
		return err
	}
	vm.State, vm.Accel, vm.LastError = model.StateStarting, accel, ""
	if err := m.store.UpdateVM(ctx, vm); err != nil {
		return err
	}
	initrd, err := m.initrd(ctx, k)
	if err != nil {
		return fmt.Errorf("start vm %q: %w", vm.Name, err)
	}
	spec := m.specFor(vm, eng, k, initrd, accel)
	if err := os.MkdirAll(m.layout.VMRunDir(vm.ID), 0o700); err != nil {
		return err
	}
	seriallog.Remove(spec.SerialLog)

	defer func() {
		if err != nil {
			m.failStart(vm, err)
			err = fmt.Errorf("start vm %q: %w", vm.Name, err)
		}
	}()
	if err := step(progress, "network", func() error {
		args, err := m.netSpec(ctx, vm, &spec)
		if args != "" {
			spec.Cmdline += " " + args
		}
		return err
	}); err != nil {
		return err
	}
	var inst engine.Instance
	if err := step(progress, "launch_vmm", func() error {
		inst, err = eng.Start(ctx, spec)
		return err
	}); err != nil {
		return err
	}
	rt := &runtime{eng: eng, inst: inst, spec: spec, closed: make(chan struct{})}
	m.mu.Lock()
	m.running[vm.ID] = rt
	m.mu.Unlock()
	vm.PID = inst.PID()
	m.followSerial(vm, rt)

	var resp agent.Response
	if err := step(progress, "wait_agent", func() error {
		bctx, cancel := context.WithTimeout(ctx, m.cfg.BootTimeout.Duration)
		defer cancel()
		go func() {
			select {
			case <-inst.Done():
				cancel()
			case <-bctx.Done():
			}
		}()
		c, r, err := waitAgent(bctx, rt)
		resp = r
		if err != nil {
			select {
			case <-inst.Done():
				return fmt.Errorf("the VM exited during boot; see `banger vm logs %s`", vm.Name)
			default:
			}
			return err
		}
		rt.agent = c
		return nil
	}); err != nil {
		return err
	}
	vm.State, vm.StartedAt = model.StateRunning, time.Now().UTC()
	if err := m.store.UpdateVM(context.WithoutCancel(ctx), vm); err != nil {
		return err
	}
	if err := step(progress, "connect", func() error {
		if err := m.netUp(ctx, vm); err != nil {
			return err
		}
		if err := m.installCA(ctx, vm); err != nil {
			return err
		}
		if m.net != nil && m.net.AfterBoot != nil {
			return m.net.AfterBoot(ctx, vm, rt.agent)
		}
		return nil
	}); err != nil {
		return err
	}
	m.changed()
	m.log.Info("vm running", "vm", vm.Name, "id", vm.ID, "pid", vm.PID, "accel", accel, "boot_id", resp.BootID)
	go m.monitor(vm.ID, rt)
	return nil
}

// failStart kills whatever a failed start left running and records why.
func (m *Manager) failStart(vm *model.VM, cause error) {
	// What the guest printed last says why it did not come up (a panic,
	// a soft lockup, a root that would not mount); the VM's files may be
	// deleted right after this, so the daemon log keeps it.
	if tail := consoleTail(filepath.Join(m.layout.VMDir(vm.ID), "serial.log"), 20); tail != "" {
		m.log.Warn("start failed; last lines of the guest console", "vm", vm.Name, "console", tail)
	}
	if rt := m.runtimeOf(vm.ID); rt != nil {
		rt.mu.Lock()
		rt.expectExit = true
		rt.mu.Unlock()
		m.killAndWait(rt, syscall.SIGKILL, 10*time.Second)
		m.forget(vm.ID, rt)
	}
	m.netDown(context.Background(), vm)
	os.RemoveAll(m.layout.VMRunDir(vm.ID))
	vm.State, vm.PID, vm.LastError = model.StateError, 0, cause.Error()
	if err := m.store.UpdateVM(context.Background(), vm); err != nil {
		m.log.Error("record failed start", "vm", vm.Name, "err", err)
	}
}

func isDone(inst engine.Instance) bool {
	select {
	case <-inst.Done():
		return true
	default:
		return false
	}
}

func (m *Manager) killAndWait(rt *runtime, sig syscall.Signal, timeout time.Duration) bool {
	rt.inst.Kill(sig)
	select {
	case <-rt.inst.Done():
		return true
	case <-time.After(timeout):
		return false
	}
}

func (m *Manager) forget(id string, rt *runtime) {
	m.mu.Lock()
	if m.running[id] == rt {
		delete(m.running, id)
	}
	m.mu.Unlock()
	rt.mu.Lock()
	if rt.agent != nil {
		rt.agent.Close()
		rt.agent = nil
	}
	rt.mu.Unlock()
	rt.closeOnce.Do(func() { close(rt.closed) })
	rt.inst.Close()
}

// monitor waits for the VMM to exit. An exit nobody asked for (the guest
// powered itself off, or the VMM died) is recorded as stopped.
func (m *Manager) monitor(id string, rt *runtime) {
	select {
	case <-rt.inst.Done():
	case <-rt.closed:
		return
	}
	rt.mu.Lock()
	expected := rt.expectExit
	rt.mu.Unlock()
	if expected {
		return
	}
	unlock := m.lock(id)
	defer unlock()
	rt.mu.Lock()
	expected = rt.expectExit
	rt.mu.Unlock()
	if expected || m.runtimeOf(id) != rt {
		return
	}
	m.forget(id, rt)
	ctx := context.Background()
	vm, err := m.store.GetVM(ctx, id)
	if err != nil {
		os.RemoveAll(m.layout.VMRunDir(id))
		return
	}
	m.netDown(ctx, vm)
	os.RemoveAll(m.layout.VMRunDir(id))
	defer m.changed()
	m.log.Info("vm exited on its own", "vm", vm.Name, "id", id)
	vm.State, vm.PID = model.StateStopped, 0
	m.store.UpdateVM(ctx, vm)
}
