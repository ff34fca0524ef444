package vm_test

// A third engine, added in this one file without touching the vm package:
// the proof that the engine seam is whole. The fake engine lays out its
// own files, makes its own root disk, carries the agent over in-memory
// pipes (no socket at all) and "runs" the guest agent in-process; the real
// vm.Manager drives it through create, exec, wait, stop, start, recover
// and delete.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/engine"
	"banger/internal/guest"
	"banger/internal/model"
	"banger/internal/paths"
	"banger/internal/store"
	"banger/internal/vm"
)

// pipeEngine is an engine.Driver whose guests are in-process agents
// reached over net.Pipe, with the Cleaner capability.
type pipeEngine struct {
	mu      sync.Mutex
	running map[string]*pipeVMM // by VM id; survives a Manager, like a detached VMM
	disks   []string
	cleaned []engine.Spec
}

type pipeVMM struct {
	spec     engine.Spec
	srv      *guest.Server
	done     chan struct{}
	once     sync.Once
	poweroff bool
}

func (v *pipeVMM) PID() int                   { return os.Getpid() }
func (v *pipeVMM) Done() <-chan struct{}      { return v.done }
func (v *pipeVMM) Kill(syscall.Signal) error  { v.exit(); return nil }
func (v *pipeVMM) Quit(context.Context) error { v.exit(); return nil }
func (v *pipeVMM) Close() error               { return nil }
func (v *pipeVMM) exit()                      { v.once.Do(func() { close(v.done) }) }

func (e *pipeEngine) Name() string          { return "pipe" }
func (e *pipeEngine) Traits() engine.Traits { return engine.Traits{} }

func (e *pipeEngine) Layout(spec engine.Spec, dirs engine.Dirs) engine.Spec {
	spec.RootDisk = filepath.Join(dirs.State, "pipe.img")
	spec.QMPSocket = filepath.Join(dirs.Run, "pipe.ctl")
	spec.PIDFile = filepath.Join(dirs.Run, "pipe.pid")
	spec.AgentSocket, spec.SerialSocket, spec.VsockSocket = "", "", ""
	return spec
}

func (e *pipeEngine) PrepareRootDisk(_ context.Context, image string, dirs engine.Dirs) (string, error) {
	b, err := os.ReadFile(image)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dirs.State, "pipe.img")
	e.mu.Lock()
	e.disks = append(e.disks, dst)
	e.mu.Unlock()
	return "pipe-copy", os.WriteFile(dst, b, 0o600)
}

func (e *pipeEngine) DialAgent(ctx context.Context, spec engine.Spec) (net.Conn, error) {
	e.mu.Lock()
	v := e.running[spec.ID]
	e.mu.Unlock()
	if v == nil {
		return nil, errors.New("vmm not running")
	}
	select {
	case <-v.done:
		return nil, errors.New("vmm exited")
	default:
	}
	host, guestEnd := net.Pipe()
	go v.srv.ServeConn(context.Background(), guestEnd)
	return host, nil
}

func (e *pipeEngine) Start(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	if spec.RootDisk == "" || spec.Kernel == "" || spec.PIDFile == "" {
		return nil, errors.New("spec not laid out")
	}
	if _, err := os.Stat(spec.RootDisk); err != nil {
		return nil, err
	}
	v := &pipeVMM{spec: spec, done: make(chan struct{})}
	v.srv = &guest.Server{Log: log.New(io.Discard, "", 0), Poweroff: func(bool) error {
		v.poweroff = true
		go v.exit()
		return nil
	}, Readiness: func(context.Context) agent.Readiness { return agent.Readiness{} }}
	e.mu.Lock()
	e.running[spec.ID] = v
	e.mu.Unlock()
	return v, nil
}

func (e *pipeEngine) Adopt(ctx context.Context, spec engine.Spec) (engine.Instance, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.running[spec.ID]
	if v == nil || v.spec.PIDFile != spec.PIDFile {
		return nil, engine.ErrNotRunning
	}
	select {
	case <-v.done:
		return nil, engine.ErrNotRunning
	default:
	}
	return v, nil
}

// Cleanup makes pipeEngine an engine.Cleaner.
func (e *pipeEngine) Cleanup(spec engine.Spec) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cleaned = append(e.cleaned, spec)
	return nil
}

func TestFakeEngineThroughManager(t *testing.T) {
	for _, v := range []string{"BANGER_ENGINE", "BANGER_CONFIG", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"} {
		t.Setenv(v, "")
	}
	dir := t.TempDir()
	ctx := context.Background()
	l := paths.Layout{State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config"), Runtime: filepath.Join(dir, "run")}
	st, err := store.Open(ctx, l.DB())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rootfs := filepath.Join(dir, "rootfs.img")
	if err := os.WriteFile(rootfs, []byte("an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	st.CreateKernel(ctx, &model.Kernel{Name: "k", Vmlinux: "/nonexistent/vmlinux", Initramfs: "/nonexistent/initrd"})
	st.CreateImage(ctx, &model.Image{Name: "img", Rootfs: rootfs, Kernel: "k"})
	// The daemon resolves the image before it asks for a VM.
	img, err := st.GetImage(ctx, "img")
	if err != nil {
		t.Fatal(err)
	}

	eng := &pipeEngine{running: map[string]*pipeVMM{}}
	t.Cleanup(func() {
		for _, v := range eng.running {
			v.exit()
		}
	})
	newManager := func() *vm.Manager {
		reg, err := engine.NewRegistry(eng)
		if err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		cfg.BootTimeout = config.Duration{Duration: 10 * time.Second}
		cfg.StopTimeout = config.Duration{Duration: 2 * time.Second}
		accel := func(context.Context, string) (string, string, error) { return engine.AccelTCG, "", nil }
		initrd := func(context.Context, *model.Kernel) (string, error) { return "/nonexistent/initrd", nil }
		return vm.New(st, l, cfg, reg, accel, initrd, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	m := newManager()

	// Create boots the VM and waits for its agent (over the pipe).
	v, err := m.Create(ctx, api.VMCreateParams{Name: "piped", Network: "none", NoWorkDisk: true, Wait: api.WaitAgent}, img, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != model.StateRunning || v.Engine != "pipe" || v.DiskClone != "pipe-copy" {
		t.Fatalf("after create: %+v", v)
	}
	wantDisk := filepath.Join(l.VMDir(v.ID), "pipe.img")
	if !slices.Equal(eng.disks, []string{wantDisk}) {
		t.Errorf("root disks made: %v, want %s", eng.disks, wantDisk)
	}
	// An engine without user networking refuses it, before anything is
	// recorded.
	if _, err := m.Create(ctx, api.VMCreateParams{Name: "slirp", Network: "user", NoWorkDisk: true}, img, nil); err == nil {
		t.Error("user networking accepted by an engine without it")
	}
	if _, err := m.Get(ctx, "slirp"); err == nil {
		t.Error("a refused create left a row")
	}

	if code, out := execVM(t, m, "piped", "sh", "-c", "echo hi; exit 7"); code != 7 || out != "hi\n" {
		t.Errorf("exec: %d %q", code, out)
	}
	if _, err := m.WaitReady(ctx, "piped", api.WaitAgent, 5*time.Second); err != nil {
		t.Errorf("wait: %v", err)
	}

	// A daemon restart: the new manager re-adopts the running VM through
	// the engine and reaches its agent again.
	m.Shutdown()
	m = newManager()
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if code, _ := execVM(t, m, "piped", "true"); code != 0 {
		t.Errorf("exec after recover: %d", code)
	}

	if _, err := m.Stop(ctx, "piped"); err != nil {
		t.Fatal(err)
	}
	if !eng.running[v.ID].poweroff {
		t.Error("stop did not go through the agent's poweroff")
	}
	if got, _ := m.Get(ctx, "piped"); got.State != model.StateStopped {
		t.Errorf("after stop: %s", got.State)
	}
	if _, err := m.Start(ctx, "piped", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Kill(ctx, "piped", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, "piped"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.VMDir(v.ID)); !os.IsNotExist(err) {
		t.Errorf("vm dir left behind: %v", err)
	}
	// The Cleaner capability was found at registration and used on
	// delete, with the engine's own layout.
	if len(eng.cleaned) != 1 || eng.cleaned[0].PIDFile != filepath.Join(l.VMRunDir(v.ID), "pipe.pid") {
		t.Errorf("cleanup calls: %+v", eng.cleaned)
	}
}

// execVM runs argv in the VM through the manager and returns the exit code
// and stdout.
func execVM(t *testing.T, m *vm.Manager, name string, argv ...string) (int, string) {
	t.Helper()
	st, err := m.OpenExec(context.Background(), name, api.ExecParams{Argv: argv, Cwd: "/"})
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
