package privhelper

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"banger/internal/dns"
	"banger/internal/network"
)

var webIP = netip.MustParseAddr("172.16.0.9")

// serveNames serves web.vm -> webIP on the passed sockets until the
// returned stop is called (which closes them and waits).
func serveNames(t *testing.T, pc net.PacketConn, l net.Listener) (stop func()) {
	t.Helper()
	resolver := dns.New(dns.Options{Upstreams: []string{}}) // never forwards
	resolver.Set("web", webIP)
	ctx, cancel := context.WithCancel(context.Background())
	if err := resolver.Serve(ctx, pc, l); err != nil {
		cancel()
		t.Fatal(err)
	}
	return func() { cancel(); resolver.Wait() }
}

// lookupWeb asks addr for web.vm over network ("udp" or "tcp").
func lookupWeb(t *testing.T, network, addr string) {
	t.Helper()
	m := new(miekg.Msg).SetQuestion("web.vm.", miekg.TypeA)
	c := &miekg.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query to %s: %v", network, addr, err)
	}
	if r.Rcode != miekg.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("%s query to %s: %v", network, addr, r)
	}
	if a, ok := r.Answer[0].(*miekg.A); !ok || a.A.String() != webIP.String() {
		t.Fatalf("%s query to %s: answer %v, want %s", network, addr, r.Answer[0], webIP)
	}
}

// TestDNSSocketsLoopback: descriptor passing on a loopback port (no root
// needed): the client gets a UDP and a TCP socket on the same address that a
// dns.Server can serve.
func TestDNSSocketsLoopback(t *testing.T) {
	cfg := network.Config{}
	ts := startServer(t, "", Options{Host: network.NewFake(cfg), Config: cfg, AllowUID: os.Getuid(),
		DNSAddr: netip.MustParseAddrPort("127.0.0.1:0")})
	pc, l, err := ts.client.DNSSockets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	if l.Addr().String() != addr {
		t.Fatalf("udp on %s, tcp on %s: want one address", addr, l.Addr())
	}
	stop := serveNames(t, pc, l)
	defer stop()
	lookupWeb(t, "udp", addr)
	lookupWeb(t, "tcp", addr)
}

// TestDNSSocketsBridgeAddress (root): in a fresh network namespace, the
// helper binds port 53 of the bridge address, once; the client's sockets
// answer queries sent from inside the namespace, and a second request (a
// restarted daemon) gets the very same sockets, which still work after the
// first copies were closed.
func TestDNSSocketsBridgeAddress(t *testing.T) {
	enterTestNetNS(t)
	// A Fake creates no bridge: make one with the bridge address.
	cfg := network.Config{CIDR: netip.MustParsePrefix("172.16.0.1/24")}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: cfg.WithDefaults().Bridge}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("172.16.0.1/24")
	if err := netlink.AddrAdd(br, addr); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	// NewServer (in startServer) runs on this thread: it binds in this
	// namespace whatever thread serves the request.
	ts := startServer(t, "", Options{Host: network.NewFake(cfg), Config: cfg, AllowUID: os.Getuid()})
	ctx := context.Background()

	pc, l, err := ts.client.DNSSockets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := pc.LocalAddr().String(); got != "172.16.0.1:53" || l.Addr().String() != got {
		t.Fatalf("sockets bound to %s and %s, want 172.16.0.1:53", got, l.Addr())
	}
	udpIno, tcpIno := inode(t, pc.(*net.UDPConn)), inode(t, l.(*net.TCPListener))
	stop := serveNames(t, pc, l)
	lookupWeb(t, "udp", "172.16.0.1:53")
	lookupWeb(t, "tcp", "172.16.0.1:53")
	stop() // the daemon goes away, closing its copies

	pc2, l2, err := ts.client.DNSSockets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if inode(t, pc2.(*net.UDPConn)) != udpIno || inode(t, l2.(*net.TCPListener)) != tcpIno {
		t.Fatal("second request got other sockets: the helper should bind once and keep them")
	}
	stop = serveNames(t, pc2, l2)
	defer stop()
	lookupWeb(t, "udp", "172.16.0.1:53")
	lookupWeb(t, "tcp", "172.16.0.1:53")
}

// TestDNSSocketsBeforeBridge (root): IP_FREEBIND lets the helper bind the
// bridge address before the bridge has it.
func TestDNSSocketsBeforeBridge(t *testing.T) {
	enterTestNetNS(t)
	cfg := network.Config{CIDR: netip.MustParsePrefix("10.77.0.1/24")}
	ts := startServer(t, "", Options{Host: network.NewFake(cfg), Config: cfg, AllowUID: os.Getuid()})
	pc, l, err := ts.client.DNSSockets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer l.Close()
	if got := pc.LocalAddr().String(); got != "10.77.0.1:53" {
		t.Fatalf("bound to %s", got)
	}
}
