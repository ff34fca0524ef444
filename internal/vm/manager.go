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
	"log/slog"
	"sync"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/engine"
	"banger/internal/model"
	"banger/internal/paths"
	"banger/internal/store"
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
	// engines run the VMs; a VM's engine is fixed at create.
	engines *engine.Registry
	log     *slog.Logger
	accel   AccelResolver
	initrd  InitrdFunc

	net   *Networking
	netst netState

	mu      sync.Mutex
	locks   map[string]*sync.Mutex // per VM ID, serialises lifecycle operations
	running map[string]*runtime    // per VM ID

	// exportCmd, when set, replaces the export command (tests).
	exportCmd func(base string) []string
	// uploadIdle, when set, replaces agent.UploadIdle (tests).
	uploadIdle time.Duration
	// testSSHGrace, when set, replaces defaultSSHGrace (tests).
	testSSHGrace time.Duration
}

type runtime struct {
	eng  *engine.Engine
	inst engine.Instance
	spec engine.Spec // as the engine laid it out

	closed     chan struct{} // closed by forget: stop monitoring
	closeOnce  sync.Once
	mu         sync.Mutex
	agent      *agent.Client
	expectExit bool // a stop/kill/delete is under way; the monitor leaves the row alone
}

// Option configures a Manager at construction (see New).
type Option func(*Manager)

// WithNetworking enables VM networking (DNS names, bridge taps, NAT,
// published ports). Without it VMs get user-mode or no networking only.
func WithNetworking(n *Networking) Option { return func(m *Manager) { m.net = n } }

// New makes a Manager that runs VMs with the engines registered in
// engines. What every manager needs is a parameter; what is
// optional (networking) comes as an Option, so nothing is set on a
// Manager after it is made.
func New(st *store.Store, layout paths.Layout, cfg config.Config, engines *engine.Registry, accel AccelResolver, initrd InitrdFunc, log *slog.Logger, opts ...Option) *Manager {
	m := &Manager{
		store: st, layout: layout, cfg: cfg, engines: engines, accel: accel, initrd: initrd, log: log,
		locks:   map[string]*sync.Mutex{},
		running: map[string]*runtime{},
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

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

func (m *Manager) requireRunning(vm *model.VM) (*runtime, error) {
	rt := m.runtimeOf(vm.ID)
	if rt != nil && vm.State == model.StatePaused {
		return nil, api.Errorf(api.CodeConflict, "vm %q is paused: run `banger vm resume %s` first", vm.Name, vm.Name)
	}
	if rt == nil || vm.State != model.StateRunning {
		return nil, api.Errorf(api.CodeNotRunning, "vm %q is not running (state %s)", vm.Name, vm.State)
	}
	return rt, nil
}

// lockedLive is locked for operations on a VM whose VMM runs, paused or
// not (stop, kill).
func (m *Manager) lockedLive(ctx context.Context, ref string, f func(vm *model.VM, rt *runtime) error) (*model.VM, error) {
	return m.locked(ctx, ref, func(vm *model.VM) error {
		rt := m.runtimeOf(vm.ID)
		if rt == nil || (vm.State != model.StateRunning && vm.State != model.StatePaused) {
			return api.Errorf(api.CodeNotRunning, "vm %q is not running (state %s)", vm.Name, vm.State)
		}
		return f(vm, rt)
	})
}

// defaultSerialMax applies when the config sets no serial_log_max_mib.
const defaultSerialMax = 8 << 20

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
