package daemon

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"banger/internal/egress/proxy"
)

// upstreamGuard decides which addresses the egress proxy may connect to.
// The proxy runs on the host, so beyond proxy.DefaultAllowUpstream
// (loopback, link-local, multicast) it refuses every address of the
// host's own interfaces and banger's guest network: a policy rule that
// happens to cover them (an --allow of the LAN, a name that resolves to
// one) must not open host services or other guests through the proxy,
// which the bridge's input rules refuse to direct packets.
type upstreamGuard struct {
	guests netip.Prefix // banger's bridge network; invalid when unknown

	// addrs lists the host's interface addresses, refreshed at most every
	// refresh (interfaces come and go: taps, VPNs, DHCP).
	addrs   func() ([]netip.Addr, error)
	refresh time.Duration
	now     func() time.Time

	mu      sync.Mutex
	local   map[netip.Addr]bool
	fetched time.Time
}

func newUpstreamGuard(guests netip.Prefix) *upstreamGuard {
	return &upstreamGuard{guests: guests.Masked(), addrs: interfaceAddrs, refresh: 5 * time.Second, now: time.Now}
}

// interfaceAddrs is every address of this network namespace's interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// Allow is the proxy's Config.AllowUpstream. When the host's addresses
// cannot be read it refuses everything: failing closed.
func (g *upstreamGuard) Allow(a netip.Addr) bool {
	a = a.Unmap()
	if !proxy.DefaultAllowUpstream(a) {
		return false
	}
	if g.guests.IsValid() && g.guests.Contains(a) {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.local == nil || g.now().Sub(g.fetched) >= g.refresh {
		as, err := g.addrs()
		if err != nil {
			g.local = nil
			return false
		}
		g.local = make(map[netip.Addr]bool, len(as))
		for _, x := range as {
			g.local[x.Unmap()] = true
		}
		g.fetched = g.now()
	}
	return !g.local[a]
}
