package vm

// Creating a VM: validation, its store row and its disks.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/engine"
	"banger/internal/hosttools"
	"banger/internal/model"
	"banger/internal/store"
)

// Create validates params, records the VM and makes its disks; unless
// params.NoStart it then boots it. Bad input is refused before anything is
// recorded; a failure after that removes what was made.
func (m *Manager) Create(ctx context.Context, params api.VMCreateParams, progress Progress) (*model.VM, error) {
	vm, img, err := m.validateCreate(ctx, params, progress)
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

func (m *Manager) validateCreate(ctx context.Context, p api.VMCreateParams, progress Progress) (*model.VM, *model.Image, error) {
	name := p.Name
	if name == "" {
		name = generateName()
	}
	if err := model.ValidateName(name); err != nil {
		return nil, nil, api.Errorf(api.CodeBadRequest, "invalid vm name: %v", err)
	}
	vcpu, mem := p.VCPU, p.MemoryMiB
	if vcpu == 0 {
		vcpu = m.cfg.VCPU
	}
	if mem == 0 {
		mem = m.cfg.MemoryMiB
	}
	if err := validateResources(vcpu, mem); err != nil {
		return nil, nil, err
	}
	if err := api.ValidWait(p.Wait); err != nil {
		return nil, nil, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	diskStr := p.DiskSize
	if diskStr == "" {
		diskStr = m.cfg.DiskSize
	}
	disk, err := config.ParseSize(diskStr)
	if err != nil {
		return nil, nil, api.Errorf(api.CodeBadRequest, "disk size: %v", err)
	}
	if disk < 64<<20 {
		return nil, nil, api.Errorf(api.CodeBadRequest, "disk size %s is too small (minimum 64M)", diskStr)
	}
	imageRef := p.Image
	if imageRef == "" {
		imageRef = m.cfg.DefaultImage
	}
	if imageRef != "" && m.ensureImage != nil {
		// A missing image (and its kernel) is pulled; parallel creates
		// that need the same one wait for a single download.
		if imageRef, err = m.ensureImage(ctx, imageRef, progress); err != nil {
			return nil, nil, err
		}
	}
	img, err := m.resolveImage(ctx, imageRef)
	if err != nil {
		return nil, nil, err
	}
	if _, err := m.store.GetKernel(ctx, img.Kernel); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, api.Errorf(api.CodeNotFound, "image %q uses kernel %q, which is not imported", img.Name, img.Kernel)
		}
		return nil, nil, err
	}
	return &model.VM{
		ID: newID(), Name: name, Image: img.Name, Kernel: img.Kernel,
		VCPU: vcpu, MemoryMiB: mem, DiskSize: disk,
		State: model.StateCreated, AutoRemove: p.AutoRemove, NoWorkDisk: p.NoWorkDisk,
	}, img, nil
}

func validateResources(vcpu, mem int) error {
	if vcpu < 1 || vcpu > 64 {
		return api.Errorf(api.CodeBadRequest, "vcpu must be between 1 and 64, got %d", vcpu)
	}
	if mem < 128 {
		return api.Errorf(api.CodeBadRequest, "memory must be at least 128 MiB, got %d", mem)
	}
	return nil
}

func (m *Manager) resolveImage(ctx context.Context, name string) (*model.Image, error) {
	if name == "" {
		name = m.cfg.DefaultImage
	}
	if name == "" {
		imgs, err := m.store.ListImages(ctx)
		if err != nil {
			return nil, err
		}
		switch len(imgs) {
		case 0:
			return nil, api.Errorf(api.CodeNotFound, "no image available: build one with `banger image build` or register one")
		case 1:
			return imgs[0], nil
		default:
			return nil, api.Errorf(api.CodeBadRequest, "several images exist; choose one with --image or set default_image in the config")
		}
	}
	img, err := m.store.GetImage(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(api.CodeNotFound, "image %q not found", name)
	}
	return img, err
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
