package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"banger/internal/config"
	"banger/internal/dns"
	"banger/internal/egress/ca"
	"banger/internal/egress/egresslog"
	"banger/internal/egress/policy"
	"banger/internal/egress/proxy"
	"banger/internal/paths"
	"banger/internal/secrets"
	"banger/internal/vm"
)

// maxEgressLog bounds a VM's egress log file (it rotates once).
const maxEgressLog = 4 << 20

// maxExtraCA bounds the egress_extra_ca file.
const maxExtraCA = 1 << 20

// egressService enforces bridge-mode VMs' allow policies in the daemon
// (vm.EgressEnforcer): one proxy listening on the bridge address, where
// nftables redirects the filtered guests' TCP 80/443, and the DNS
// server's per-guest filters.
type egressService struct {
	px      *proxy.Proxy
	ca      *ca.CA
	secrets *secrets.Store
	dns     *dns.Server
	log     *slog.Logger
	port    atomic.Uint32

	mu   sync.Mutex
	vms  map[string]*egressVM // by VM name
	byIP map[netip.Addr]*proxy.VM
}

type egressVM struct {
	ip       netip.Addr
	vm       *proxy.VM
	log      *egresslog.Log
	policy   *policy.Policy
	bindings map[string]string
}

// upstreamResolver resolves the proxy's upstream names through the DNS
// server's upstreams (never /etc/hosts).
type upstreamResolver struct{ dns *dns.Server }

func (r upstreamResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return (&proxy.DNSResolver{Servers: r.dns.Upstreams()}).LookupNetIP(ctx, network, host)
}

func newEgressService(l paths.Layout, cfg config.Config, resolver *dns.Server, log *slog.Logger) (*egressService, error) {
	authority, err := ca.LoadOrCreate(filepath.Join(l.State, "egress-ca"))
	if err != nil {
		return nil, fmt.Errorf("egress ca: %w", err)
	}
	store, err := secrets.Open(l.State)
	if err != nil {
		return nil, err
	}
	var extra []byte
	if cfg.EgressExtraCA != "" {
		f, err := os.Open(cfg.EgressExtraCA)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("egress_extra_ca: %w", err)
		}
		extra, err = io.ReadAll(io.LimitReader(f, maxExtraCA+1))
		f.Close()
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("egress_extra_ca: %w", err)
		}
		if len(extra) > maxExtraCA {
			store.Close()
			return nil, fmt.Errorf("egress_extra_ca %s: larger than %d bytes", cfg.EgressExtraCA, maxExtraCA)
		}
	}
	bridge, _ := netip.ParsePrefix(cfg.BridgeCIDR) // checked by config.Load
	px, err := proxy.New(proxy.Config{CA: authority, Secrets: store, ExtraRootCAs: extra,
		Resolver: upstreamResolver{resolver}, Logger: log, AllowUpstream: newUpstreamGuard(bridge).Allow})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	return &egressService{px: px, ca: authority, secrets: store, dns: resolver, log: log,
		vms: map[string]*egressVM{}, byIP: map[netip.Addr]*proxy.VM{}}, nil
}

// listen serves the proxy on the bridge address (an ephemeral port)
// until ctx ends; nftables redirects to it.
func (e *egressService) listen(ctx context.Context, gw netip.Addr) error {
	if e.port.Load() != 0 {
		return nil
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort(gw.String(), "0"))
	if err != nil {
		return fmt.Errorf("egress proxy: %w", err)
	}
	e.port.Store(uint32(ln.Addr().(*net.TCPAddr).Port))
	go func() {
		if err := e.px.Serve(ctx, ln, e.vmFor); err != nil {
			e.log.Error("egress proxy stopped", "err", err)
		}
	}()
	e.log.Info("egress proxy listening", "addr", ln.Addr())
	return nil
}

func (e *egressService) vmFor(src netip.Addr) *proxy.VM {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.byIP[src.Unmap()]
}

// CACert implements vm.EgressEnforcer.
func (e *egressService) CACert() []byte { return e.ca.CertPEM() }

// ProxyPort implements vm.EgressEnforcer.
func (e *egressService) ProxyPort() uint16 { return uint16(e.port.Load()) }

// Apply implements vm.EgressEnforcer: the proxy's VMs and the DNS filters
// become exactly vms. A VM whose policy changed has its open proxied
// connections cut, so a narrowed policy takes effect at once.
func (e *egressService) Apply(ctx context.Context, vms []vm.EgressVM) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	keep := map[string]bool{}
	for _, v := range vms {
		ip, err := netip.ParseAddr(v.IP)
		if err != nil {
			return fmt.Errorf("egress: vm %q address %q: %w", v.Name, v.IP, err)
		}
		keep[v.Name] = true
		holders := v.Bindings.Placeholders()
		cur := e.vms[v.Name]
		if cur != nil && cur.ip == ip {
			if !reflect.DeepEqual(cur.policy, v.Policy) || !reflect.DeepEqual(cur.bindings, holders) {
				cur.vm.SetPolicy(v.Policy, v.Bindings)
				cur.vm.CloseConns()
				cur.policy, cur.bindings = v.Policy, holders
			}
			continue
		}
		if cur != nil {
			e.dropLocked(v.Name)
		}
		lg, err := egresslog.Open(v.EgressLog, maxEgressLog)
		if err != nil {
			return fmt.Errorf("egress log of vm %q: %w", v.Name, err)
		}
		pv, err := e.px.NewVM(proxy.VMConfig{Name: v.Name, Policy: v.Policy, Bindings: v.Bindings, Log: lg})
		if err != nil {
			lg.Close()
			return fmt.Errorf("egress proxy for vm %q: %w", v.Name, err)
		}
		e.vms[v.Name] = &egressVM{ip: ip, vm: pv, log: lg, policy: v.Policy, bindings: holders}
	}
	for name := range e.vms {
		if !keep[name] {
			e.dropLocked(name)
		}
	}
	filters := map[netip.Addr]dns.GuestFilter{}
	e.byIP = map[netip.Addr]*proxy.VM{}
	for _, ev := range e.vms {
		e.byIP[ev.ip] = ev.vm
		filters[ev.ip] = dnsFilter{ev.vm}
	}
	e.dns.SetFilters(filters)
	return nil
}

func (e *egressService) dropLocked(name string) {
	ev := e.vms[name]
	delete(e.vms, name)
	ev.vm.Close()
	ev.log.Close()
}

// Close stops the proxy.
func (e *egressService) Close() {
	e.px.Close()
	e.mu.Lock()
	for name := range e.vms {
		e.dropLocked(name)
	}
	e.mu.Unlock()
	e.secrets.Close()
}

// dnsFilter is a proxy VM seen by the DNS server.
type dnsFilter struct{ vm *proxy.VM }

func (f dnsFilter) AllowsResolve(name string) bool { return f.vm.Policy().AllowsResolve(name) }

func (f dnsFilter) RecordAnswer(name string, addrs []netip.Addr, ttl time.Duration) {
	f.vm.RecordAnswer(name, addrs, ttl)
}

// follow follows the live egress log of the VM name, if it is under an
// allow policy now; ok is false otherwise.
func (e *egressService) follow(ctx context.Context, name string, fn func(egresslog.Record) error) (bool, error) {
	e.mu.Lock()
	ev := e.vms[name]
	e.mu.Unlock()
	if ev == nil {
		return false, nil
	}
	return true, ev.log.Follow(ctx, fn)
}

// egressLogs serves `vm egress` (Server.EgressLogs).
type egressLogs struct {
	mgr *vm.Manager
	svc *egressService
}

func (l egressLogs) Records(ctx context.Context, ref string, follow bool, fn func(egresslog.Record) error) error {
	name, path, err := l.mgr.EgressLogPath(ctx, ref)
	if err != nil {
		return err
	}
	if follow {
		if ok, err := l.svc.follow(ctx, name, fn); ok {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
	}
	return egresslog.Read(path, fn)
}
