package vm

// The seam to the engines: the manager asks a VM's engine (engine.Driver
// and the capabilities its registry entry found) for everything that
// differs between VMMs, and never branches on an engine's name.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/engine"
	"banger/internal/model"
)

// engineFor returns the engine that runs vm; rows from before engines
// existed (no engine recorded) are the default engine's (QEMU's).
func (m *Manager) engineFor(vm *model.VM) (*engine.Engine, error) {
	e, err := m.engines.Lookup(vm.Engine)
	if err != nil {
		return nil, fmt.Errorf("vm %q uses engine %q, which this daemon does not have", vm.Name, vm.Engine)
	}
	return e, nil
}

// resolveEngine picks the engine of a new VM (the request's, else the
// configured one; auto is the default engine) and checks that it can run
// it here.
func (m *Manager) resolveEngine(requested, network string) (*engine.Engine, error) {
	name := requested
	if name == "" {
		name = m.cfg.Engine
	}
	e, err := m.engines.Lookup(name)
	if errors.Is(err, engine.ErrUnknown) {
		if !slices.Contains(engine.Names(), name) {
			return nil, api.Errorf(api.CodeBadRequest, "engine %v", engine.ValidChoice(name))
		}
		return nil, api.Errorf(api.CodeBadRequest, "engine %s is not available in this daemon", name)
	}
	if err != nil {
		return nil, err
	}
	if network == NetUser && !e.Traits().UserNetworking {
		return nil, api.Errorf(api.CodeBadRequest, "%s has no user-mode networking: use --network bridge (as root) or --network none", e.Name())
	}
	if e.Checker != nil {
		if err := e.Checker.Available(); err != nil {
			return nil, api.Errorf(api.CodeBadRequest, "engine %s: %v (`banger doctor` says more)", e.Name(), err)
		}
	}
	return e, nil
}

// dirs are vm's directories, in which its engine lays out its files.
func (m *Manager) dirs(vm *model.VM) engine.Dirs {
	return engine.Dirs{State: m.layout.VMDir(vm.ID), Run: m.layout.VMRunDir(vm.ID)}
}

// checkAccel refuses to start vm under an accelerator its engine cannot
// use.
func (m *Manager) checkAccel(vm *model.VM, e *engine.Engine, accel string) error {
	if e.Traits().NeedsKVM && accel != engine.AccelKVM {
		return fmt.Errorf("start vm %q: %s needs a usable KVM (this host runs guests under %s); recreate it with --engine %s", vm.Name, e.Name(), accel, m.engines.Default().Name())
	}
	return nil
}

// cleanupEngine removes what the engine keeps per VM outside the VM's own
// directories (a Firecracker jail).
func (m *Manager) cleanupEngine(vm *model.VM) {
	e, err := m.engineFor(vm)
	if err != nil || e.Cleaner == nil {
		return
	}
	if err := e.Cleaner.Cleanup(m.specFor(vm, e, &model.Kernel{}, "", engine.AccelKVM)); err != nil {
		m.log.Warn("engine cleanup", "vm", vm.Name, "err", err)
	}
}

// ctrlAltDel is the fallback for a guest the agent cannot power off, on
// engines that have it.
func ctrlAltDel(ctx context.Context, rt *runtime) {
	if rt.eng.CtrlAltDel != nil {
		rt.eng.CtrlAltDel.SendCtrlAltDel(ctx, rt.inst)
	}
}

// waitAgent connects to the guest agent of the VM rt runs and pings it
// until it answers or ctx ends.
func waitAgent(ctx context.Context, rt *runtime) (*agent.Client, agent.Response, error) {
	return agent.WaitReadyDial(ctx, func(ctx context.Context) (net.Conn, error) {
		return rt.eng.DialAgent(ctx, rt.spec)
	})
}

// rootDisk is the path of vm's root disk, as its engine lays it out.
func (m *Manager) rootDisk(vm *model.VM) string {
	e, err := m.engineFor(vm)
	if err != nil {
		return ""
	}
	return m.specFor(vm, e, &model.Kernel{}, "", engine.AccelKVM).RootDisk
}
