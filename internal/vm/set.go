package vm

// Changing a stopped VM's resources.

import (
	"context"

	"banger/internal/api"
	"banger/internal/model"
)

// Set changes the resources of a stopped VM.
func (m *Manager) Set(ctx context.Context, ref string, p api.VMSetParams) (*model.VM, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer m.lock(vm.ID)()
	if vm, err = m.Get(ctx, vm.ID); err != nil {
		return nil, err
	}
	if isActive(vm.State) || m.runtimeOf(vm.ID) != nil {
		return nil, api.Errorf(api.CodeConflict, "vm %q is %s; stop it before changing its resources", vm.Name, vm.State)
	}
	if p.VCPU == 0 && p.MemoryMiB == 0 {
		return nil, api.Errorf(api.CodeBadRequest, "nothing to change: give --vcpu and/or --memory")
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
