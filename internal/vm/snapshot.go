package vm

// Snapshots: a VM's memory and device state and frozen copies of its
// disks, taken while the VM is paused.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"banger/internal/api"
	"banger/internal/fsutil"
	"banger/internal/model"
	"banger/internal/snapshot"
	"banger/internal/store"
)

// CreateSnapshot saves the running or paused VM p.VM: it is paused, its
// VMM writes its state into the snapshot's directory, its disks (flushed
// and inactive after the save) are copied there, and then it runs on
// unless it was paused or p.KeepPaused. On any error nothing of the
// snapshot is left and a VM that was running runs again.
func (m *Manager) CreateSnapshot(ctx context.Context, p api.SnapshotCreateParams) (*model.Snapshot, error) {
	if p.Name != "" {
		if err := model.ValidateName(p.Name); err != nil {
			return nil, api.Errorf(api.CodeBadRequest, "snapshot name: %v", err)
		}
		if _, err := m.store.GetSnapshot(ctx, p.Name); err == nil {
			return nil, api.Errorf(api.CodeAlreadyExists, "snapshot %q already exists", p.Name)
		}
	}
	var sn *model.Snapshot
	_, err := m.locked(ctx, p.VM, func(vm *model.VM) error {
		var err error
		sn, err = m.snapshotLocked(ctx, vm, p)
		return err
	})
	if err != nil {
		return nil, err
	}
	return sn, nil
}

func (m *Manager) snapshotLocked(ctx context.Context, vm *model.VM, p api.SnapshotCreateParams) (_ *model.Snapshot, err error) {
	rt := m.runtimeOf(vm.ID)
	if rt == nil || (vm.State != model.StateRunning && vm.State != model.StatePaused) {
		return nil, api.Errorf(api.CodeNotRunning, "vm %q is not running (state %s)", vm.Name, vm.State)
	}
	if rt.eng.Snapshotter == nil || rt.eng.Pauser == nil {
		return nil, api.Errorf(api.CodeBadRequest, "engine %q cannot take snapshots", rt.eng.Name())
	}
	name := p.Name
	if name == "" {
		name = snapshotName(vm.Name)
	}
	sn := &model.Snapshot{
		ID: newID(), Name: name, VMID: vm.ID, VMName: vm.Name, Engine: rt.eng.Name(),
		Kernel: vm.Kernel, Image: vm.Image, VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB,
		DiskSize: vm.DiskSize, NoWorkDisk: vm.NoWorkDisk,
	}
	if sn.VMMVersion, err = rt.eng.Snapshotter.VMMVersion(ctx, rt.inst); err != nil {
		return nil, fmt.Errorf("snapshot vm %q: %w", vm.Name, err)
	}
	dir := m.layout.SnapshotDir(sn.ID)
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	wasRunning := vm.State == model.StateRunning
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
			if wasRunning {
				if rerr := m.resumeLocked(context.WithoutCancel(ctx), vm, rt); rerr != nil {
					m.log.Error("resume after a failed snapshot", "vm", vm.Name, "err", rerr)
					vm.State = model.StatePaused
					m.store.UpdateVM(context.WithoutCancel(ctx), vm)
				}
			}
			err = fmt.Errorf("snapshot vm %q: %w", vm.Name, err)
		}
	}()

	start := time.Now()
	if wasRunning {
		if err := rt.eng.Pauser.Pause(ctx, rt.inst); err != nil {
			return nil, err
		}
	}
	if sn.StateBytes, err = m.saveState(ctx, rt, filepath.Join(dir, snapshot.StateFile)); err != nil {
		return nil, err
	}
	// The VMM flushed its disks and let go of them: copy them as they are.
	disks := []struct{ src, dst string }{{rt.spec.RootDisk, snapshot.RootDisk}}
	if rt.spec.WorkDisk != "" {
		disks = append(disks, struct{ src, dst string }{rt.spec.WorkDisk, snapshot.WorkDisk})
	}
	for _, d := range disks {
		if err := fsutil.CopySparse(filepath.Join(dir, d.dst), d.src); err != nil {
			return nil, fmt.Errorf("copy disk: %w", err)
		}
		sn.DiskBytes += allocated(filepath.Join(dir, d.dst))
	}
	// How long the VM stood still for the snapshot (state and disks).
	sn.SaveMS = time.Since(start).Milliseconds()
	if err := snapshot.WriteMeta(dir, sn); err != nil {
		return nil, err
	}
	if err := m.store.CreateSnapshot(context.WithoutCancel(ctx), sn); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, api.Errorf(api.CodeAlreadyExists, "snapshot %q already exists", sn.Name)
		}
		return nil, err
	}
	// From here the snapshot exists: what follows only concerns the VM.
	if wasRunning && !p.KeepPaused {
		if rerr := m.resumeLocked(context.WithoutCancel(ctx), vm, rt); rerr != nil {
			// The snapshot is good; the VM stands still and says so.
			m.log.Error("resume after a snapshot", "vm", vm.Name, "err", rerr)
			vm.State = model.StatePaused
			m.store.UpdateVM(context.WithoutCancel(ctx), vm)
			m.changed()
			return sn, nil
		}
		m.setClock(ctx, vm, rt)
	} else {
		if vm.State != model.StatePaused {
			vm.State = model.StatePaused
			m.store.UpdateVM(context.WithoutCancel(ctx), vm)
			m.changed()
		}
	}
	m.log.Info("snapshot taken", "vm", vm.Name, "snapshot", sn.Name, "state_bytes", sn.StateBytes, "disk_bytes", sn.DiskBytes, "paused_ms", sn.SaveMS)
	return sn, nil
}

// saveState has the engine write rt's state into a new file at path.
func (m *Manager) saveState(ctx context.Context, rt *runtime, path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := rt.eng.Snapshotter.SaveState(ctx, rt.inst, f); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// allocated is the space a file takes on disk (0 if it cannot be read).
func allocated(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st, ok := sysStat(fi); ok {
		return st
	}
	return fi.Size()
}

// snapshotName is a default snapshot name for a VM: its name and a random
// suffix, cut to a valid name.
func snapshotName(vm string) string {
	suffix := "-" + newID()[:8]
	if len(vm)+len(suffix) > model.MaxNameLen {
		vm = vm[:model.MaxNameLen-len(suffix)]
	}
	return vm + suffix
}

// Snapshots lists every snapshot.
func (m *Manager) Snapshots(ctx context.Context) ([]*model.Snapshot, error) {
	return m.store.ListSnapshots(ctx)
}

// GetSnapshot returns a snapshot by name or id.
func (m *Manager) GetSnapshot(ctx context.Context, ref string) (*model.Snapshot, error) {
	sn, err := m.store.GetSnapshot(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(api.CodeNotFound, "snapshot %q not found", ref)
	}
	return sn, err
}

// DeleteSnapshot removes a snapshot's row and files.
func (m *Manager) DeleteSnapshot(ctx context.Context, ref string) error {
	sn, err := m.GetSnapshot(ctx, ref)
	if err != nil {
		return err
	}
	if err := m.store.DeleteSnapshot(ctx, sn.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("delete snapshot %q: %w", sn.Name, err)
	}
	if err := os.RemoveAll(m.layout.SnapshotDir(sn.ID)); err != nil {
		return fmt.Errorf("delete snapshot %q: %w", sn.Name, err)
	}
	m.log.Info("snapshot deleted", "snapshot", sn.Name, "id", sn.ID)
	return nil
}
