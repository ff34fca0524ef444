package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// Every test sends traffic only to 127.0.0.0/8, and every Server under
// test gets explicit upstreams or a resolv.conf written by the test, so
// nothing is ever forwarded to the machine's real resolvers.

// start serves s on a fresh 127.0.0.1 port and returns that address.
func start(t *testing.T, s *Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.ListenAndServe(ctx, "127.0.0.1:0"); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); s.Wait() })
	addrs := s.Addrs()
	if len(addrs) != 1 {
		t.Fatalf("Addrs = %v", addrs)
	}
	return addrs[0].String()
}

func query(t *testing.T, network, addr, name string, qtype uint16) *miekg.Msg {
	t.Helper()
	m := new(miekg.Msg).SetQuestion(name, qtype)
	c := &miekg.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, miekg.TypeToString[qtype], err)
	}
	if r.Id != m.Id {
		t.Fatalf("response id %d, want %d", r.Id, m.Id)
	}
	return r
}

func wantA(t *testing.T, r *miekg.Msg, want string) {
	t.Helper()
	if r.Rcode != miekg.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("want one answer, got %v", r)
	}
	a, ok := r.Answer[0].(*miekg.A)
	if !ok || a.A.String() != want {
		t.Fatalf("want A %s, got %v", want, r.Answer[0])
	}
}

func wantRcode(t *testing.T, r *miekg.Msg, rcode int) {
	t.Helper()
	if r.Rcode != rcode {
		t.Fatalf("want %s, got %v", miekg.RcodeToString[rcode], r)
	}
}

// noForward is an upstream list that disables forwarding.
var noForward = []string{}

func TestKnownName(t *testing.T) {
	s := New(Options{Upstreams: noForward})
	s.Set("box", netip.MustParseAddr("172.16.0.2"))
	addr := start(t, s)
	for _, network := range []string{"udp", "tcp"} {
		r := query(t, network, addr, "box.vm.", miekg.TypeA)
		wantA(t, r, "172.16.0.2")
		if !r.Authoritative || r.Answer[0].Header().Ttl != uint32(DefaultTTL/time.Second) {
			t.Errorf("%s: not authoritative or wrong TTL: %v", network, r)
		}
	}
}

func TestCaseInsensitive(t *testing.T) {
	s := New(Options{Upstreams: noForward})
	s.Set("Box", netip.MustParseAddr("172.16.0.2"))
	addr := start(t, s)
	for _, name := range []string{"box.vm.", "BOX.VM.", "bOx.Vm."} {
		r := query(t, "udp", addr, name, miekg.TypeA)
		wantA(t, r, "172.16.0.2")
		if got := r.Answer[0].Header().Name; got != name {
			t.Errorf("answer owner %q, want the question's %q", got, name)
		}
	}
}

func TestUnknownAndRemoved(t *testing.T) {
	s := New(Options{Upstreams: noForward})
	s.Set("box", netip.MustParseAddr("172.16.0.2"))
	addr := start(t, s)
	r := query(t, "udp", addr, "nope.vm.", miekg.TypeA)
	wantRcode(t, r, miekg.RcodeNameError)
	if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != miekg.TypeSOA {
		t.Errorf("NXDOMAIN without SOA: %v", r)
	}
	wantRcode(t, query(t, "udp", addr, "www.box.vm.", miekg.TypeA), miekg.RcodeNameError)

	s.Remove("BOX")
	wantRcode(t, query(t, "udp", addr, "box.vm.", miekg.TypeA), miekg.RcodeNameError)
}

func TestReplace(t *testing.T) {
	s := New(Options{Upstreams: noForward})
	s.Set("old", netip.MustParseAddr("172.16.0.2"))
	s.Set("kept", netip.MustParseAddr("172.16.0.3"))
	addr := start(t, s)
	s.Replace(map[string]netip.Addr{
		"kept":    netip.MustParseAddr("172.16.0.4"),
		"new":     netip.MustParseAddr("172.16.0.5"),
		"invalid": {},
	})
	wantRcode(t, query(t, "udp", addr, "old.vm.", miekg.TypeA), miekg.RcodeNameError)
	wantA(t, query(t, "udp", addr, "kept.vm.", miekg.TypeA), "172.16.0.4")
	wantA(t, query(t, "udp", addr, "new.vm.", miekg.TypeA), "172.16.0.5")
	wantRcode(t, query(t, "udp", addr, "invalid.vm.", miekg.TypeA), miekg.RcodeNameError)
	s.Replace(nil)
	wantRcode(t, query(t, "udp", addr, "new.vm.", miekg.TypeA), miekg.RcodeNameError)
}

func TestAAAAAndOtherTypes(t *testing.T) {
	s := New(Options{Upstreams: noForward})
	s.Set("box", netip.MustParseAddr("172.16.0.2"))
	s.Set("six", netip.MustParseAddr("fd00::2"))
	addr := start(t, s)
	for _, qt := range []uint16{miekg.TypeAAAA, miekg.TypeMX, miekg.TypeTXT} {
		r := query(t, "udp", addr, "box.vm.", qt)
		wantRcode(t, r, miekg.RcodeSuccess)
		if len(r.Answer) != 0 || len(r.Ns) != 1 {
			t.Errorf("%s: want NODATA with SOA, got %v", miekg.TypeToString[qt], r)
		}
	}
	r := query(t, "udp", addr, "six.vm.", miekg.TypeAAAA)
	if len(r.Answer) != 1 || r.Answer[0].(*miekg.AAAA).AAAA.String() != "fd00::2" {
		t.Errorf("AAAA: %v", r)
	}
	if r := query(t, "udp", addr, "six.vm.", miekg.TypeA); r.Rcode != miekg.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("A of an IPv6-only name: %v", r)
	}
	r = query(t, "udp", addr, "vm.", miekg.TypeSOA)
	if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != miekg.TypeSOA {
		t.Errorf("SOA at the apex: %v", r)
	}
}

func TestCustomDomainAndPTR(t *testing.T) {
	s := New(Options{Domain: "Test.", Upstreams: noForward, TTL: 30 * time.Second})
	s.Set("box.test", netip.MustParseAddr("172.16.0.2"))
	addr := start(t, s)
	r := query(t, "udp", addr, "box.test.", miekg.TypeA)
	wantA(t, r, "172.16.0.2")
	if r.Answer[0].Header().Ttl != 30 {
		t.Errorf("TTL %d", r.Answer[0].Header().Ttl)
	}
	// .vm is now an ordinary name, forwarded (and refused: no upstreams).
	wantRcode(t, query(t, "udp", addr, "box.vm.", miekg.TypeA), miekg.RcodeRefused)
	r = query(t, "udp", addr, "2.0.16.172.in-addr.arpa.", miekg.TypePTR)
	if len(r.Answer) != 1 || r.Answer[0].(*miekg.PTR).Ptr != "box.test." {
		t.Errorf("PTR: %v", r)
	}
}

func TestParseReverse(t *testing.T) {
	for name, want := range map[string]string{
		"2.0.16.172.in-addr.arpa.": "172.16.0.2",
		"2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.": "fd00::2",
		"0.16.172.in-addr.arpa.":   "",
		"x.0.16.172.in-addr.arpa.": "",
		"example.com.":             "",
	} {
		a, ok := parseReverse(name)
		if (want == "") == ok || (ok && a.String() != want) {
			t.Errorf("%s: %v %v, want %q", name, a, ok, want)
		}
	}
}

// upstream is a fake resolver on 127.0.0.1 that answers every A query
// with 192.0.2.1 (or rcode, when set) and counts the queries.
type upstream struct {
	addr    string
	queries atomic.Int32
	rcode   int
	relay   atomic.Value // string: if set, relay every query there instead
}

func (u *upstream) ServeDNS(w miekg.ResponseWriter, req *miekg.Msg) {
	u.queries.Add(1)
	if relay, _ := u.relay.Load().(string); relay != "" {
		c := &miekg.Client{Timeout: 5 * time.Second}
		r, _, err := c.Exchange(req, relay)
		if err != nil {
			return
		}
		w.WriteMsg(r)
		return
	}
	m := new(miekg.Msg).SetRcode(req, u.rcode)
	if u.rcode == miekg.RcodeSuccess && req.Question[0].Qtype == miekg.TypeA {
		m.Answer = append(m.Answer, &miekg.A{
			Hdr: miekg.RR_Header{Name: req.Question[0].Name, Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: 60},
			A:   net.IPv4(192, 0, 2, 1),
		})
	}
	w.WriteMsg(m)
}

// startUpstream runs u on addr (a 127.0.0.0/8 address) for UDP and TCP.
func startUpstream(t *testing.T, u *upstream, addr string) {
	t.Helper()
	pc, l, err := listenPair(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	u.addr = l.Addr().String()
	for _, srv := range []*miekg.Server{{PacketConn: pc, Handler: u}, {Listener: l, Handler: u}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
}

// deadAddr returns a 127.0.0.1 address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestForward(t *testing.T) {
	up := &upstream{}
	startUpstream(t, up, "127.0.0.1:0")
	s := New(Options{Upstreams: []string{up.addr}})
	s.Set("box", netip.MustParseAddr("172.16.0.2"))
	addr := start(t, s)
	for _, network := range []string{"udp", "tcp"} {
		r := query(t, network, addr, "example.com.", miekg.TypeA)
		wantA(t, r, "192.0.2.1")
		if r.Authoritative {
			t.Errorf("forwarded answer marked authoritative")
		}
	}
	if n := up.queries.Load(); n != 2 {
		t.Errorf("upstream saw %d queries, want 2", n)
	}
	// Names in the banger domain never reach the upstream.
	query(t, "udp", addr, "box.vm.", miekg.TypeA)
	query(t, "udp", addr, "unknown.vm.", miekg.TypeA)
	query(t, "udp", addr, "vm.", miekg.TypeNS)
	if n := up.queries.Load(); n != 2 {
		t.Errorf("banger domain forwarded: upstream saw %d queries", n)
	}
	// A PTR for an address that is not a VM's is forwarded.
	query(t, "udp", addr, "9.9.16.172.in-addr.arpa.", miekg.TypePTR)
	if n := up.queries.Load(); n != 3 {
		t.Errorf("upstream saw %d queries, want 3", n)
	}
}

func TestForwardTriesEachUpstream(t *testing.T) {
	failing := &upstream{rcode: miekg.RcodeServerFailure}
	startUpstream(t, failing, "127.0.0.1:0")
	good := &upstream{}
	startUpstream(t, good, "127.0.0.1:0")
	s := New(Options{Upstreams: []string{deadAddr(t), failing.addr, good.addr}, Timeout: 500 * time.Millisecond})
	addr := start(t, s)
	wantA(t, query(t, "udp", addr, "example.com.", miekg.TypeA), "192.0.2.1")
	if failing.queries.Load() != 1 || good.queries.Load() != 1 {
		t.Errorf("queries: failing %d, good %d", failing.queries.Load(), good.queries.Load())
	}
}

func TestForwardServfailWhenUpstreamDown(t *testing.T) {
	// One upstream refuses the connection, the other never answers.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	s := New(Options{Upstreams: []string{deadAddr(t), silent.LocalAddr().String()}, Timeout: 300 * time.Millisecond})
	addr := start(t, s)
	begin := time.Now()
	wantRcode(t, query(t, "udp", addr, "example.com.", miekg.TypeA), miekg.RcodeServerFailure)
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("SERVFAIL took %v", d)
	}
	wantRcode(t, query(t, "tcp", addr, "example.com.", miekg.TypeA), miekg.RcodeServerFailure)
}

func TestNeverForwardsToItself(t *testing.T) {
	// Listen on a known port and name that same address as the upstream.
	port := freePort(t)
	self := "127.0.0.1:" + port
	s := New(Options{Upstreams: []string{self}})
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); s.Wait() }()
	if err := s.ListenAndServe(ctx, self); err != nil {
		t.Fatal(err)
	}
	wantRcode(t, query(t, "udp", self, "example.com.", miekg.TypeA), miekg.RcodeServerFailure)

	// The same for a wildcard listener and a loopback upstream.
	s.mu.Lock()
	s.bound = []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:" + port)}
	s.mu.Unlock()
	if ups := s.usableUpstreams(); len(ups) != 0 {
		t.Errorf("wildcard listener: upstreams %v", ups)
	}
}

// freePort returns a port free for TCP and UDP on 127.0.0.1.
func freePort(t *testing.T) string {
	t.Helper()
	pc, l, err := listenPair(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	pc.Close()
	l.Close()
	return port
}

func TestForwardingLoopIsCut(t *testing.T) {
	// The upstream relays every query back to the server: a resolver
	// misconfigured to send everything to banger.
	relay := &upstream{}
	startUpstream(t, relay, "127.0.0.1:0")
	s := New(Options{Upstreams: []string{relay.addr}, Timeout: 3 * time.Second})
	addr := start(t, s)
	relay.relay.Store(addr)
	begin := time.Now()
	wantRcode(t, query(t, "udp", addr, "loop.example.", miekg.TypeA), miekg.RcodeServerFailure)
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("loop took %v to cut", d)
	}
	if n := relay.queries.Load(); n != maxSameInflight {
		t.Errorf("relay saw %d queries, want %d", n, maxSameInflight)
	}
	// The counters are back to zero afterwards.
	s.mu.Lock()
	left := len(s.inflight)
	s.mu.Unlock()
	if left != 0 {
		t.Errorf("%d in-flight entries left", left)
	}
}

func TestPortInUse(t *testing.T) {
	// TCP taken.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := New(Options{Upstreams: noForward})
	err = s.ListenAndServe(context.Background(), l.Addr().String())
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("tcp port in use: %v", err)
	}

	// UDP taken: the TCP socket bound first must be released again.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	err = s.ListenAndServe(context.Background(), pc.LocalAddr().String())
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("udp port in use: %v", err)
	}
	if l2, err := net.Listen("tcp", pc.LocalAddr().String()); err != nil {
		t.Errorf("tcp socket leaked after a udp clash: %v", err)
	} else {
		l2.Close()
	}
	if a := s.Addrs(); len(a) != 0 {
		t.Errorf("Addrs after failures: %v", a)
	}
}

func TestShutdownReleasesPort(t *testing.T) {
	s := New(Options{Upstreams: noForward})
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.ListenAndServe(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()[0].String()
	cancel()
	s.Wait()
	if a := s.Addrs(); len(a) != 0 {
		t.Errorf("Addrs after shutdown: %v", a)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer func() { cancel2(); s.Wait() }()
	if err := s.ListenAndServe(ctx2, addr); err != nil {
		t.Fatalf("rebind after shutdown: %v", err)
	}
}

func TestServeTwoAddresses(t *testing.T) {
	s := New(Options{Upstreams: noForward})
	s.Set("box", netip.MustParseAddr("172.16.0.2"))
	a1 := start(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // runs before start's cleanup, which waits
	if err := s.ListenAndServe(ctx, "127.0.0.2:0"); err != nil {
		t.Skipf("127.0.0.2 not usable here: %v", err)
	}
	a2 := s.Addrs()[1].String()
	for _, a := range []string{a1, a2} {
		wantA(t, query(t, "tcp", a, "box.vm.", miekg.TypeA), "172.16.0.2")
	}
}

func TestHandlerMalformed(t *testing.T) {
	s := New(Options{Upstreams: noForward})
	m := new(miekg.Msg)
	m.Id = 7
	if r := s.answer(context.Background(), m, "udp", true, nil); r.Rcode != miekg.RcodeFormatError {
		t.Errorf("no question: %v", r)
	}
	m.SetQuestion("box.vm.", miekg.TypeA)
	m.Opcode = miekg.OpcodeUpdate
	if r := s.answer(context.Background(), m, "udp", true, nil); r.Rcode != miekg.RcodeNotImplemented {
		t.Errorf("update: %v", r)
	}
	m.Opcode = miekg.OpcodeQuery
	m.Response = true
	if r := s.answer(context.Background(), m, "udp", true, nil); r != nil {
		t.Errorf("answered a response: %v", r)
	}
	if s.Handler() == nil {
		t.Error("no handler")
	}
}

func TestEDNS(t *testing.T) {
	s := New(Options{Upstreams: noForward})
	s.Set("box", netip.MustParseAddr("172.16.0.2"))
	addr := start(t, s)
	m := new(miekg.Msg).SetQuestion("box.vm.", miekg.TypeA)
	m.SetEdns0(4096, false)
	r, _, err := (&miekg.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	wantA(t, r, "172.16.0.2")
	if r.IsEdns0() == nil {
		t.Errorf("EDNS query answered without OPT: %v", r)
	}
}

func TestParseResolvConf(t *testing.T) {
	got := ParseResolvConf([]byte(`# generated
nameserver 127.0.0.53
nameserver  10.0.0.1 # office
; comment
nameserver fe80::1%eth0
nameserver not-an-ip
nameserver 10.0.0.1
search example.com
options edns0 trust-ad
`))
	want := []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.53:53"),
		netip.MustParseAddrPort("10.0.0.1:53"),
		netip.MustParseAddrPort("[fe80::1%eth0]:53"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestParseUpstream(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5353": "127.0.0.1:5353",
		"127.0.0.1":      "127.0.0.1:53",
		"[::1]:54":       "[::1]:54",
		"::1":            "[::1]:53",
		"[::1]":          "[::1]:53",
		"dns.google:53":  "",
	} {
		got, err := parseUpstream(in)
		if (err != nil) != (want == "") || (err == nil && got.String() != want) {
			t.Errorf("%q: %v %v, want %q", in, got, err, want)
		}
	}
}

// TestResolvConfUpstreams forwards through nameservers read from a
// resolv.conf, which implies port 53: it binds 127.0.0.77:53 and
// 127.0.0.78:53 (loopback), and skips where that is not allowed.
func TestResolvConfUpstreams(t *testing.T) {
	first, second := &upstream{}, &upstream{rcode: miekg.RcodeNameError}
	for _, u := range []struct {
		up   *upstream
		addr string
	}{{first, "127.0.0.77:53"}, {second, "127.0.0.78:53"}} {
		pc, l, err := listenPair(context.Background(), u.addr)
		if err != nil {
			t.Skipf("cannot bind %s: %v", u.addr, err)
		}
		pc.Close()
		l.Close()
		startUpstream(t, u.up, u.addr)
	}
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 127.0.0.77\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := New(Options{ResolvConf: conf})
	addr := start(t, s)
	wantA(t, query(t, "udp", addr, "example.com.", miekg.TypeA), "192.0.2.1")

	// A rewritten resolv.conf is picked up.
	if err := os.WriteFile(conf, []byte("nameserver 127.0.0.78\n# changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantRcode(t, query(t, "udp", addr, "example.com.", miekg.TypeA), miekg.RcodeNameError)
	if first.queries.Load() != 1 || second.queries.Load() != 1 {
		t.Errorf("queries: %d, %d", first.queries.Load(), second.queries.Load())
	}

	// No resolv.conf at all: SERVFAIL, nothing forwarded.
	os.Remove(conf)
	wantRcode(t, query(t, "udp", addr, "example.com.", miekg.TypeA), miekg.RcodeServerFailure)
}

// On a guest socket, queries outside the domain are forwarded only for the
// clients named with SetForwarders (guests with NAT); every other guest
// gets REFUSED and the upstream sees nothing: the resolver is no tunnel.
// Names in the domain are answered for everyone.
func TestGuestSocketsForwardOnlyForForwarders(t *testing.T) {
	up := &upstream{}
	startUpstream(t, up, "127.0.0.1:0")
	s := New(Options{Upstreams: []string{up.addr}})
	s.Set("box", netip.MustParseAddr("172.16.0.2"))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); s.Wait() })
	// The client is 127.0.0.1 (a stand-in for a guest address).
	if err := s.ListenAndServeGuests(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()[0].String()
	client := netip.MustParseAddr("127.0.0.1")
	for _, network := range []string{"udp", "tcp"} {
		wantRcode(t, query(t, network, addr, "example.com.", miekg.TypeA), miekg.RcodeRefused)
		wantRcode(t, query(t, network, addr, "tunnel-data.attacker.example.", miekg.TypeTXT), miekg.RcodeRefused)
		wantRcode(t, query(t, network, addr, "9.9.16.172.in-addr.arpa.", miekg.TypePTR), miekg.RcodeRefused)
		wantA(t, query(t, network, addr, "box.vm.", miekg.TypeA), "172.16.0.2")
	}
	if n := up.queries.Load(); n != 0 {
		t.Fatalf("upstream saw %d queries from a client that may not forward", n)
	}
	s.SetForwarders([]netip.Addr{netip.MustParseAddr("172.16.0.9"), client})
	wantA(t, query(t, "udp", addr, "example.com.", miekg.TypeA), "192.0.2.1")
	if n := up.queries.Load(); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1", n)
	}
	s.SetForwarders(nil)
	wantRcode(t, query(t, "udp", addr, "example.com.", miekg.TypeA), miekg.RcodeRefused)
	// The host's own socket (Serve/ListenAndServe) forwards for anyone.
	host := start(t, New(Options{Upstreams: []string{up.addr}}))
	wantA(t, query(t, "udp", host, "example.com.", miekg.TypeA), "192.0.2.1")
}

type recordingFilter struct {
	mu      sync.Mutex
	allow   map[string]bool
	answers map[string][]netip.Addr
}

func (f *recordingFilter) AllowsResolve(name string) bool { return f.allow[name] }
func (f *recordingFilter) RecordAnswer(name string, addrs []netip.Addr, ttl time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[name] = addrs
}

// A filtered guest (egress allow policy) gets NXDOMAIN for names outside
// its policy, never forwarded (no tunnel through the resolver); allowed
// names are forwarded and the answers reported to the filter.
func TestGuestFilter(t *testing.T) {
	up := &upstream{}
	startUpstream(t, up, "127.0.0.1:0")
	s := New(Options{Upstreams: []string{up.addr}})
	s.Set("box", netip.MustParseAddr("172.16.0.2"))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); s.Wait() })
	if err := s.ListenAndServeGuests(ctx, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()[0].String()
	f := &recordingFilter{allow: map[string]bool{"api.test.": true}, answers: map[string][]netip.Addr{}}
	s.SetFilters(map[netip.Addr]GuestFilter{netip.MustParseAddr("127.0.0.1"): f})
	for _, network := range []string{"udp", "tcp"} {
		wantRcode(t, query(t, network, addr, "example.com.", miekg.TypeA), miekg.RcodeNameError)
		wantRcode(t, query(t, network, addr, "tunnel-data.attacker.example.", miekg.TypeTXT), miekg.RcodeNameError)
		wantRcode(t, query(t, network, addr, "9.9.16.172.in-addr.arpa.", miekg.TypePTR), miekg.RcodeNameError)
		wantA(t, query(t, network, addr, "box.vm.", miekg.TypeA), "172.16.0.2")
	}
	if n := up.queries.Load(); n != 0 {
		t.Fatalf("upstream saw %d queries for names outside the policy", n)
	}
	wantA(t, query(t, "udp", addr, "API.test.", miekg.TypeA), "192.0.2.1")
	f.mu.Lock()
	got := f.answers["api.test"]
	f.mu.Unlock()
	if len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("recorded %v", f.answers)
	}
	s.SetFilters(nil)
	wantRcode(t, query(t, "udp", addr, "api.test.", miekg.TypeA), miekg.RcodeRefused)
}
