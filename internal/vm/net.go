package vm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/egress/policy"
	"banger/internal/engine"
	"banger/internal/model"
	"banger/internal/network"
	"banger/internal/portfwd"
	"banger/internal/secrets"
)

// Network modes.
const (
	NetBridge = model.NetBridge
	NetUser   = model.NetUser
	NetNone   = model.NetNone
)

// User-mode (QEMU slirp) addresses, fixed by QEMU.
const (
	userGuestCIDR = "10.0.2.15/24"
	userGateway   = "10.0.2.2"
	userDNS       = "10.0.2.3"
)

// Resolver is where running VMs' names are published (the daemon's DNS).
// SetForwarders names the guests whose queries for names outside banger's
// domain are forwarded upstream: the NAT guests. Other guests get answers
// for banger's domain only.
type Resolver interface {
	Set(name string, addr netip.Addr)
	Remove(name string)
	SetForwarders(guests []netip.Addr)
}

// Networking wires VMs to the host network. Host is nil where banger may
// not manage the host network (not root, no helper): bridge mode is then
// unavailable and "auto" means user mode.
type Networking struct {
	Host     network.Host
	Config   network.Config
	Resolver Resolver
	// Changed is called after the set of reachable VMs changed (e.g. to
	// regenerate the ssh config).
	Changed func()
	// AfterBoot runs once a VM's agent answers (e.g. to authorize banger's
	// SSH key and learn the guest's host keys). An error fails the start.
	AfterBoot func(ctx context.Context, vm *model.VM, c *agent.Client) error
	// Deleted runs after a VM is deleted (e.g. to forget its host keys).
	Deleted func(vm *model.VM)
	// BridgeReady runs once the bridge exists (e.g. to serve DNS on its
	// address, which guests use as their resolver).
	BridgeReady func(ctx context.Context) error
	// Egress enforces allow policies (DNS filter and proxy); nil: VMs
	// with an allow policy cannot start in bridge mode.
	Egress EgressEnforcer
}

// netState is the manager's runtime network bookkeeping.
type netState struct {
	mu         sync.Mutex
	bridgeOK   bool
	forwarders map[string]*portfwd.Forwarder // by VM id
}

func (m *Manager) resolveMode(requested string) (string, error) {
	mode := requested
	if mode == "" {
		mode = m.cfg.Network
	}
	if err := model.CheckNetworkMode("network", mode, true); err != nil {
		return "", api.Errorf(api.CodeBadRequest, "%v", err)
	}
	switch mode {
	case model.NetAuto:
		if m.net != nil && m.net.Host != nil {
			return NetBridge, nil
		}
		return NetUser, nil
	case NetBridge:
		if m.net == nil || m.net.Host == nil {
			return "", api.Errorf(api.CodeBadRequest, "bridge networking needs root (or banger's privileged helper); use --network user")
		}
		return NetBridge, nil
	}
	return mode, nil // user or none
}

// prepareNetwork fills the network fields of a VM about to be created and
// checks its published ports. It allocates nothing that outlives a failed
// create except the address, which lives in the VM's row.
func (m *Manager) prepareNetwork(ctx context.Context, vm *model.VM, p api.VMCreateParams) error {
	mode, err := m.resolveMode(p.Network)
	if err != nil {
		return err
	}
	vm.Network = mode
	if err := model.CheckNetworkOptions(mode, p.NAT, len(p.Publish)); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if _, err := setEgress(vm, p.Egress, p.NAT); err != nil {
		return err
	}
	if mode == NetNone {
		return nil
	}
	seen := map[string]bool{}
	for _, spec := range p.Publish {
		pm, err := portfwd.Parse(spec)
		if err != nil {
			return api.Errorf(api.CodeBadRequest, "%v", err)
		}
		key := fmt.Sprintf("%s:%d", pm.HostIP, pm.HostPort)
		if seen[key] {
			return api.Errorf(api.CodeBadRequest, "--publish: host port %s given twice", key)
		}
		seen[key] = true
		if err := m.portInUseByVM(ctx, pm); err != nil {
			return err
		}
		if err := portfwd.CheckFree(pm); err != nil {
			return api.Errorf(api.CodeConflict, "%v", err)
		}
		vm.Publish = append(vm.Publish, pm)
	}
	if mode == NetUser {
		port, err := portfwd.FreePort("127.0.0.1")
		if err != nil {
			return fmt.Errorf("pick an ssh port: %w", err)
		}
		vm.SSHPort = port
	}
	return nil
}

// portInUseByVM refuses a host port another (possibly stopped) VM has.
func (m *Manager) portInUseByVM(ctx context.Context, pm model.PortMap) error {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	for _, v := range vms {
		for _, q := range v.Publish {
			if q.HostPort == pm.HostPort && (q.HostIP == pm.HostIP || q.HostIP == "0.0.0.0" || pm.HostIP == "0.0.0.0") {
				return api.Errorf(api.CodeConflict, "host port %s:%d is already published by vm %q", pm.HostIP, pm.HostPort, v.Name)
			}
		}
	}
	return nil
}

// allocateIP gives a bridge-mode VM the lowest free address.
func (m *Manager) allocateIP(ctx context.Context, vm *model.VM) error {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	var used []netip.Addr
	for _, v := range vms {
		if a, err := netip.ParseAddr(v.IP); err == nil {
			used = append(used, a)
		}
	}
	alloc, err := network.NewAllocator(m.net.Config.CIDR, used)
	if err != nil {
		return err
	}
	ip, err := alloc.Next()
	if err != nil {
		return api.Errorf(api.CodeConflict, "no free address left in %s", m.net.Config.CIDR)
	}
	vm.IP = ip.String()
	return nil
}

// netSpec adds the VM's NIC to the engine spec and returns the kernel
// parameters that configure it in the guest. In bridge mode it takes a tap
// from the pool, recorded in the VM's run dir so a restarted daemon knows
// it.
func (m *Manager) netSpec(ctx context.Context, vm *model.VM, spec *engine.Spec) (string, error) {
	switch vm.Network {
	case NetBridge:
		if err := m.ensureBridge(ctx); err != nil {
			return "", err
		}
		ip, err := netip.ParseAddr(vm.IP)
		if err != nil {
			return "", fmt.Errorf("vm %q has no valid address %q", vm.Name, vm.IP)
		}
		// The tap may send only from the VM's MAC and address.
		tap, err := m.net.Host.AcquireTap(ctx, network.Binding{MAC: network.MACFor(vm.ID), IP: ip})
		if err != nil {
			return "", fmt.Errorf("get a tap: %w", err)
		}
		if err := os.WriteFile(m.tapFile(vm.ID), []byte(tap), 0o600); err != nil {
			m.net.Host.ReleaseTap(context.WithoutCancel(ctx), tap)
			return "", err
		}
		spec.NICs = []engine.NIC{{Tap: tap, MAC: network.MACFor(vm.ID)}}
		cidr := m.net.Config.CIDR
		gw := cidr.Addr().String()
		return fmt.Sprintf("banger.ip=%s/%d banger.gw=%s banger.dns=%s", vm.IP, cidr.Bits(), gw, gw), nil
	case NetUser:
		fwds := []engine.HostFwd{{Proto: "tcp", HostAddr: "127.0.0.1", HostPort: vm.SSHPort, GuestPort: 22}}
		for _, p := range vm.Publish {
			fwds = append(fwds, engine.HostFwd{Proto: "tcp", HostAddr: p.HostIP, HostPort: p.HostPort, GuestPort: p.GuestPort})
		}
		spec.NICs = []engine.NIC{{User: true, Restrict: !vm.NAT, MAC: network.MACFor(vm.ID), HostFwds: fwds}}
		return fmt.Sprintf("banger.ip=%s banger.gw=%s banger.dns=%s", userGuestCIDR, userGateway, userDNS), nil
	}
	return "", nil
}

func (m *Manager) tapFile(id string) string { return filepath.Join(m.layout.VMRunDir(id), "tap") }

func (m *Manager) ensureBridge(ctx context.Context) error {
	m.netst.mu.Lock()
	defer m.netst.mu.Unlock()
	if m.netst.bridgeOK {
		return nil
	}
	if err := m.net.Host.EnsureBridge(ctx); err != nil {
		return fmt.Errorf("set up bridge %s: %w", m.net.Config.Bridge, err)
	}
	if m.net.BridgeReady != nil {
		if err := m.net.BridgeReady(ctx); err != nil {
			return err
		}
	}
	m.netst.bridgeOK = true
	return nil
}

// netUp makes a running VM reachable: its name in DNS, its NAT rule, its
// published ports.
func (m *Manager) netUp(ctx context.Context, vm *model.VM) error {
	if m.net == nil || vm.Network != NetBridge {
		return nil
	}
	ip, err := netip.ParseAddr(vm.IP)
	if err != nil {
		return fmt.Errorf("vm %q has no valid address %q", vm.Name, vm.IP)
	}
	if m.net.Resolver != nil {
		m.net.Resolver.Set(vm.Name, ip)
	}
	if egressOut(vm) {
		if err := m.syncNAT(ctx, ""); err != nil {
			return err
		}
	}
	if len(vm.Publish) > 0 {
		f, err := portfwd.Start(ip, vm.Publish)
		if err != nil {
			return err
		}
		m.netst.mu.Lock()
		if m.netst.forwarders == nil {
			m.netst.forwarders = map[string]*portfwd.Forwarder{}
		}
		m.netst.forwarders[vm.ID] = f
		m.netst.mu.Unlock()
	}
	return nil
}

// netDown undoes netUp and gives the tap back. Safe to call for a VM that
// never got that far.
func (m *Manager) netDown(ctx context.Context, vm *model.VM) {
	ctx = context.WithoutCancel(ctx)
	m.netst.mu.Lock()
	f := m.netst.forwarders[vm.ID]
	delete(m.netst.forwarders, vm.ID)
	m.netst.mu.Unlock()
	f.Close()
	if m.net == nil || vm.Network != NetBridge {
		return
	}
	if m.net.Resolver != nil {
		m.net.Resolver.Remove(vm.Name)
	}
	if egressOut(vm) {
		if err := m.syncNAT(ctx, vm.ID); err != nil {
			m.log.Error("update nat rules", "vm", vm.Name, "err", err)
		}
	}
	if b, err := os.ReadFile(m.tapFile(vm.ID)); err == nil {
		if tap := strings.TrimSpace(string(b)); tap != "" {
			if err := m.net.Host.ReleaseTap(ctx, tap); err != nil {
				m.log.Error("release tap", "vm", vm.Name, "tap", tap, "err", err)
			}
		}
		os.Remove(m.tapFile(vm.ID))
	}
}

// egressOut reports whether vm may send anything beyond the host (NAT or
// an allow policy), so its start and stop change the egress rules.
func egressOut(vm *model.VM) bool {
	return vm.NAT || vm.Egress != nil && vm.Egress.Egress != string(policy.None)
}

// syncNAT declares the egress of every running bridge-mode VM, leaving out
// exclude (a VM going down): NAT for mode all; for mode allow the DNS
// filter, the proxy and the filtered firewall rules.
func (m *Manager) syncNAT(ctx context.Context, exclude string) error {
	vms, err := m.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	var guests []netip.Addr
	var filtered []EgressVM
	eg := network.Egress{}
	for _, v := range vms {
		if v.ID == exclude || v.Network != NetBridge || m.runtimeOf(v.ID) == nil {
			continue
		}
		a, err := netip.ParseAddr(v.IP)
		if err != nil {
			continue
		}
		pol, err := vmPolicy(v)
		if err != nil {
			m.log.Error("egress policy of vm; nothing lets it out", "vm", v.Name, "err", err)
			continue
		}
		switch pol.Mode {
		case policy.All:
			guests = append(guests, a)
		case policy.Allow:
			b, err := secrets.Restore(pol, v.EgressPlaceholders)
			if err != nil {
				m.log.Error("egress secrets of vm; nothing lets it out", "vm", v.Name, "err", err)
				continue
			}
			filtered = append(filtered, EgressVM{Name: v.Name, IP: v.IP, Policy: pol, Bindings: b, EgressLog: m.egressLogFile(v.ID)})
			eg.Guests = append(eg.Guests, network.GuestEgress{IP: a, Allow: netAllows(pol)})
		}
	}
	if err := m.ensureBridge(ctx); err != nil {
		return err
	}
	if len(filtered) > 0 {
		if m.net.Egress == nil || m.net.Egress.ProxyPort() == 0 {
			return errors.New("egress allow policies need the egress proxy, which is not running (see the daemon log)")
		}
		eg.ProxyPort = m.net.Egress.ProxyPort()
	}
	// DNS first: a guest that loses NAT loses its resolver's way out
	// even if the rule change fails.
	if m.net.Resolver != nil {
		m.net.Resolver.SetForwarders(guests)
	}
	if m.net.Egress != nil {
		if err := m.net.Egress.Apply(ctx, filtered); err != nil {
			return err
		}
	}
	return m.net.Host.SetEgress(ctx, guests, eg)
}

// recoverNetwork runs after re-adoption: brings adopted VMs' networking
// back and removes taps nothing uses any more.
func (m *Manager) recoverNetwork(ctx context.Context, adopted []*model.VM) {
	if m.net == nil || m.net.Host == nil {
		return
	}
	inUse := map[string]bool{}
	for _, vm := range adopted {
		if b, err := os.ReadFile(m.tapFile(vm.ID)); err == nil {
			inUse[strings.TrimSpace(string(b))] = true
		}
	}
	hasBridge := false
	for _, vm := range adopted {
		if vm.Network == NetBridge {
			hasBridge = true
		}
	}
	if hasBridge {
		if err := m.ensureBridge(ctx); err != nil {
			m.log.Error("recover bridge", "err", err)
			return
		}
	}
	if st, err := m.net.Host.State(ctx); err == nil && st.BridgeExists {
		for _, tap := range st.Unknown {
			if !inUse[tap] {
				m.net.Host.ReleaseTap(ctx, tap)
			}
		}
	}
	for _, vm := range adopted {
		if err := m.netUp(ctx, vm); err != nil {
			m.log.Error("recover vm network", "vm", vm.Name, "err", err)
		}
	}
	if hasBridge {
		if err := m.syncNAT(ctx, ""); err != nil && !errors.Is(err, context.Canceled) {
			m.log.Error("recover nat", "err", err)
		}
	}
}

// Ports lists the guest's listening sockets with the endpoint the host
// can use for each.
func (m *Manager) Ports(ctx context.Context, ref string) ([]agent.PortInfo, error) {
	v, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	rt, err := m.requireRunning(v)
	if err != nil {
		return nil, err
	}
	c, err := m.agentClient(ctx, rt, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("vm %q: guest agent unreachable: %w", v.Name, err)
	}
	resp, err := c.Call(ctx, agent.Request{Op: agent.OpPorts})
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", v.Name, err)
	}
	for i := range resp.Ports {
		p := &resp.Ports[i]
		if strings.HasPrefix(p.Addr, "127.") || p.Addr == "::1" {
			continue // only reachable from inside the guest
		}
		switch v.Network {
		case NetBridge:
			p.Endpoint = fmt.Sprintf("%s.vm:%d", v.Name, p.Port)
		case NetUser:
			if strings.HasPrefix(p.Proto, "tcp") && p.Port == 22 {
				p.Endpoint = fmt.Sprintf("127.0.0.1:%d", v.SSHPort)
			}
		}
		for _, pm := range v.Publish {
			if pm.GuestPort == p.Port && strings.HasPrefix(p.Proto, "tcp") {
				p.Endpoint = fmt.Sprintf("%s:%d", pm.HostIP, pm.HostPort)
			}
		}
	}
	return resp.Ports, nil
}
