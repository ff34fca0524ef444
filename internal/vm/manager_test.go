package vm

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/engine"
	"banger/internal/engine/firecracker"
	"banger/internal/engine/qemu"
	"banger/internal/guest"
	"banger/internal/model"
	"banger/internal/network"
	"banger/internal/paths"
	"banger/internal/snapshot"
	"banger/internal/store"
	"banger/internal/testreq"
)

// fakeDriver "boots" a VM by serving the real guest agent protocol on the
// spec's agent socket in-process; commands run on the test host. No VM is
// booted. Instances survive a Manager being replaced, like detached VMMs
// survive a daemon restart. It is the QEMU engine in all but Start and
// Adopt: its layout, root disk (a qcow2 overlay) and agent channel are
// QEMU's.
type fakeDriver struct {
	*qemu.Driver
	mu        sync.Mutex
	instances map[string]*fakeInstance
	failBoot  bool
	failSave  bool // SaveState fails after writing part of the state
	// serialFlood, when set, is how many bytes of console output the
	// fake VMM sends each client of the spec's serial socket.
	serialFlood int
	// readiness, when set, answers the guests' readiness operation.
	readiness func(ctx context.Context) agent.Readiness
}

type fakeInstance struct {
	ln       net.Listener
	done     chan struct{}
	once     sync.Once
	poweroff bool

	mu     sync.Mutex
	paused bool
	clocks []int64 // times the guest's clock was set to
}

func (d *fakeDriver) Pause(_ context.Context, inst engine.Instance) error {
	fi := inst.(*fakeInstance)
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.paused = true
	return nil
}

func (d *fakeDriver) Resume(_ context.Context, inst engine.Instance) error {
	fi := inst.(*fakeInstance)
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.paused = false
	return nil
}

func (d *fakeDriver) SaveState(_ context.Context, inst engine.Instance, f *os.File) error {
	fi := inst.(*fakeInstance)
	fi.mu.Lock()
	paused := fi.paused
	fi.mu.Unlock()
	if !paused {
		return errors.New("the vm must be paused")
	}
	if d.failSave {
		f.Write([]byte("half a state"))
		return errors.New("migration failed: injected")
	}
	_, err := f.Write([]byte("fake vmm state"))
	return err
}

func (d *fakeDriver) VMMVersion(context.Context, engine.Instance) (string, error) {
	return "fake-1", nil
}

func (d *fakeDriver) Paused(_ context.Context, inst engine.Instance) (bool, error) {
	fi := inst.(*fakeInstance)
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.paused, nil
}

func (i *fakeInstance) PID() int              { return os.Getpid() }
func (i *fakeInstance) Done() <-chan struct{} { return i.done }
func (i *fakeInstance) Kill(syscall.Signal) error {
	i.exit()
	return nil
}
func (i *fakeInstance) Quit(context.Context) error { i.exit(); return nil }
func (i *fakeInstance) Close() error               { return nil }
func (i *fakeInstance) exit() {
	i.once.Do(func() {
		i.ln.Close()
		close(i.done)
	})
}

func (d *fakeDriver) Start(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	ln, err := net.Listen("unix", spec.AgentSocket)
	if err != nil {
		return nil, err
	}
	inst := &fakeInstance{ln: ln, done: make(chan struct{})}
	if d.serialFlood > 0 && spec.SerialSocket != "" {
		sl, err := net.Listen("unix", spec.SerialSocket)
		if err != nil {
			return nil, err
		}
		go func() {
			<-inst.done
			sl.Close()
		}()
		go func() {
			for {
				c, err := sl.Accept()
				if err != nil {
					return
				}
				line := []byte(strings.Repeat("flood ", 1000) + "\n")
				for sent := 0; sent < d.serialFlood; sent += len(line) {
					if _, err := c.Write(line); err != nil {
						break
					}
				}
				c.Write([]byte("LAST LINE\n"))
				go func() { <-inst.done; c.Close() }()
			}
		}()
	}
	if d.failBoot {
		inst.exit()
		return inst, nil
	}
	srv := &guest.Server{Log: log.New(io.Discard, "", 0), Poweroff: func(bool) error {
		inst.poweroff = true
		go inst.exit()
		return nil
	}, Readiness: d.readiness, SetClock: func(ns int64) error {
		inst.mu.Lock()
		defer inst.mu.Unlock()
		inst.clocks = append(inst.clocks, ns)
		return nil
	}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.ServeConn(context.Background(), c)
		}
	}()
	d.mu.Lock()
	d.instances[spec.ID] = inst
	d.mu.Unlock()
	return inst, nil
}

func (d *fakeDriver) Adopt(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	inst, ok := d.instances[spec.ID]
	if !ok {
		return nil, engine.ErrNotRunning
	}
	select {
	case <-inst.done:
		return nil, engine.ErrNotRunning
	default:
	}
	return inst, nil
}

type fixture struct {
	t      *testing.T
	st     *store.Store
	layout paths.Layout
	driver *fakeDriver
	extra  []engine.Driver // registered after driver, the default
	m      *Manager
}

func newFixture(t *testing.T) *fixture {
	testreq.RequireTools(t, "scripts/quickstart.sh installs them", "qemu-img", "mkfs.ext4")
	dir := t.TempDir()
	ctx := context.Background()
	l := paths.Layout{State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config"), Runtime: filepath.Join(dir, "run")}
	st, err := store.Open(ctx, l.DB())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rootfs := filepath.Join(dir, "rootfs.ext4")
	if out, err := exec.Command("sh", "-c", "truncate -s 64M "+rootfs+" && mkfs.ext4 -q -F "+rootfs).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	st.CreateKernel(ctx, &model.Kernel{Name: "k", Vmlinux: "/nonexistent/vmlinux", Initramfs: "/nonexistent/initrd"})
	st.CreateImage(ctx, &model.Image{Name: "img", Rootfs: rootfs, Kernel: "k"})
	f := &fixture{t: t, st: st, layout: l, driver: &fakeDriver{Driver: qemu.New(""), instances: map[string]*fakeInstance{}}}
	f.m = f.newManager()
	t.Cleanup(func() {
		for _, inst := range f.driver.instances {
			inst.exit()
		}
	})
	return f
}

func (f *fixture) newManager(opts ...Option) *Manager {
	cfg := config.Default()
	cfg.DiskSize = "64M"
	cfg.BootTimeout = config.Duration{Duration: 10 * time.Second}
	cfg.StopTimeout = config.Duration{Duration: 2 * time.Second}
	accel := func(context.Context, string) (string, string, error) { return "tcg", "", nil }
	initrd := func(context.Context, *model.Kernel) (string, error) { return "/nonexistent/initrd", nil }
	engines, err := engine.NewRegistry(append([]engine.Driver{f.driver}, f.extra...)...)
	if err != nil {
		f.t.Fatal(err)
	}
	return New(f.st, f.layout, cfg, engines, accel, initrd, slog.New(slog.NewTextHandler(io.Discard, nil)), opts...)
}

// create creates a VM from image p.Image ("img" when empty), looked up
// as the daemon resolves it before it asks the manager.
func (f *fixture) create(ctx context.Context, p api.VMCreateParams, progress Progress) (*model.VM, error) {
	name := p.Image
	if name == "" {
		name = "img"
	}
	img, err := f.st.GetImage(ctx, name)
	if err != nil {
		f.t.Fatalf("fixture image %q: %v", name, err)
	}
	return f.m.Create(ctx, p, img, progress)
}

func apiCode(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// execIn runs argv in the VM through the manager and returns the exit code.
func execIn(t *testing.T, m *Manager, vm string, argv ...string) (int, string) {
	t.Helper()
	st, err := m.OpenExec(context.Background(), vm, api.ExecParams{Argv: argv, Cwd: "/"})
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	defer st.Close()
	agent.NewFrameWriter(st).Write(agent.FrameStdin, nil)
	out := ""
	for {
		typ, p, err := agent.ReadFrame(st)
		if err != nil {
			t.Fatalf("exec stream: %v", err)
		}
		switch typ {
		case agent.FrameStdout:
			out += string(p)
		case agent.FrameExit:
			var es agent.ExitStatus
			json.Unmarshal(p, &es)
			return es.Code, out
		}
	}
}

func TestCreateRejectsBadInputAndLeavesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cases := []api.VMCreateParams{
		{Name: "Bad"}, {Name: "box/../evil"}, {Name: "ok", VCPU: -1}, {Name: "ok", MemoryMiB: 64},
		{Name: "ok", DiskSize: "lots"}, {Name: "ok", DiskSize: "32M"}, {Name: "ok", Wait: "later"},
		{Name: "ok", Network: "tap"}, {Name: "ok", Network: "none", NAT: true},
	}
	for _, p := range cases {
		if err := f.m.CheckCreate(p); apiCode(err) != api.CodeBadRequest && p.Network == "" {
			t.Errorf("CheckCreate(%+v): %v", p, err)
		}
		_, err := f.create(ctx, p, nil)
		if err == nil {
			t.Errorf("%+v accepted", p)
			continue
		}
		if c := apiCode(err); c != api.CodeBadRequest && c != api.CodeNotFound {
			t.Errorf("%+v: code %q (%v)", p, c, err)
		}
	}
	// The image: none, or one whose kernel is not imported.
	if _, err := f.m.Create(ctx, api.VMCreateParams{Name: "ok"}, nil, nil); apiCode(err) != api.CodeBadRequest {
		t.Errorf("create without an image: %v", err)
	}
	orphan := &model.Image{Name: "orphan", Rootfs: "/nonexistent", Kernel: "gone"}
	if _, err := f.m.Create(ctx, api.VMCreateParams{Name: "ok"}, orphan, nil); apiCode(err) != api.CodeNotFound {
		t.Errorf("create from an image without its kernel: %v", err)
	}
	vms, _ := f.st.ListVMs(ctx)
	if len(vms) != 0 {
		t.Errorf("rows left behind: %v", vms)
	}
	if entries, _ := os.ReadDir(filepath.Join(f.layout.State, "vms")); len(entries) != 0 {
		t.Errorf("files left behind: %v", entries)
	}
}

func TestLifecycleWithFakeDriver(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var stages []string
	vm, err := f.create(ctx, api.VMCreateParams{Name: "box"}, func(p api.Progress) { stages = append(stages, p.Stage) })
	if err != nil {
		t.Fatal(err)
	}
	if vm.State != model.StateRunning || len(stages) < 3 {
		t.Fatalf("after create: %s, stages %v", vm.State, stages)
	}
	if _, err := f.create(ctx, api.VMCreateParams{Name: "box"}, nil); apiCode(err) != api.CodeAlreadyExists {
		t.Errorf("duplicate name: %v", err)
	}
	if code, out := execIn(t, f.m, "box", "sh", "-c", "echo hi; exit 42"); code != 42 || out != "hi\n" {
		t.Errorf("exec: %d %q", code, out)
	}
	if _, err := f.m.Set(ctx, "box", api.VMSetParams{VCPU: 4}); apiCode(err) != api.CodeConflict {
		t.Errorf("set while running: %v", err)
	}
	if _, err := f.m.Stop(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	if !f.driver.instances[vm.ID].poweroff {
		t.Errorf("stop did not go through the agent's poweroff")
	}
	got, _ := f.m.Get(ctx, "box")
	if got.State != model.StateStopped || got.PID != 0 {
		t.Errorf("after stop: %+v", got)
	}
	if _, err := f.m.OpenExec(ctx, "box", api.ExecParams{Argv: []string{"true"}}); apiCode(err) != api.CodeNotRunning {
		t.Errorf("exec on stopped vm: %v", err)
	}
	if _, err := f.m.Stop(ctx, "box"); apiCode(err) != api.CodeNotRunning {
		t.Errorf("stop of stopped vm: %v", err)
	}
	if _, err := f.m.Set(ctx, "box", api.VMSetParams{VCPU: 3, MemoryMiB: 256}); err != nil {
		t.Errorf("set while stopped: %v", err)
	}
	if _, err := f.m.Start(ctx, "box", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Kill(ctx, "box", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.m.Get(ctx, "box"); got.State != model.StateStopped || got.VCPU != 3 {
		t.Errorf("after kill: %+v", got)
	}
	if err := f.m.Delete(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Get(ctx, "box"); apiCode(err) != api.CodeNotFound {
		t.Errorf("after delete: %v", err)
	}
	if _, err := os.Stat(f.layout.VMDir(vm.ID)); !os.IsNotExist(err) {
		t.Errorf("vm dir left: %v", err)
	}
}

func TestPruneKeepsRunning(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create(ctx, api.VMCreateParams{Name: "running"}, nil)
	f.create(ctx, api.VMCreateParams{Name: "created", NoStart: true}, nil)
	deleted, err := f.m.Prune(ctx)
	if err != nil || len(deleted) != 1 || deleted[0] != "created" {
		t.Fatalf("prune: %v %v", deleted, err)
	}
	if v, err := f.m.Get(ctx, "running"); err != nil || v.State != model.StateRunning {
		t.Errorf("running vm: %+v %v", v, err)
	}
}

func TestGuestPoweroffIsRecordedAsStopped(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	vm, _ := f.create(ctx, api.VMCreateParams{Name: "selfstop"}, nil)
	f.driver.instances[vm.ID].exit() // the guest powers itself off
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if v, _ := f.m.Get(ctx, "selfstop"); v.State == model.StateStopped {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("state never became stopped")
}

func TestRecoverAdoptsRunningAndDropsAutoRemove(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create(ctx, api.VMCreateParams{Name: "keeper"}, nil)
	f.create(ctx, api.VMCreateParams{Name: "ephemeral", AutoRemove: true}, nil)
	gone, _ := f.create(ctx, api.VMCreateParams{Name: "gone"}, nil)
	f.m.Shutdown() // the daemon goes away; VMs keep running
	f.driver.mu.Lock()
	inst := f.driver.instances[gone.ID]
	delete(f.driver.instances, gone.ID) // this VMM died meanwhile
	f.driver.mu.Unlock()
	inst.exit()

	m2 := f.newManager()
	if err := m2.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if code, _ := execIn(t, m2, "keeper", "true"); code != 0 {
		t.Errorf("exec after recover: %d", code)
	}
	if _, err := m2.Get(ctx, "ephemeral"); apiCode(err) != api.CodeNotFound {
		t.Errorf("auto-remove vm survived a daemon restart: %v", err)
	}
	if v, _ := m2.Get(ctx, "gone"); v.State != model.StateStopped {
		t.Errorf("dead vmm: state %s", v.State)
	}
}

func TestBootFailureRecordsError(t *testing.T) {
	f := newFixture(t)
	f.driver.failBoot = true
	ctx := context.Background()
	_, err := f.create(ctx, api.VMCreateParams{Name: "doomed"}, nil)
	if err == nil {
		t.Fatal("boot failure not reported")
	}
	v, gerr := f.m.Get(ctx, "doomed")
	if gerr != nil || v.State != model.StateError || v.LastError == "" {
		t.Errorf("after failed boot: %+v %v", v, gerr)
	}
	if err := f.m.Delete(ctx, "doomed"); err != nil {
		t.Errorf("delete after failed boot: %v", err)
	}
}

func TestFirecrackerEngineCreate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	fc := &fakeFirecracker{Driver: firecracker.New("sh", ""), fake: f.driver} // sh: anything on PATH
	f.extra = []engine.Driver{fc}
	f.m = f.newManager()
	if _, err := f.create(ctx, api.VMCreateParams{Name: "fc-user", Engine: "firecracker", Network: "user"}, nil); apiCode(err) != api.CodeBadRequest {
		t.Errorf("firecracker with user networking: %v", err)
	}
	if _, err := f.create(ctx, api.VMCreateParams{Name: "xen", Engine: "xen", Network: "none"}, nil); apiCode(err) != api.CodeBadRequest {
		t.Errorf("unknown engine: %v", err)
	}
	v, err := f.create(ctx, api.VMCreateParams{Name: "fc", Engine: "firecracker", Network: "none", NoStart: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := f.m.Get(ctx, "fc")
	if got.Engine != engine.Firecracker || got.DiskClone != "sparse-copy" || len(fc.cloned) != 1 || filepath.Base(fc.cloned[0]) != "root.raw" {
		t.Errorf("firecracker vm: %+v, cloned %v", got, fc.cloned)
	}
	// This host runs guests under TCG: firecracker refuses to start.
	if _, err := f.m.Start(ctx, "fc", nil); err == nil || !strings.Contains(err.Error(), "needs a usable KVM") {
		t.Errorf("firecracker start under tcg: %v", err)
	}
	if got, _ := f.m.Get(ctx, "fc"); got.State != model.StateCreated {
		t.Errorf("after a refused start: state %s", got.State)
	}
	if _, err := f.create(ctx, api.VMCreateParams{Name: "q", NoStart: true}, nil); err != nil {
		t.Fatal(err)
	}
	if q, _ := f.m.Get(ctx, "q"); q.Engine != engine.QEMU || q.DiskClone != "qcow2-overlay" {
		t.Errorf("default engine: %+v", q)
	}
	// Rows from before engines existed are QEMU's.
	if e, err := f.m.engineFor(&model.VM{Name: "old"}); err != nil || e.Name() != engine.QEMU {
		t.Errorf("vm without an engine: %v %v", e, err)
	}
	_ = v
}

// fakeFirecracker is the Firecracker engine (traits, layout, availability)
// with a recording root disk clone and the fake VMM.
type fakeFirecracker struct {
	*firecracker.Driver
	fake   *fakeDriver
	cloned []string
}

func (d *fakeFirecracker) PrepareRootDisk(_ context.Context, _ string, dirs engine.Dirs) (string, error) {
	dst := filepath.Join(dirs.State, "root.raw")
	d.cloned = append(d.cloned, dst)
	return "sparse-copy", os.WriteFile(dst, nil, 0o600)
}

func (d *fakeFirecracker) Start(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	return d.fake.Start(ctx, spec)
}

func (d *fakeFirecracker) Adopt(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	return d.fake.Adopt(ctx, spec)
}

// A daemon that starts with no bridge-mode VM running must not touch the
// host network (no bridge, no forwarding, no rules).
func TestRecoverLeavesHostNetworkAlone(t *testing.T) {
	f := newFixture(t)
	fake := network.NewFake(network.Config{}.WithDefaults())
	f.m = f.newManager(WithNetworking(&Networking{Host: fake, Config: network.Config{}.WithDefaults()}))
	if _, err := f.create(context.Background(), api.VMCreateParams{Name: "quiet", Network: "none"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range fake.Calls() {
		if strings.HasPrefix(c, "EnsureBridge") || strings.HasPrefix(c, "SetNAT") {
			t.Errorf("host network touched: %v", fake.Calls())
		}
	}
}

// RecordWorkspace keeps every option of the prepare (mode and untracked
// files), so that --auto-prepare can repeat it; a later prepare without
// untracked files clears the flag.
func TestRecordWorkspaceKeepsOptions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.create(ctx, api.VMCreateParams{Name: "ws", NoStart: true}, nil); err != nil {
		t.Fatal(err)
	}
	p := api.WorkspaceParams{Path: "/home/u/repo", Mode: "full_copy", IncludeUntracked: true, Head: "abc"}
	if err := f.m.RecordWorkspace(ctx, "ws", p); err != nil {
		t.Fatal(err)
	}
	got, err := f.m.Get(ctx, "ws")
	if err != nil || got.WorkspacePath != p.Path || got.WorkspaceMode != p.Mode || !got.WorkspaceIncludeUntracked || got.WorkspaceHead != "abc" {
		t.Fatalf("after prepare with untracked files: %+v %v", got, err)
	}
	p.IncludeUntracked, p.Mode = false, "copy"
	if err := f.m.RecordWorkspace(ctx, "ws", p); err != nil {
		t.Fatal(err)
	}
	if got, err := f.m.Get(ctx, "ws"); err != nil || got.WorkspaceIncludeUntracked || got.WorkspaceMode != "copy" {
		t.Errorf("after prepare without: %+v %v", got, err)
	}
	if err := f.m.RecordWorkspace(ctx, "nosuch", p); err == nil {
		t.Error("recorded a workspace for a missing vm")
	}
}

func TestPauseResume(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v, err := f.create(ctx, api.VMCreateParams{Name: "sleepy"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.Resume(ctx, "sleepy"); err != nil {
		t.Fatalf("resume of a running vm is a no-op, got %v", err)
	}
	p, err := f.m.Pause(ctx, "sleepy")
	if err != nil || p.State != model.StatePaused {
		t.Fatalf("pause: %v %v", p, err)
	}
	if _, err := f.m.Pause(ctx, "sleepy"); err != nil {
		t.Fatalf("pause of a paused vm is a no-op, got %v", err)
	}
	// Everything that needs the guest is refused with a pointer to resume.
	_, err = f.m.OpenExec(ctx, "sleepy", api.ExecParams{Argv: []string{"true"}})
	if apiCode(err) != api.CodeConflict || !strings.Contains(err.Error(), "banger vm resume sleepy") {
		t.Fatalf("exec on a paused vm: %v", err)
	}
	if _, err := f.m.FileAgent(ctx, "sleepy"); err == nil || !strings.Contains(err.Error(), "vm resume") {
		t.Fatalf("files on a paused vm: %v", err)
	}
	if _, err := f.m.Start(ctx, "sleepy", nil); err == nil {
		t.Fatal("start of a paused vm succeeded")
	}

	// A daemon restart keeps it paused and adopted.
	f.m.Shutdown()
	f.m = f.newManager()
	if err := f.m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.m.Get(ctx, "sleepy"); got.State != model.StatePaused {
		t.Fatalf("after recover: state %s", got.State)
	}
	before := time.Now().UnixNano()
	r, err := f.m.Resume(ctx, "sleepy")
	if err != nil || r.State != model.StateRunning {
		t.Fatalf("resume: %v %v", r, err)
	}
	inst := f.driver.instances[v.ID]
	inst.mu.Lock()
	clocks := slices.Clone(inst.clocks)
	inst.mu.Unlock()
	if len(clocks) != 1 || clocks[0] < before {
		t.Fatalf("guest clock set to %v, want one time after %d", clocks, before)
	}
	if code, _ := execIn(t, f.m, "sleepy", "true"); code != 0 {
		t.Fatalf("exec after resume: %d", code)
	}
	if _, err := f.m.Resume(ctx, "nosuch"); apiCode(err) != api.CodeNotFound {
		t.Fatalf("resume of a missing vm: %v", err)
	}
	// A paused VM can be stopped (it is continued first) and killed.
	f.m.Pause(ctx, "sleepy")
	if s, err := f.m.Stop(ctx, "sleepy"); err != nil || s.State != model.StateStopped {
		t.Fatalf("stop of a paused vm: %v %v", s, err)
	}
	if _, err := f.m.Pause(ctx, "sleepy"); apiCode(err) != api.CodeNotRunning {
		t.Fatalf("pause of a stopped vm: %v", err)
	}
}

func TestSnapshotCreateListDelete(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	v, err := f.create(ctx, api.VMCreateParams{Name: "src"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	snapDirs := func() []string {
		entries, _ := os.ReadDir(filepath.Join(f.layout.State, "snapshots"))
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	// Bad input and failures leave no row, no directory, and the VM running.
	for _, p := range []api.SnapshotCreateParams{
		{VM: "src", Name: "Bad_Name"},
		{VM: "nosuch", Name: "ok"},
	} {
		if _, err := f.m.CreateSnapshot(ctx, p); err == nil {
			t.Errorf("snapshot %+v accepted", p)
		}
	}
	f.driver.failSave = true
	if _, err := f.m.CreateSnapshot(ctx, api.SnapshotCreateParams{VM: "src", Name: "broken"}); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("failed save: %v", err)
	}
	f.driver.failSave = false
	if list, _ := f.m.Snapshots(ctx); len(list) != 0 || len(snapDirs()) != 0 {
		t.Fatalf("failed snapshots left %v and dirs %v", list, snapDirs())
	}
	if got, _ := f.m.Get(ctx, "src"); got.State != model.StateRunning {
		t.Fatalf("vm after a failed snapshot: %s", got.State)
	}

	sn, err := f.m.CreateSnapshot(ctx, api.SnapshotCreateParams{VM: "src", Name: "warm"})
	if err != nil {
		t.Fatal(err)
	}
	if sn.Engine != "qemu" || sn.VMMVersion != "fake-1" || sn.VMID != v.ID || sn.StateBytes != int64(len("fake vmm state")) || sn.MemoryMiB != v.MemoryMiB {
		t.Fatalf("snapshot %+v", sn)
	}
	dir := f.layout.SnapshotDir(sn.ID)
	meta, err := snapshot.ReadMeta(dir)
	if err != nil || meta.Name != "warm" {
		t.Fatalf("metadata: %+v %v", meta, err)
	}
	for _, name := range []string{snapshot.StateFile, snapshot.RootDisk, snapshot.WorkDisk} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("snapshot file %s: %v", name, err)
		}
	}
	if got, _ := f.m.Get(ctx, "src"); got.State != model.StateRunning {
		t.Fatalf("vm after snapshot: %s", got.State)
	}
	if code, _ := execIn(t, f.m, "src", "true"); code != 0 {
		t.Fatalf("exec after snapshot: %d", code)
	}
	if _, err := f.m.CreateSnapshot(ctx, api.SnapshotCreateParams{VM: "src", Name: "warm"}); apiCode(err) != api.CodeAlreadyExists {
		t.Fatalf("duplicate name: %v", err)
	}
	kept, err := f.m.CreateSnapshot(ctx, api.SnapshotCreateParams{VM: "src", KeepPaused: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(kept.Name, "src-") {
		t.Errorf("default name %q", kept.Name)
	}
	if got, _ := f.m.Get(ctx, "src"); got.State != model.StatePaused {
		t.Fatalf("vm after --keep-paused: %s", got.State)
	}
	if list, _ := f.m.Snapshots(ctx); len(list) != 2 {
		t.Fatalf("list: %v", list)
	}
	if err := f.m.DeleteSnapshot(ctx, "warm"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("snapshot dir after delete: %v", err)
	}
	if _, err := f.m.GetSnapshot(ctx, "warm"); apiCode(err) != api.CodeNotFound {
		t.Fatalf("get after delete: %v", err)
	}
}
