package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"

	"banger/internal/agent"
	"banger/internal/config"
	"banger/internal/fsutil"
	"banger/internal/model"
	"banger/internal/paths"
	"banger/internal/sshkeys"
	"banger/internal/store"
	"banger/internal/vm"
)

// sshService owns banger's SSH material: the key put into every guest,
// the known_hosts filled from the guests' own host keys (no trust on first
// use, no stale keys when an address is reused), and the generated ssh
// config that `banger ssh-config --install` includes.
type sshService struct {
	key, pub, knownHosts, config string
	// cli is banger's CLI, the ProxyCommand of every VM in the generated
	// config ("" when it cannot be found: ssh then connects directly).
	cli   string
	store *store.Store
	log   *slog.Logger
	mu    sync.Mutex
}

func newSSH(l paths.Layout, cfg config.Config, st *store.Store, log *slog.Logger) (*sshService, error) {
	s := &sshService{key: cfg.SSHKeyPath(l), knownHosts: l.KnownHosts(), config: l.SSHConfig(), store: st, log: log}
	for _, d := range []string{filepath.Dir(s.key), filepath.Dir(s.knownHosts), filepath.Dir(s.config)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	pub, err := sshkeys.EnsureKey(s.key)
	if err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", s.key, err)
	}
	s.pub = pub
	s.cli = findCLI()
	return s, nil
}

// findCLI returns the absolute path of the banger CLI: the one beside this
// daemon's binary (installed and built together), else the one on PATH.
func findCLI() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "banger")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("banger"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	return ""
}

// proxy is the ProxyCommand for a VM: `banger vm ssh --proxy NAME` waits
// for the guest's sshd (plain `ssh NAME.vm` right after `vm create` would
// otherwise meet a refused connection while the guest boots), then relays.
func (s *sshService) proxy(v *model.VM) []string {
	if s.cli == "" {
		return nil
	}
	return []string{s.cli, "vm", "ssh", "--proxy", v.Name}
}

// hostPatterns are the names a VM's host keys are known under.
func hostPatterns(v *model.VM) []string {
	switch v.Network {
	case vm.NetBridge:
		return []string{v.Name + ".vm", v.IP}
	case vm.NetUser:
		return []string{"[127.0.0.1]:" + strconv.Itoa(v.SSHPort)}
	}
	return nil
}

func (s *sshService) afterBoot(ctx context.Context, v *model.VM, c *agent.Client) error {
	if c == nil {
		return nil
	}
	resp, err := c.Call(ctx, agent.Request{Op: agent.OpSSHSetup, AuthorizedKey: s.pub})
	if err != nil {
		return fmt.Errorf("set up ssh in the guest: %w", err)
	}
	if pats := hostPatterns(v); len(pats) > 0 && len(resp.HostKeys) > 0 {
		s.mu.Lock()
		err = sshkeys.KnownHosts{Path: s.knownHosts}.Set(pats, resp.HostKeys)
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("record host keys: %w", err)
		}
	}
	return nil
}

func (s *sshService) deleted(v *model.VM) {
	if pats := hostPatterns(v); len(pats) > 0 {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := (sshkeys.KnownHosts{Path: s.knownHosts}).Remove(pats); err != nil {
			s.log.Warn("forget host keys", "vm", v.Name, "err", err)
		}
	}
}

// refresh rewrites the generated ssh config from the VMs that exist,
// atomically (fsutil.AtomicWriteFile).
func (s *sshService) refresh() error {
	vms, err := s.store.ListVMs(context.Background())
	if err != nil {
		return fmt.Errorf("refresh ssh config: %w", err)
	}
	var hosts []sshkeys.Host
	for _, v := range vms {
		switch v.Network {
		case vm.NetBridge:
			hosts = append(hosts, sshkeys.Host{Name: v.Name, Alias: v.Name + ".vm", Addr: v.IP, Port: 22, User: "root", ProxyCommand: s.proxy(v)})
		case vm.NetUser:
			hosts = append(hosts, sshkeys.Host{Name: v.Name, Alias: v.Name + ".vm", Addr: "127.0.0.1", Port: v.SSHPort, User: "root", ProxyCommand: s.proxy(v)})
		}
	}
	b := sshkeys.RenderConfig(hosts, s.key, s.knownHosts)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := fsutil.AtomicWriteFile(s.config, b, 0o600); err != nil {
		return fmt.Errorf("refresh ssh config: %w", err)
	}
	return nil
}

// refreshLogged is refresh for callers that cannot return an error:
// the failure goes to the daemon log as an error, with the path.
func (s *sshService) refreshLogged() {
	if err := s.refresh(); err != nil {
		s.log.Error("ssh config not updated: `ssh NAME.vm` may reach a stale address", "config", s.config, "err", err)
	}
}
