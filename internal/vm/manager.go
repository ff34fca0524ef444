// Package vm orchestrates the VM lifecycle: create, start, stop, kill,
// delete, exec. It owns the mapping from store rows to running VMM
// processes and guest agent connections, and it is the only place that
// changes a VM's state.
package vm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/engine"
	"banger/internal/hosttools"
	"banger/internal/model"
	"banger/internal/paths"
	"banger/internal/seriallog"
	"banger/internal/store"
	"banger/internal/workspace"
)

// Progress receives named stages with their durations.
type Progress func(p api.Progress)

// AccelResolver turns the configured accelerator into "kvm" or "tcg" for a
// given kernel, with an optional one-line warning (e.g. a TCG fallback).
type AccelResolver func(ctx context.Context, kernel string) (accel, warning string, err error)

// InitrdFunc returns the initramfs to boot a kernel with.
type InitrdFunc func(ctx context.Context, k *model.Kernel) (string, error)

// Manager runs VMs. Create one with New and call Recover once at daemon
// start.
type Manager struct {
	store  *store.Store
	layout paths.Layout
	cfg    config.Config
	driver engine.Driver // QEMU, the default engine
	// drivers holds further engines by name; cloneDisk makes their raw
	// root disks.
	drivers   map[string]engine.Driver
	cloneDisk diskCloner
	log       *slog.Logger
	accel     AccelResolver
	initrd    InitrdFunc

	net   *Networking
	netst netState

	mu      sync.Mutex
	locks   map[string]*sync.Mutex // per VM ID, serialises lifecycle operations
	running map[string]*runtime    // per VM ID

	ensureImage ImageEnsurer

	// exportCmd, when set, replaces the export command (tests).
	exportCmd func(base string) []string
	// testSSHGrace, when set, replaces defaultSSHGrace (tests).
	testSSHGrace time.Duration
}

type runtime struct {
	inst engine.Instance
	spec engine.Spec

	closed     chan struct{} // closed by forget: stop monitoring
	closeOnce  sync.Once
	mu         sync.Mutex
	agent      *agent.Client
	expectExit bool // a stop/kill/delete is under way; the monitor leaves the row alone
}

// New makes a Manager.
func New(st *store.Store, layout paths.Layout, cfg config.Config, driver engine.Driver, accel AccelResolver, initrd InitrdFunc, log *slog.Logger) *Manager {
	return &Manager{
		store: st, layout: layout, cfg: cfg, driver: driver, accel: accel, initrd: initrd, log: log,
		locks:   map[string]*sync.Mutex{},
		running: map[string]*runtime{},
	}
}

// ImageEnsurer installs a missing image (and its kernel) by pulling it,
// returning the name it is registered under.
type ImageEnsurer func(ctx context.Context, ref string, progress func(api.Progress)) (string, error)

// SetImageEnsurer makes create pull missing images (call before serving).
func (m *Manager) SetImageEnsurer(f ImageEnsurer) { m.ensureImage = f }

// SetNetworking enables VM networking (call before Recover).
func (m *Manager) SetNetworking(n *Networking) { m.net = n }

func (m *Manager) changed() {
	if m.net != nil && m.net.Changed != nil {
		m.net.Changed()
	}
}

func (m *Manager) lock(id string) func() {
	m.mu.Lock()
	l, ok := m.locks[id]
	if !ok {
		l = &sync.Mutex{}
		m.locks[id] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (m *Manager) runtimeOf(id string) *runtime {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running[id]
}

// Get returns a VM by name or ID.
func (m *Manager) Get(ctx context.Context, ref string) (*model.VM, error) {
	vm, err := m.store.GetVM(ctx, ref)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(api.CodeNotFound, "vm %q not found", ref)
	}
	return vm, err
}

// List returns every VM.
func (m *Manager) List(ctx context.Context) ([]*model.VM, error) { return m.store.ListVMs(ctx) }

func step(p Progress, stage string, f func() error) error {
	start := time.Now()
	err := f()
	if err == nil && p != nil {
		p(api.Progress{Stage: stage, DurationMS: time.Since(start).Milliseconds()})
	}
	return err
}

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
	if vm.Engine, err = m.resolveEngine(params.Engine, vm.Network); err != nil {
		return nil, err
	}
	if err := m.insert(ctx, vm); err != nil {
		return nil, err
	}
	unlock := m.lock(vm.ID)
	err = step(progress, "prepare_disks", func() error { return m.makeDisks(ctx, vm, img) })
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

// makeDisks creates the copy-on-write root disk over the image and the
// VM's own work disk.
func (m *Manager) makeDisks(ctx context.Context, vm *model.VM, img *model.Image) error {
	dir := m.layout.VMDir(vm.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	root := m.rootDiskPath(vm)
	if engineOf(vm) == EngineFirecracker {
		method, err := m.cloneDisk(img.Rootfs, root)
		if err != nil {
			return fmt.Errorf("clone root disk: %w", err)
		}
		vm.DiskClone = method
	} else {
		if _, err := hosttools.Run(ctx, hosttools.QEMUImg, "create", "-q", "-f", "qcow2",
			"-b", img.Rootfs, "-F", "raw", root); err != nil {
			return fmt.Errorf("create root overlay: %w", err)
		}
		vm.DiskClone = "qcow2-overlay"
	}
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

// Start boots a created or stopped VM and waits for its guest agent.
func (m *Manager) Start(ctx context.Context, ref string, progress Progress) (*model.VM, error) {
	return m.locked(ctx, ref, func(vm *model.VM) error { return m.startLocked(ctx, vm, progress) })
}

// locked runs f on the VM that ref names while holding the VM's lock, on a
// copy read after the lock was taken.
func (m *Manager) locked(ctx context.Context, ref string, f func(vm *model.VM) error) (*model.VM, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	defer m.lock(vm.ID)()
	if vm, err = m.Get(ctx, vm.ID); err != nil {
		return nil, err
	}
	return vm, f(vm)
}

// lockedRunning is locked for operations that need the VM running.
func (m *Manager) lockedRunning(ctx context.Context, ref string, f func(vm *model.VM, rt *runtime) error) (*model.VM, error) {
	return m.locked(ctx, ref, func(vm *model.VM) error {
		rt, err := m.requireRunning(vm)
		if err != nil {
			return err
		}
		return f(vm, rt)
	})
}

func (m *Manager) spec(vm *model.VM, k *model.Kernel, initrd, accel string) engine.Spec {
	dir, run := m.layout.VMDir(vm.ID), m.layout.VMRunDir(vm.ID)
	s := engine.Spec{
		ID: vm.ID, Name: vm.Name, VCPU: vm.VCPU, MemoryMiB: vm.MemoryMiB,
		Kernel: k.Vmlinux, Initramfs: initrd,
		Cmdline:       bootCmdline(vm, accel),
		RootDisk:      m.rootDiskPath(vm),
		WorkDisk:      filepath.Join(dir, "work.ext4"),
		SerialLog:     filepath.Join(dir, "serial.log"),
		SerialSocket:  filepath.Join(run, "serial.sock"),
		VMMLog:        filepath.Join(dir, "vmm.log"),
		AgentSocket:   filepath.Join(run, "agent.sock"),
		AgentPortName: agent.PortName,
		QMPSocket:     filepath.Join(run, "qmp.sock"),
		PIDFile:       filepath.Join(run, "qemu.pid"),
		Accel:         accel,
		Balloon:       m.cfg.Balloon,
	}
	if vm.NoWorkDisk {
		s.WorkDisk = ""
	}
	return s
}

// specFor is spec adjusted for the VM's engine.
func (m *Manager) specFor(vm *model.VM, k *model.Kernel, initrd, accel string) engine.Spec {
	s := m.spec(vm, k, initrd, accel)
	m.adjustSpec(vm, &s)
	return s
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
	vm.State, vm.Accel, vm.LastError = model.StateStarting, accel, ""
	if err := m.store.UpdateVM(ctx, vm); err != nil {
		return err
	}
	initrd, err := m.initrd(ctx, k)
	if err != nil {
		return fmt.Errorf("start vm %q: %w", vm.Name, err)
	}
	spec := m.specFor(vm, k, initrd, accel)
	if engineOf(vm) == EngineFirecracker && accel != "kvm" {
		return fmt.Errorf("start vm %q: firecracker needs a usable KVM (this host runs guests under %s); recreate it with --engine qemu", vm.Name, accel)
	}
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
		d, err := m.driverFor(vm)
		if err != nil {
			return err
		}
		inst, err = d.Start(ctx, spec)
		return err
	}); err != nil {
		return err
	}
	rt := &runtime{inst: inst, spec: spec, closed: make(chan struct{})}
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
		var c *agent.Client
		if spec.VsockSocket != "" {
			c, resp, err = agent.WaitReadyVsock(bctx, spec.VsockSocket, agent.VsockPort)
		} else {
			c, resp, err = agent.WaitReady(bctx, spec.AgentSocket)
		}
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

func (m *Manager) requireRunning(vm *model.VM) (*runtime, error) {
	rt := m.runtimeOf(vm.ID)
	if rt == nil || vm.State != model.StateRunning {
		return nil, api.Errorf(api.CodeNotRunning, "vm %q is not running (state %s)", vm.Name, vm.State)
	}
	return rt, nil
}

// Stop shuts a running VM down gracefully: the agent syncs the disks and
// asks the guest's init to power off. A guest that does not go within the
// stop timeout is powered off by the agent directly, then killed.
func (m *Manager) Stop(ctx context.Context, ref string) (*model.VM, error) {
	return m.lockedRunning(ctx, ref, func(vm *model.VM, rt *runtime) error { return m.stopLocked(ctx, vm, rt) })
}

func (m *Manager) stopLocked(ctx context.Context, vm *model.VM, rt *runtime) error {
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
		ctrlAltDel(ctx, rt.inst)
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
	return m.lockedRunning(ctx, ref, func(vm *model.VM, rt *runtime) error { return m.killLocked(ctx, vm, rt, sig) })
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
		if rt := m.runtimeOf(vm.ID); rt != nil && vm.State == model.StateRunning {
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
	return s == model.StateRunning || s == model.StateStarting || s == model.StateStopping
}

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

// agentClient returns the runtime's agent connection, dialing a new one
// when there is none (e.g. after a daemon restart).
func (m *Manager) agentClient(ctx context.Context, rt *runtime, timeout time.Duration) (*agent.Client, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.agent != nil && !rt.agent.Closed() {
		return rt.agent, nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var c *agent.Client
	var err error
	if rt.spec.VsockSocket != "" {
		c, _, err = agent.WaitReadyVsock(wctx, rt.spec.VsockSocket, agent.VsockPort)
	} else {
		c, _, err = agent.WaitReady(wctx, rt.spec.AgentSocket)
	}
	if err != nil {
		return nil, err
	}
	rt.agent = c
	return c, nil
}

// OpenExec starts a command in a running VM and returns the stream that
// speaks the exec frame protocol.
func (m *Manager) OpenExec(ctx context.Context, ref string, p api.ExecParams) (net.Conn, error) {
	if len(p.Argv) == 0 {
		return nil, api.Errorf(api.CodeBadRequest, "no command given")
	}
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	rt, err := m.requireRunning(vm)
	if err != nil {
		return nil, err
	}
	if p.Cwd == "" && vm.WorkspacePath != "" {
		p.Cwd = workspace.GuestDir
	}
	c, err := m.agentClient(ctx, rt, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("vm %q: guest agent unreachable: %w", vm.Name, err)
	}
	st, err := c.Open(ctx, agent.Request{Op: agent.OpExec, Exec: &agent.ExecRequest{
		Argv: p.Argv, Env: p.Env, Cwd: p.Cwd, TTY: p.TTY, Rows: p.Rows, Cols: p.Cols, Term: p.Term,
	}})
	if err != nil {
		rt.mu.Lock()
		if rt.agent == c {
			c.Close()
			rt.agent = nil
		}
		rt.mu.Unlock()
		return nil, fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	return st, nil
}

// Logs returns the VM's serial console output (at most serial_log_max_mib,
// oldest first) as a stream the caller closes.
func (m *Manager) Logs(ctx context.Context, ref string) (io.ReadCloser, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	return seriallog.Open(filepath.Join(m.layout.VMDir(vm.ID), "serial.log"))
}

// defaultSerialMax applies when the config sets no serial_log_max_mib.
const defaultSerialMax = 8 << 20

// followSerial keeps the VM's serial console, served by the VMM on
// rt.spec.SerialSocket, in its size-capped log until the VM exits or the
// daemon lets go of it (a restarted daemon reconnects in Recover).
func (m *Manager) followSerial(vm *model.VM, rt *runtime) {
	if rt.spec.SerialSocket == "" || rt.spec.SerialLog == "" {
		return
	}
	max := int64(defaultSerialMax)
	if m.cfg.SerialLogMaxMiB > 0 {
		max = int64(m.cfg.SerialLogMaxMiB) << 20
	}
	w, err := seriallog.OpenWriter(rt.spec.SerialLog, max)
	if err != nil {
		m.log.Warn("serial log", "vm", vm.Name, "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-rt.closed:
		case <-rt.inst.Done():
			// The console's last bytes (a panic) are still in flight.
			time.Sleep(time.Second)
		}
		cancel()
	}()
	go func() {
		seriallog.Follow(ctx, rt.spec.SerialSocket, w, time.Second)
		w.Close()
	}()
}

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
		spec := m.specFor(vm, k, k.Initramfs, vm.Accel)
		d, err := m.driverFor(vm)
		if err != nil {
			m.markGone(ctx, vm, err.Error())
			continue
		}
		inst, err := d.Adopt(ctx, spec)
		if err != nil {
			m.markGone(ctx, vm, err.Error())
			continue
		}
		rt := &runtime{inst: inst, spec: spec, closed: make(chan struct{})}
		m.mu.Lock()
		m.running[vm.ID] = rt
		m.mu.Unlock()
		m.followSerial(vm, rt)
		if vm.State != model.StateRunning {
			vm.State = model.StateRunning
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
			d, derr := m.driverFor(vm)
			if derr != nil {
				d = m.driver
			}
			if inst, err := d.Adopt(ctx, m.specFor(vm, k, k.Initramfs, vm.Accel)); err == nil {
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

// Shutdown drops agent and QMP connections without touching the VMs,
// which keep running for the next daemon.
func (m *Manager) Shutdown() {
	m.netst.mu.Lock()
	for id, f := range m.netst.forwarders {
		f.Close()
		delete(m.netst.forwarders, id)
	}
	m.netst.mu.Unlock()
	m.mu.Lock()
	rts := m.running
	m.running = map[string]*runtime{}
	m.mu.Unlock()
	for _, rt := range rts {
		rt.mu.Lock()
		rt.expectExit = true
		if rt.agent != nil {
			rt.agent.Close()
		}
		rt.mu.Unlock()
		rt.closeOnce.Do(func() { close(rt.closed) })
		rt.inst.Close()
	}
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
