package vm

// Changing a stopped VM's resources.

import (
	"context"
	"fmt"

	"banger/internal/api"
	"banger/internal/egress/policy"
	"banger/internal/model"
)

// Set changes the resources of a stopped VM, and the egress policy of
// any VM: on a running bridge-mode VM the new policy takes effect at once
// (DNS, proxy and firewall; connections the old policy allowed and the
// new one does not are cut by the enforcer).
func (m *Manager) Set(ctx context.Context, ref string, p api.VMSetParams) (*model.VM, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer m.lock(vm.ID)()
	if vm, err = m.Get(ctx, vm.ID); err != nil {
		return nil, err
	}
	if p.VCPU == 0 && p.MemoryMiB == 0 && p.Egress == nil {
		return nil, api.Errorf(api.CodeBadRequest, "nothing to change: give --vcpu, --memory or an egress policy")
	}
	running := isActive(vm.State) || m.runtimeOf(vm.ID) != nil
	if p.VCPU == 0 && p.MemoryMiB == 0 {
		return m.setEgressOnly(ctx, vm, p.Egress, running)
	}
	if running {
		return nil, api.Errorf(api.CodeConflict, "vm %q is %s; stop it before changing its resources", vm.Name, vm.State)
	}
	if p.Egress != nil {
		if _, err := setEgress(vm, p.Egress, false); err != nil {
			return nil, err
		}
	}
	vcpu, mem := vm.VCPU, vm.MemoryMiB
	if p.VCPU != 0 {
		vcpu = p.VCPU
	}
	if p.MemoryMiB != 0 {
		mem = p.MemoryMiB
	}
	if err := validateResources(vcpu, mem); err != nil {
		return nil, err
	}
	vm.VCPU, vm.MemoryMiB = vcpu, mem
	return vm, m.store.UpdateVM(ctx, vm)
}

// setEgressOnly replaces vm's egress policy and applies it to the running
// VM. vm is locked by the caller.
func (m *Manager) setEgressOnly(ctx context.Context, vm *model.VM, spec *policy.Spec, running bool) (*model.VM, error) {
	if running && vm.State != model.StateRunning {
		return nil, api.Errorf(api.CodeConflict, "vm %q is %s; change its egress policy once it runs or is stopped", vm.Name, vm.State)
	}
	oldNAT := vm.NAT
	if _, err := setEgress(vm, spec, false); err != nil {
		return nil, err
	}
	if running && vm.Network == NetUser && vm.NAT != oldNAT {
		return nil, api.Errorf(api.CodeConflict, "vm %q runs with user networking, whose egress mode is fixed while it runs; stop it first", vm.Name)
	}
	if err := m.store.UpdateVM(ctx, vm); err != nil {
		return nil, err
	}
	if running && vm.Network == NetBridge && m.net != nil && m.net.Host != nil {
		if err := m.syncNAT(ctx, ""); err != nil {
			return vm, fmt.Errorf("vm %q: policy stored, but applying it failed: %w", vm.Name, err)
		}
		if err := m.installCA(ctx, vm); err != nil {
			return vm, fmt.Errorf("vm %q: policy applied, but: %w", vm.Name, err)
		}
	}
	return vm, nil
}
