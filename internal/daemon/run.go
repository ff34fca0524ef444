package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"banger/internal/config"
	"banger/internal/dns"
	"banger/internal/engine"
	"banger/internal/engine/builtin"
	"banger/internal/engine/qemu"
	"banger/internal/hosttools"
	"banger/internal/image"
	"banger/internal/paths"
	"banger/internal/sdnotify"
	"banger/internal/store"
	"banger/internal/vm"
)

// Options configure Run.
type Options struct {
	Layout  paths.Layout
	Version string
	Log     *slog.Logger
}

// Run serves the API until ctx ends, SIGTERM/SIGINT arrives or a client
// asks the daemon to stop. Running VMs are left running: the next daemon
// re-adopts them.
func Run(ctx context.Context, o Options) error {
	l := o.Layout
	if err := os.MkdirAll(l.State, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", l.State, err)
	}
	if err := l.EnsureRuntime(); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(l.Runtime, "bangerd.lock"), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("another bangerd is already serving %s", l.Socket())
	}
	cfg, err := config.Load(l.ConfigFile())
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, l.DB())
	if err != nil {
		return err
	}
	defer st.Close()

	agentPath, err := FindAgent()
	if err != nil {
		return err
	}
	engines, err := builtin.Registry(cfg, l)
	if err != nil {
		return err
	}
	accel := newAccelCache(cfg, cfg.QEMU, filepath.Join(l.State, qemu.KVMCacheFile), o.Log)

	// Networking: DNS for <name>.vm on loopback always; the bridge (and its
	// DNS listener) only where banger may manage the host network.
	svcCtx, stopServices := context.WithCancel(context.Background())
	defer stopServices()
	var upstreams []string // nil: /etc/resolv.conf
	if len(cfg.DNSUpstreams) > 0 {
		upstreams = cfg.DNSUpstreams
	}
	resolver := dns.New(dns.Options{Log: o.Log, Upstreams: upstreams})
	if err := resolver.ListenAndServe(svcCtx, cfg.DNSListen); err != nil {
		return fmt.Errorf("%w (set dns_listen in %s)", err, l.ConfigFile())
	}
	ssh, err := newSSH(l, cfg, st, o.Log)
	if err != nil {
		return err
	}
	egress, err := newEgressService(l, cfg, resolver, o.Log)
	if err != nil {
		return err
	}
	defer egress.Close()
	netw, err := newNetworking(ctx, cfg, resolver, ssh, egress, svcCtx, o.Log)
	if err != nil {
		return err
	}

	// The VM manager first, then the image service that runs image builds
	// in the manager's throwaway VMs. Neither calls the other otherwise:
	// a VM create gets its image resolved by the server (createVM).
	mgr := vm.New(st, l, cfg, engines, accel.resolve, image.Initrd(agentPath), o.Log, vm.WithNetworking(netw))
	maxImage, _ := config.ParseSize(cfg.MaxImageSize) // checked by config.Load
	images := &image.Service{Store: st, Layout: l, Log: o.Log, AgentPath: agentPath,
		Catalog: cfg.CatalogURL, MaxImageBytes: maxImage, DefaultImage: cfg.DefaultImage, Builder: mgr}
	if err := mgr.Recover(ctx); err != nil {
		return fmt.Errorf("recover vms: %w", err)
	}

	sock := l.Socket()
	os.Remove(sock) // stale: we hold the lock
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("chmod %s: %w", sock, err)
	}
	if err := writePIDFile(l.DaemonPID(), os.Getpid()); err != nil {
		ln.Close()
		return err
	}
	defer os.Remove(l.DaemonPID())

	ctx, cancel := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	srv := &Server{VMs: mgr, Images: images, Secrets: egress.secrets, EgressLogs: egressLogs{mgr, egress}, Log: o.Log, Version: o.Version, Socket: sock, Stop: cancel}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	if cfg.APIListen != "" {
		stopTCP, err := serveTCP(cfg.APIListen, l.APIToken(), hs.Handler, o.Log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopTCP()
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	o.Log.Info("bangerd serving", "socket", sock, "pid", os.Getpid(), "version", o.Version, "agent", agentPath)
	if _, err := sdnotify.Ready(); err != nil {
		o.Log.Warn("tell systemd we are ready", "err", err)
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	o.Log.Info("bangerd stopping; running vms keep running")
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	hs.Shutdown(sctx)
	os.Remove(sock)
	mgr.Shutdown()
	return nil
}

// FindAgent locates the banger-agent binary: $BANGER_AGENT, next to this
// executable, or in the usual install locations.
func FindAgent() (string, error) {
	if p := os.Getenv("BANGER_AGENT"); p != "" {
		return p, nil
	}
	var cands []string
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), "banger-agent"))
	}
	cands = append(cands, "/usr/local/lib/banger/banger-agent", "/usr/lib/banger/banger-agent", "/usr/local/bin/banger-agent")
	for _, c := range cands {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c, nil
		}
	}
	if p, err := exec.LookPath("banger-agent"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("banger-agent not found (looked next to bangerd and in %v); set BANGER_AGENT", cands[1:])
}

// accelCache resolves the accelerator once per kernel: the KVM probe boots
// a VM, too slow to repeat for every start. Results are kept in memory and
// in a file under the state dir, keyed by kernel file and QEMU binary, so a
// restarted daemon does not probe again.
type accelCache struct {
	cfg  config.Config
	qemu string
	log  *slog.Logger
	file string

	mu     sync.Mutex
	probed map[string]qemu.KVMVerdict
}

func newAccelCache(cfg config.Config, qemuBin, file string, log *slog.Logger) *accelCache {
	a := &accelCache{cfg: cfg, qemu: qemuBin, file: file, log: log, probed: map[string]qemu.KVMVerdict{}}
	if b, err := os.ReadFile(file); err == nil {
		json.Unmarshal(b, &a.probed)
	}
	return a
}

func (a *accelCache) key(kernel string) string {
	return qemu.KVMCacheKey(kernel, a.qemu, hosttools.Path)
}

func (a *accelCache) resolve(ctx context.Context, kernel string) (string, string, error) {
	return engine.ResolveAccel(ctx, a.cfg.Accel, func(ctx context.Context) (bool, string, error) {
		// A /dev/kvm this process cannot open is checked afresh every
		// time (the user may be added to the kvm group); only probe
		// boots are cached.
		if problem := qemu.KVMDeviceProblem(); problem != "" {
			return false, problem, nil
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		key := a.key(kernel)
		if r, ok := a.probed[key]; ok {
			return r.OK, r.Detail, nil
		}
		ok, detail, err := qemu.ProbeKVM(ctx, a.qemu, kernel)
		if err != nil {
			return false, "", err
		}
		a.log.Info("kvm probe", "usable", ok, "detail", detail)
		a.probed[key] = qemu.KVMVerdict{OK: ok, Detail: detail}
		if b, err := json.Marshal(a.probed); err == nil {
			os.WriteFile(a.file, b, 0o600)
		}
		return ok, detail, nil
	})
}

// writePIDFile writes pid to path without following a symbolic link
// planted there, and only into a regular file of this user's with one
// name (the runtime directory is checked too: see paths.EnsureRuntime).
func writePIDFile(path string, pid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return fmt.Errorf("pid file %s: %w", path, err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("pid file %s: %w", path, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Nlink != 1 || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("pid file %s is not a regular file of this user's with one name: refusing to write it", path)
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("pid file %s: %w", path, err)
	}
	if _, err := fmt.Fprintf(f, "%d\n", pid); err != nil {
		return fmt.Errorf("pid file %s: %w", path, err)
	}
	return f.Close()
}
