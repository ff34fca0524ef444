package network

import (
	"errors"
	"net/netip"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func mustNext(t *testing.T, a *Allocator, want string) {
	t.Helper()
	got, err := a.Next()
	if err != nil {
		t.Fatalf("Next: %v, want %s", err, want)
	}
	if got != netip.MustParseAddr(want) {
		t.Fatalf("Next = %s, want %s", got, want)
	}
}

func TestAllocatorLowestFree(t *testing.T) {
	a, err := NewAllocator(netip.MustParsePrefix("172.16.0.1/24"), addrs("172.16.0.2", "172.16.0.4", "10.0.0.7", "172.16.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	mustNext(t, a, "172.16.0.3")
	mustNext(t, a, "172.16.0.5")
	mustNext(t, a, "172.16.0.6")
}

func TestAllocatorReuseAfterRelease(t *testing.T) {
	a, err := NewAllocator(netip.MustParsePrefix("172.16.0.1/24"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mustNext(t, a, "172.16.0.2")
	mustNext(t, a, "172.16.0.3")
	mustNext(t, a, "172.16.0.4")
	a.Release(netip.MustParseAddr("172.16.0.3"))
	a.Release(netip.MustParseAddr("172.16.0.3"))  // twice: harmless
	a.Release(netip.MustParseAddr("192.168.9.9")) // foreign: harmless
	mustNext(t, a, "172.16.0.3")
	mustNext(t, a, "172.16.0.5")
}

func TestAllocatorExhaustionAndSpecialAddresses(t *testing.T) {
	// A /29 has 8 addresses: .0 network, .1 bridge, .7 broadcast, so 5 guests.
	a, err := NewAllocator(netip.MustParsePrefix("10.9.8.1/29"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10.9.8.2", "10.9.8.3", "10.9.8.4", "10.9.8.5", "10.9.8.6"} {
		mustNext(t, a, want)
	}
	if got, err := a.Next(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Next on a full /29 = %s, %v; want ErrExhausted", got, err)
	}
	a.Release(netip.MustParseAddr("10.9.8.4"))
	mustNext(t, a, "10.9.8.4")
}

func TestAllocatorBridgeNotFirst(t *testing.T) {
	// The bridge address is skipped wherever it sits in the subnet.
	a, err := NewAllocator(netip.MustParsePrefix("10.0.0.3/29"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mustNext(t, a, "10.0.0.1")
	mustNext(t, a, "10.0.0.2")
	mustNext(t, a, "10.0.0.4")
}

func TestAllocatorSlash30(t *testing.T) {
	// /30: network .0, bridge .1, broadcast .3: exactly one guest, .2.
	a, err := NewAllocator(netip.MustParsePrefix("192.168.50.1/30"), nil)
	if err != nil {
		t.Fatal(err)
	}
	mustNext(t, a, "192.168.50.2")
	if _, err := a.Next(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("second Next on a /30: %v, want ErrExhausted", err)
	}
	a2, err := NewAllocator(netip.MustParsePrefix("192.168.50.1/30"), addrs("192.168.50.2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a2.Next(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Next on a /30 with its guest used: %v, want ErrExhausted", err)
	}
}

func TestAllocatorRejectsBadCIDR(t *testing.T) {
	for _, cidr := range []string{"192.168.50.1/31", "192.168.50.1/32", "fd00::1/64", "172.16.0.0/24", "172.16.0.255/24"} {
		if _, err := NewAllocator(netip.MustParsePrefix(cidr), nil); err == nil {
			t.Errorf("NewAllocator(%s) succeeded, want an error", cidr)
		}
	}
	if _, err := NewAllocator(netip.Prefix{}, nil); err == nil {
		t.Error("NewAllocator(zero prefix) succeeded, want an error")
	}
}
