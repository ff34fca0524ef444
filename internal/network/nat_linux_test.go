package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// natTimeout bounds every connection attempt that is expected to fail.
const natTimeout = time.Second

// addVeth creates a veth pair in the current namespace whose peer is moved
// into peerNS, and configures the local end (address, master, up).
func addVeth(t *testing.T, name, peer string, peerNS netns.NsHandle, addr string, master netlink.Link) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: peer, PeerNamespace: netlink.NsFd(int(peerNS))}); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if addr != "" {
		a, _ := netlink.ParseAddr(addr)
		if err := netlink.AddrAdd(link, a); err != nil {
			t.Fatal(err)
		}
	}
	if master != nil {
		if err := netlink.LinkSetMaster(link, master); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
}

// configurePeer gives the peer end of a veth, inside ns, an address, brings
// it up and optionally adds a default route.
func configurePeer(t *testing.T, ns netns.NsHandle, name, addr, gateway string) {
	t.Helper()
	err := inNetNS(ns, func() error {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(addr)
		if err := netlink.AddrAdd(link, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		if gateway == "" {
			return nil
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(gateway)})
	})
	if err != nil {
		t.Fatalf("configure %s: %v", name, err)
	}
}

// listenIn opens a TCP listener inside ns.
func listenIn(t *testing.T, ns netns.NsHandle, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := inNetNS(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dialFrom connects from inside ns.
func dialFrom(ctx context.Context, ns netns.NsHandle, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetNS(ns, func() (err error) {
		c, err = (&net.Dialer{Timeout: natTimeout}).DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// TestNATForReal builds, all inside namespaces created here:
//
//	guest ns: eth0 172.16.0.2/24, default via 172.16.0.1
//	   | veth (stands in for a tap)
//	test ns: banger0 172.16.0.1/24 (the Host) ... uplink 10.250.0.1/30
//	   | veth
//	uplink ns: eth0 10.250.0.2/30, HTTP and echo servers, no route back to 172.16.0.0/24
//
// and shows that the guest reaches the uplink servers only while it is in
// SetNAT's set, masqueraded to 10.250.0.1, and that losing NAT also ends an
// established connection.
func TestNATForReal(t *testing.T) {
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

	web := listenIn(t, uplinkNS, "10.250.0.2:0")
	go http.Serve(web, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprint(w, host)
	}))
	echo := listenIn(t, uplinkNS, "10.250.0.2:0")
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	// Something on the host side of the bridge, to show the guest network
	// itself works whatever NAT says: the one port guests may reach on
	// the host, DNS. The test goroutine's thread is in the test namespace.
	local, err := net.Listen("tcp", "172.16.0.1:53")
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	go func() {
		for {
			c, err := local.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	client := &http.Client{Timeout: 2 * natTimeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialFrom(ctx, guestNS, addr)
		},
	}}
	get := func() (string, error) {
		resp, err := client.Get("http://" + web.Addr().String() + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	// The first connection also waits for ARP on a link just made: on a
	// loaded machine (the unit tests run packages in parallel) that can
	// outlast one natTimeout, so it gets a few.
	var c net.Conn
	for attempt := 0; ; attempt++ {
		if c, err = dialFrom(bg, guestNS, local.Addr().String()); err == nil || attempt == 4 {
			break
		}
	}
	if err != nil {
		t.Fatalf("guest cannot reach the bridge address: %v", err)
	}
	c.Close()

	// No NAT: the forward chain drops the guest's SYN.
	if body, err := get(); !isTimeout(err) {
		t.Fatalf("guest without NAT got %q, %v; want a timeout", body, err)
	}

	if err := h.SetNAT(bg, []netip.Addr{guestA}); err != nil {
		t.Fatal(err)
	}
	body, err := get()
	if err != nil {
		t.Fatalf("guest with NAT: %v", err)
	}
	if body != "10.250.0.1" {
		t.Fatalf("uplink server saw the guest as %q, want the masqueraded 10.250.0.1", body)
	}

	// An established connection ends with NAT.
	conn, err := dialFrom(bg, guestNS, echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip := func(msg string) error {
		if _, err := conn.Write([]byte(msg)); err != nil {
			return err
		}
		conn.SetReadDeadline(time.Now().Add(natTimeout))
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	if err := roundTrip("ping1"); err != nil {
		t.Fatalf("echo with NAT: %v", err)
	}
	if err := h.SetNAT(bg, nil); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip("ping2"); !isTimeout(err) {
		t.Fatalf("echo on an established connection after NAT removal: %v, want a timeout", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && (errors.As(err, &ne) && ne.Timeout() || strings.Contains(err.Error(), "Timeout"))
}
