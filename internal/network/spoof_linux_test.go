package network

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// bindForTest binds a bridge port that stands in for a tap (a veth named
// like one) as AcquireTap binds the taps it hands out.
func bindForTest(t *testing.T, h *host, port string, b Binding) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	err := h.inNS(func(nh *netlink.Handle) error {
		conn, err := nftables.New()
		if err != nil {
			return err
		}
		if b.MAC == "" {
			delete(h.bindings, port)
		} else {
			h.bindings[port] = b
		}
		return h.syncBridgeTable(nh, conn)
	})
	if err != nil {
		t.Fatalf("bind %s: %v", port, err)
	}
}

// setGuestLink sets the MAC and the only IPv4 address of eth0 in ns.
func setGuestLink(t *testing.T, ns netns.NsHandle, mac, addr string) {
	t.Helper()
	err := inNetNS(ns, func() error {
		link, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		hw, _ := net.ParseMAC(mac)
		if err := netlink.LinkSetHardwareAddr(link, hw); err != nil {
			return err
		}
		addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
		for _, a := range addrs {
			netlink.AddrDel(link, &a)
		}
		a, _ := netlink.ParseAddr(addr)
		if err := netlink.AddrAdd(link, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		return netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP("172.16.0.1")})
	})
	if err != nil {
		t.Fatalf("configure guest eth0: %v", err)
	}
}

// reach reports whether a TCP connection from ns to addr succeeds, trying a
// few times (the first packets on new links wait for ARP).
func reach(ns netns.NsHandle, addr string, tries int) bool {
	for i := 0; i < tries; i++ {
		if c, err := dialFrom(context.Background(), ns, addr); err == nil {
			c.Close()
			return true
		}
	}
	return false
}

// TestAntiSpoofingForReal shows, with two guests on the bridge (veths named
// like taps stand in for the taps) and an uplink namespace, all inside
// namespaces made here:
//   - a NAT guest reaches the uplink; the other guest does not, and neither
//     does it by taking the NAT guest's address and MAC;
//   - guests reach the host only on the bridge's DNS port, not on a service
//     listening on every address;
//   - guests reach each other unless IsolateGuests is set.
func TestAntiSpoofingForReal(t *testing.T) {
	enterTestNetNS(t)
	h := newTestHost(t, Config{TapPoolSize: -1})
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	nsA, nsB, uplinkNS := newNetNS(t), newNetNS(t), newNetNS(t)
	br, err := netlink.LinkByName("banger0")
	if err != nil {
		t.Fatal(err)
	}
	const macA, macB = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
	addVeth(t, "bgtap7", "eth0", nsA, "", br)
	addVeth(t, "bgtap8", "eth0", nsB, "", br)
	setGuestLink(t, nsA, macA, "172.16.0.2/24")
	setGuestLink(t, nsB, macB, "172.16.0.3/24")
	addVeth(t, "uplink", "eth0", uplinkNS, "10.250.0.1/30", nil)
	configurePeer(t, uplinkNS, "eth0", "10.250.0.2/30", "")
	web := listenIn(t, uplinkNS, "10.250.0.2:0")
	go acceptAndClose(web)
	inB := listenIn(t, nsB, "172.16.0.3:0")
	go acceptAndClose(inB)
	// Host services: one on every address (any port but 53), and the DNS
	// port of the bridge address.
	any, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer any.Close()
	go acceptAndClose(any)
	dns, err := net.Listen("tcp", "172.16.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	go acceptAndClose(dns)
	_, anyPort, _ := net.SplitHostPort(any.Addr().String())

	bindForTest(t, h, "bgtap7", Binding{MAC: macA, IP: guestA})
	bindForTest(t, h, "bgtap8", Binding{MAC: macB, IP: guestB})
	if err := h.SetNAT(bg, []netip.Addr{guestA}); err != nil {
		t.Fatal(err)
	}
	if st, err := h.State(bg); err != nil || !st.RulesInSync || len(st.Bindings) != 2 {
		t.Fatalf("State = %+v, %v; want two bindings, rules in sync", st, err)
	}

	if !reach(nsA, "172.16.0.1:53", 5) {
		t.Fatal("guest a cannot reach the bridge's DNS port")
	}
	if !reach(nsA, web.Addr().String(), 3) {
		t.Fatal("nat guest a cannot reach the uplink")
	}
	if !reach(nsA, inB.Addr().String(), 3) {
		t.Fatal("guest a cannot reach guest b")
	}
	if reach(nsA, "172.16.0.1:"+anyPort, 1) {
		t.Error("guest a reached a host service listening on 0.0.0.0")
	}
	if !reach(nsB, "172.16.0.1:53", 5) {
		t.Fatal("guest b cannot reach the bridge's DNS port")
	}
	if reach(nsB, web.Addr().String(), 1) {
		t.Error("guest b without nat reached the uplink")
	}

	// b takes a's address only, then a's address and MAC, while a is
	// silent (its port down, so that the bridge would learn b's port for
	// a's MAC if b's frames got in at all).
	if err := netlink.LinkSetDown(mustLink(t, "bgtap7")); err != nil {
		t.Fatal(err)
	}
	setGuestLink(t, nsB, macB, "172.16.0.2/24")
	if reach(nsB, web.Addr().String(), 1) || reach(nsB, "172.16.0.1:53", 1) {
		t.Error("guest b got through with a's address")
	}
	setGuestLink(t, nsB, macA, "172.16.0.2/24")
	if reach(nsB, web.Addr().String(), 2) || reach(nsB, "172.16.0.1:53", 1) {
		t.Error("guest b got through with a's address and MAC")
	}
	// Without the bridge table the same spoof gets through: the checks
	// above are not vacuous.
	withoutBridgeTable(t, h, func() {
		if !reach(nsB, web.Addr().String(), 5) {
			t.Error("control: the spoofing guest does not get through even without anti-spoofing")
		}
	})
	setGuestLink(t, nsB, macB, "172.16.0.3/24")
	if err := netlink.LinkSetUp(mustLink(t, "bgtap7")); err != nil {
		t.Fatal(err)
	}

	// Guests isolated from each other.
	hi := newTestHost(t, Config{TapPoolSize: -1, IsolateGuests: true})
	if err := hi.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	bindForTest(t, hi, "bgtap7", Binding{MAC: macA, IP: guestA})
	bindForTest(t, hi, "bgtap8", Binding{MAC: macB, IP: guestB})
	if !reach(nsA, "172.16.0.1:53", 5) {
		t.Fatal("isolated guest a cannot reach the bridge's DNS port")
	}
	if reach(nsA, inB.Addr().String(), 1) {
		t.Error("isolated guest a reached guest b")
	}
}

func mustLink(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// withoutBridgeTable runs fn with banger's bridge table deleted, then
// restores it.
func withoutBridgeTable(t *testing.T, h *host, fn func()) {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	conn.DelTable(&nftables.Table{Name: h.cfg.Table, Family: nftables.TableFamilyBridge})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	fn()
	bindForTest(t, h, "bgtap7", h.bindings["bgtap7"])
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}
