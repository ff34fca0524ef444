package vm

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/engine"
	"banger/internal/hosttools"
	"banger/internal/model"
)

// Engine names.
const (
	EngineQEMU        = "qemu"
	EngineFirecracker = "firecracker"
)

// diskCloner makes a raw copy-on-write root disk (Firecracker takes raw
// files only); firecracker.CloneDisk in production.
type diskCloner func(src, dst string) (method string, err error)

// SetEngine registers a further VMM driver (e.g. Firecracker) and how its
// raw root disks are cloned.
func (m *Manager) SetEngine(d engine.Driver, clone func(src, dst string) (string, error)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.drivers == nil {
		m.drivers = map[string]engine.Driver{}
	}
	m.drivers[d.Name()] = d
	m.cloneDisk = clone
}

// engineOf is a VM's engine; rows from before engines existed are QEMU.
func engineOf(vm *model.VM) string {
	if vm.Engine == "" {
		return EngineQEMU
	}
	return vm.Engine
}

// driverFor returns the driver that runs vm.
func (m *Manager) driverFor(vm *model.VM) (engine.Driver, error) {
	name := engineOf(vm)
	if name == EngineQEMU || name == m.driver.Name() {
		return m.driver, nil
	}
	m.mu.Lock()
	d := m.drivers[name]
	m.mu.Unlock()
	if d == nil {
		return nil, fmt.Errorf("vm %q uses engine %q, which this daemon does not have", vm.Name, name)
	}
	return d, nil
}

// resolveEngine picks the engine of a new VM. "auto" means QEMU: it runs
// everywhere (with KVM or TCG); Firecracker is chosen explicitly.
func (m *Manager) resolveEngine(requested, network string) (string, error) {
	e := requested
	if e == "" {
		e = m.cfg.Engine
	}
	switch e {
	case "", "auto", EngineQEMU:
		return EngineQEMU, nil
	case EngineFirecracker:
		m.mu.Lock()
		d := m.drivers[EngineFirecracker]
		m.mu.Unlock()
		if d == nil {
			return "", api.Errorf(api.CodeBadRequest, "engine firecracker is not available in this daemon")
		}
		if network == NetUser {
			return "", api.Errorf(api.CodeBadRequest, "firecracker has no user-mode networking: use --network bridge (as root) or --network none")
		}
		if _, err := hosttools.Path(m.cfg.FirecrackerBin); err != nil {
			return "", api.Errorf(api.CodeBadRequest, "engine firecracker: %v; set firecracker_bin if it is installed elsewhere (`banger doctor` says more)", err)
		}
		return EngineFirecracker, nil
	}
	return "", api.Errorf(api.CodeBadRequest, "engine must be auto, qemu or firecracker, got %q", e)
}

// rootDiskPath is the VM's root disk: a qcow2 overlay for QEMU, a raw
// clone for Firecracker.
func (m *Manager) rootDiskPath(vm *model.VM) string {
	if engineOf(vm) == EngineFirecracker {
		return filepath.Join(m.layout.VMDir(vm.ID), "root.raw")
	}
	return filepath.Join(m.layout.VMDir(vm.ID), "root.qcow2")
}

// adjustSpec turns the QEMU-shaped spec into a Firecracker one: raw root
// disk, the agent over hybrid vsock instead of a virtio-serial port, the
// API socket in place of QMP.
func (m *Manager) adjustSpec(vm *model.VM, spec *engine.Spec) {
	if engineOf(vm) != EngineFirecracker {
		return
	}
	run := m.layout.VMRunDir(vm.ID)
	spec.RootDisk = m.rootDiskPath(vm)
	spec.AgentSocket, spec.AgentPortName = "", ""
	spec.VsockSocket = filepath.Join(run, "vsock.sock")
	spec.QMPSocket = filepath.Join(run, "api.sock")
	spec.PIDFile = filepath.Join(run, "firecracker.pid")
	if !strings.Contains(spec.Cmdline, "banger.agent=") {
		spec.Cmdline += " banger.agent=vsock"
	}
	// A jailed Firecracker has its sockets inside its chroot.
	if d, err := m.driverFor(vm); err == nil {
		if j, ok := d.(interface{ JailSpec(engine.Spec) engine.Spec }); ok {
			*spec = j.JailSpec(*spec)
		}
	}
}

// cleanupEngine removes what the engine keeps per VM outside the VM's own
// directories (a Firecracker jail).
func (m *Manager) cleanupEngine(vm *model.VM) {
	if engineOf(vm) != EngineFirecracker {
		return
	}
	d, err := m.driverFor(vm)
	if err != nil {
		return
	}
	if c, ok := d.(interface{ Cleanup(engine.Spec) error }); ok {
		k := &model.Kernel{Vmlinux: "/nonexistent"}
		if err := c.Cleanup(m.specFor(vm, k, "", "kvm")); err != nil {
			m.log.Warn("engine cleanup", "vm", vm.Name, "err", err)
		}
	}
}

// ctrlAltDel is the Firecracker fallback for a guest the agent cannot
// power off.
func ctrlAltDel(ctx context.Context, inst engine.Instance) {
	if s, ok := inst.(interface{ SendCtrlAltDel(context.Context) error }); ok {
		s.SendCtrlAltDel(ctx)
	}
}
