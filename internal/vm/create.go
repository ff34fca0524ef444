package vm

// Creating a VM: validation, its store row and its disks.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/api"
	"banger/internal/engine"
	"banger/internal/hosttools"
	"banger/internal/model"
	"banger/internal/store"
)

// Create validates params, records the VM and makes its disks over img;
// unless params.NoStart it then boots it. img is the image to boot,
// already resolved (and pulled when missing) by the caller: the VM
// manager never fetches images. Bad input is refused before anything is
// recorded; a failure after that removes what was made.
func (m *Manager) Create(ctx context.Context, params api.VMCreateParams, img *model.Image, progress Progress) (*model.VM, error) {
	vm, err := m.validateCreate(ctx, params, img)
	if err != nil {
		return nil, err
	}
	if err := m.prepareNetwork(ctx, vm, params); err != nil {
		return nil, err
	}
	eng, err := m.resolveEngine(params.Engine, vm.Network)
	if err != nil {
		return nil, err
	}
	vm.Engine = eng.Name()
	if err := m.insert(ctx, vm); err != nil {
		return nil, err
	}
	unlock := m.lock(vm.ID)
	err = step(progress, "prepare_disks", func() error { return m.makeDisks(ctx, vm, eng, img) })
	if err != nil {
		m.removeFiles(vm)
		m.store.DeleteVM(context.WithoutCancel(ctx), vm.ID)
		unlock()
		return nil, fmt.Errorf("create vm %q: %w", vm.Name, err)
	}
	m.store.UpdateVM(ctx, vm) // records how the root disk was made
	if params.NoStart {
		unlock()
		return vm, nil
	}
	err = m.startLocked(ctx, vm, progress)
	unlock()
	if err != nil || params.Wait == "" || params.Wait == api.WaitAgent {
		return vm, err
	}
	// The agent answers; wait for what the caller calls ready. The VM is
	// made and running either way: a timeout says so.
	err = step(progress, "wait_"+params.Wait, func() error {
		_, err := m.WaitReady(ctx, vm.ID, params.Wait, m.cfg.BootTimeout.Duration)
		return err
	})
	if err != nil {
		return vm, fmt.Errorf("created and started; wait for %s: %w", params.Wait, err)
	}
	return vm, nil
}

// insert records a new VM; a bridge-mode VM gets its address here, retried
// when a concurrent create took the same one.
func (m *Manager) insert(ctx context.Context, vm *model.VM) error {
	for attempt := 0; ; attempt++ {
		if vm.Network == NetBridge {
			if err := m.allocateIP(ctx, vm); err != nil {
				return err
			}
		}
		err := m.store.CreateVM(ctx, vm)
		if err == nil {
			return nil
		}
		if !errors.Is(err, store.ErrExists) {
			return err
		}
		if _, gerr := m.store.GetVM(ctx, vm.Name); gerr == nil {
			return api.Errorf(api.CodeAlreadyExists, "vm %q already exists", vm.Name)
		}
		if vm.Network != NetBridge || attempt >= 10 {
			return err
		}
	}
}

// createParams are a create's checked parameters, config defaults
// applied.
type createParams struct {
	name      string
	vcpu, mem int
	disk      int64
}

// CheckCreate checks what a create's parameters say on their own, without
// the store or the image; the daemon calls it before it spends time
// pulling an image for a create that would be refused anyway.
func (m *Manager) CheckCreate(p api.VMCreateParams) error {
	_, err := m.checkCreate(p)
	return err
}

func (m *Manager) checkCreate(p api.VMCreateParams) (createParams, error) {
	c := createParams{name: p.Name, vcpu: p.VCPU, mem: p.MemoryMiB}
	if c.name == "" {
		c.name = generateName()
	}
	if err := model.ValidateName(c.name); err != nil {
		return c, api.Errorf(api.CodeBadRequest, "invalid vm name: %v", err)
	}
	if c.vcpu == 0 {
		c.vcpu = m.cfg.VCPU
	}
	if c.mem == 0 {
		c.mem = m.cfg.MemoryMiB
	}
	if err := validateResources(c.vcpu, c.mem); err != nil {
		return c, err
	}
	if err := api.ValidWait(p.Wait); err != nil {
		return c, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if _, _, err := egressPolicy(p.Egress, p.NAT); err != nil {
		return c, err
	}
	diskStr := p.DiskSize
	if diskStr == "" {
		diskStr = m.cfg.DiskSize
	}
	var err error
	if c.disk, err = model.ParseDiskSize("disk size", diskStr); err != nil {
		return c, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	return c, nil
}

func (m *Manager) validateCreate(ctx context.Context, p api.VMCreateParams, img *model.Image) (*model.VM, error) {
	c, err := m.checkCreate(p)
	if err != nil {
		return nil, err
	}
	if img == nil {
		return nil, api.Errorf(api.CodeBadRequest, "no image given")
	}
	if _, err := m.store.GetKernel(ctx, img.Kernel); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, api.Errorf(api.CodeNotFound, "image %q uses kernel %q, which is not imported", img.Name, img.Kernel)
		}
		return nil, err
	}
	return &model.VM{
		ID: newID(), Name: c.name, Image: img.Name, Kernel: img.Kernel,
		VCPU: c.vcpu, MemoryMiB: c.mem, DiskSize: c.disk,
		State: model.StateCreated, AutoRemove: p.AutoRemove, NoWorkDisk: p.NoWorkDisk,
	}, nil
}

func validateResources(vcpu, mem int) error {
	if err := model.CheckVCPU("vcpu", vcpu); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if err := model.CheckMemoryMiB("memory", mem); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	return nil
}

// makeDisks has the engine make the copy-on-write root disk over the
// image, and makes the VM's own work disk.
func (m *Manager) makeDisks(ctx context.Context, vm *model.VM, eng *engine.Engine, img *model.Image) error {
	dir := m.layout.VMDir(vm.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	method, err := eng.PrepareRootDisk(ctx, img.Rootfs, m.dirs(vm))
	if err != nil {
		return err
	}
	vm.DiskClone = method
	if vm.NoWorkDisk {
		return nil
	}
	work := filepath.Join(dir, "work.ext4")
	f, err := os.OpenFile(work, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(vm.DiskSize)
	f.Close()
	if err != nil {
		return fmt.Errorf("size work disk: %w", err)
	}
	if _, err := hosttools.Run(ctx, hosttools.MkfsExt4, "-q", "-F", "-L", "work",
		"-E", "lazy_itable_init=1,lazy_journal_init=1", work); err != nil {
		return fmt.Errorf("format work disk: %w", err)
	}
	return nil
}

func (m *Manager) removeFiles(vm *model.VM) {
	m.cleanupEngine(vm)
	os.RemoveAll(m.layout.VMDir(vm.ID))
	os.RemoveAll(m.layout.VMRunDir(vm.ID))
}
