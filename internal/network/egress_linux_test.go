package network

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestEgressForReal: in namespaces made here (as TestNATForReal), a
// filtered guest reaches the uplink only on its allowed network and port,
// its TCP 80 lands on the proxy port of the bridge address whatever the
// destination, the kernel holds exactly EgressRuleset (RulesInSync), and
// clearing the egress removes every rule and cuts established flows.
func TestEgressForReal(t *testing.T) {
	enterTestNetNS(t)
	h := newTestHost(t, Config{TapPoolSize: -1})
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	guestNS, uplinkNS := newNetNS(t), newNetNS(t)
	br, err := netlink.LinkByName("banger0")
	if err != nil {
		t.Fatal(err)
	}
	addVeth(t, "gveth", "eth0", guestNS, "", br)
	configurePeer(t, guestNS, "eth0", "172.16.0.2/24", "172.16.0.1")
	addVeth(t, "uplink", "eth0", uplinkNS, "10.250.0.1/30", nil)
	configurePeer(t, uplinkNS, "eth0", "10.250.0.2/30", "")

	serve := func(ln net.Listener, greeting string) {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.Write([]byte(greeting))
					io.Copy(c, c)
				}()
			}
		}()
	}
	allowed := listenIn(t, uplinkNS, "10.250.0.2:0")
	serve(allowed, "allowed\n")
	other := listenIn(t, uplinkNS, "10.250.0.2:0")
	serve(other, "other\n")
	web := listenIn(t, uplinkNS, "10.250.0.2:80")
	serve(web, "web\n")
	proxy, err := net.Listen("tcp", "172.16.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	serve(proxy, "proxy\n")
	proxyPort := uint16(proxy.Addr().(*net.TCPAddr).Port)
	allowedPort := uint16(allowed.Addr().(*net.TCPAddr).Port)

	greet := func(addr string) (net.Conn, string, error) {
		var c net.Conn
		var err error
		for attempt := 0; attempt < 3; attempt++ { // the first one waits for ARP
			if c, err = dialFrom(bg, guestNS, addr); err == nil {
				break
			}
		}
		if err != nil {
			return nil, "", err
		}
		c.SetReadDeadline(time.Now().Add(2 * natTimeout))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		return c, string(buf[:n]), err
	}
	eg := Egress{ProxyPort: proxyPort, Guests: []GuestEgress{{IP: guestA,
		Allow: []NetAllow{{Net: netip.MustParsePrefix("10.250.0.2/32"), Proto: "tcp", Port: allowedPort}}}}}
	if err := h.SetEgress(bg, nil, eg); err != nil {
		t.Fatal(err)
	}
	st, err := h.State(bg)
	if err != nil || !st.RulesInSync || len(st.NATGuests) != 0 {
		t.Fatalf("state after SetEgress: %+v, %v", st, err)
	}
	c, got, err := greet(allowed.Addr().String())
	if err != nil || got != "allowed\n" {
		t.Fatalf("allowed port: %q, %v", got, err)
	}
	defer c.Close()
	if _, got, err := greet(other.Addr().String()); err == nil {
		t.Fatalf("other port reached: %q", got)
	}
	if c2, got, err := greet("10.250.0.2:80"); err != nil || got != "proxy\n" {
		t.Fatalf("port 80 went to %q, %v; want the proxy", got, err)
	} else {
		c2.Close()
	}
	// A SetNAT (another VM) keeps the filtered guest.
	if err := h.SetNAT(bg, nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.State(bg); !st.RulesInSync {
		t.Fatalf("after SetNAT: rules out of sync")
	}
	if c3, got, err := greet(allowed.Addr().String()); err != nil || got != "allowed\n" {
		t.Fatalf("after SetNAT: %q, %v", got, err)
	} else {
		c3.Close()
	}

	// Clear: no egress chain left, the established flow is cut.
	if err := h.SetEgress(bg, nil, Egress{}); err != nil {
		t.Fatal(err)
	}
	st, _ = h.State(bg)
	want, _ := Ruleset(h.cfg, nil)
	if !st.RulesInSync {
		t.Fatalf("after clearing: rules out of sync")
	}
	for _, ch := range want.Chains {
		if ch.Name == ChainEgressPre || ch.Name == ChainEgressPost {
			t.Fatalf("egress chain left: %v", want.Chains)
		}
	}
	c.Write([]byte("ping\n"))
	c.SetReadDeadline(time.Now().Add(natTimeout))
	if n, err := c.Read(make([]byte, 8)); !isTimeout(err) {
		t.Fatalf("established flow survived clearing: %d, %v", n, err)
	}
	if _, got, err := greet("10.250.0.2:" + strconv.Itoa(int(allowedPort))); err == nil {
		t.Fatalf("after clearing, allowed port still reached: %q", got)
	}
}
