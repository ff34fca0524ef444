package daemon

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

// TestUpstreamGuard: the egress proxy never connects to the host's own
// addresses, banger's guest network, loopback or link-local, refreshes
// the host's addresses, and fails closed when it cannot read them.
func TestUpstreamGuard(t *testing.T) {
	host := []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("2001:db8::10")}
	var fail bool
	now := time.Unix(1000, 0)
	g := newUpstreamGuard(netip.MustParsePrefix("172.16.0.1/24"))
	g.now = func() time.Time { return now }
	g.addrs = func() ([]netip.Addr, error) {
		if fail {
			return nil, errors.New("no netlink")
		}
		return host, nil
	}
	for addr, want := range map[string]bool{
		"93.184.216.34":       true,
		"192.168.1.11":        true, // the LAN, not the host
		"192.168.1.10":        false,
		"::ffff:192.168.1.10": false,
		"2001:db8::10":        false,
		"172.16.0.1":          false, // the bridge address (the proxy itself)
		"172.16.0.7":          false, // another guest
		"127.0.0.1":           false,
		"169.254.169.254":     false,
		"0.0.0.0":             false,
		"ff02::1":             false,
		"2001:db8::11":        true,
	} {
		if got := g.Allow(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Allow(%s) = %v, want %v", addr, got, want)
		}
	}
	// A new host address is refused once the cache is stale.
	host = append(host, netip.MustParseAddr("10.8.0.2"))
	if !g.Allow(netip.MustParseAddr("10.8.0.2")) {
		t.Errorf("cache refreshed too early")
	}
	now = now.Add(6 * time.Second)
	if g.Allow(netip.MustParseAddr("10.8.0.2")) {
		t.Errorf("new host address allowed after refresh")
	}
	// Unreadable interfaces: refuse everything.
	fail = true
	now = now.Add(6 * time.Second)
	if g.Allow(netip.MustParseAddr("93.184.216.34")) {
		t.Errorf("allowed with unreadable host addresses")
	}
}
