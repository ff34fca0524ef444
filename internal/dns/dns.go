// Package dns is banger's resolver for VM names. It answers queries for
// NAME.vm (the domain is configurable) from the daemon's records and
// forwards every other query to the host's resolvers, so it can serve both
// the host (through systemd-resolved's per-link routing of ~vm) and the
// guests (as the nameserver on the bridge address).
//
// Names in the banger domain are never forwarded: a known name gets its
// address, an unknown one NXDOMAIN. On the sockets that serve guests
// (ServeGuests, ListenAndServeGuests) other queries are forwarded only for
// the clients named with SetForwarders (the guests allowed out, with NAT);
// every other guest gets REFUSED, so the resolver is no tunnel out of a
// guest without NAT. The client's address is trusted because the bridge
// drops frames a guest sends from any address but its own. Forwarded queries go to each upstream
// in turn with a short timeout; SERVFAIL comes back when none answers.
// Two rules keep a query from looping back into the server: upstreams that
// are one of the server's own listen addresses are skipped, and a question
// that is already being forwarded too many times at once (which is what a
// loop through another resolver looks like) is answered with SERVFAIL
// instead of being forwarded again.
package dns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	miekg "github.com/miekg/dns"
)

// Defaults for Options.
const (
	DefaultDomain     = "vm"
	DefaultTTL        = 5 * time.Second
	DefaultTimeout    = 2 * time.Second
	DefaultResolvConf = "/etc/resolv.conf"
)

// maxSameInflight is how many forwards of one question may be outstanding
// at once. A legitimate burst of identical questions rarely exceeds a few;
// a forwarding loop (us -> another resolver -> us) adds one per hop within
// milliseconds, so the cap ends it after a handful of hops.
const maxSameInflight = 8

// ednsSize is the UDP payload size advertised in our own answers (the
// DNS flag day 2020 value).
const ednsSize = 1232

// Options configure a Server.
type Options struct {
	// Domain is the zone of VM names, without dots; default "vm".
	Domain string
	// Upstreams are the resolvers other queries are forwarded to, as
	// IP:port ("[::1]:53" for IPv6) or a bare IP for port 53. When nil,
	// the nameservers listed in ResolvConf are used, re-read whenever the
	// file changes. A non-nil empty slice disables forwarding: queries
	// outside the domain are then REFUSED.
	Upstreams []string
	// ResolvConf is the file read when Upstreams is nil; default
	// /etc/resolv.conf.
	ResolvConf string
	// TTL of answers, and of negative answers (the SOA minimum); default
	// 5s, short so that a VM created or deleted is seen at once.
	TTL time.Duration
	// Timeout bounds one attempt at one upstream; default 2s.
	Timeout time.Duration
	// Log receives forwarding problems; nil discards them.
	Log *slog.Logger
}

// Server answers DNS queries for VM names and forwards the rest. Its
// methods are safe for concurrent use. The zero value is not usable: call
// New.
type Server struct {
	zone       string // "vm.", lowercase
	ttl        uint32
	timeout    time.Duration
	upstreams  []netip.AddrPort // explicit upstreams, when fixed is true
	fixed      bool             // Options.Upstreams was non-nil
	resolvConf string
	log        *slog.Logger

	recMu   sync.RWMutex
	records map[string]netip.Addr // lowercase label -> address
	// forwarders are the guests whose queries outside the domain are
	// forwarded when they arrive on a guest socket; guarded by recMu.
	forwarders map[netip.Addr]bool
	// filters are the guests under an egress allow policy: their queries
	// outside the domain are forwarded only for names the filter allows
	// (NXDOMAIN otherwise), and the answers are reported to it; guarded
	// by recMu.
	filters map[netip.Addr]GuestFilter

	mu       sync.Mutex
	bound    []netip.AddrPort           // addresses currently served
	inflight map[inflightKey]int        // forwards outstanding per question
	resolv   resolvCache                // parsed ResolvConf
	ifAddrs  func() ([]net.Addr, error) // local interface addresses

	wg sync.WaitGroup // one per Serve still running
}

type inflightKey struct {
	name   string
	qtype  uint16
	qclass uint16
}

type resolvCache struct {
	modTime time.Time
	size    int64
	loaded  bool
	servers []netip.AddrPort
}

// New returns a server with no records. Invalid entries in
// opts.Upstreams are logged and skipped.
func New(opts Options) *Server {
	s := &Server{
		zone:       miekg.Fqdn(strings.ToLower(strings.Trim(orDefault(opts.Domain, DefaultDomain), "."))),
		ttl:        uint32(orDefaultDur(opts.TTL, DefaultTTL) / time.Second),
		timeout:    orDefaultDur(opts.Timeout, DefaultTimeout),
		fixed:      opts.Upstreams != nil,
		resolvConf: orDefault(opts.ResolvConf, DefaultResolvConf),
		log:        opts.Log,
		records:    map[string]netip.Addr{},
		inflight:   map[inflightKey]int{},
		ifAddrs:    net.InterfaceAddrs,
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for _, u := range opts.Upstreams {
		ap, err := parseUpstream(u)
		if err != nil {
			s.log.Warn("dns: ignoring upstream", "upstream", u, "err", err)
			continue
		}
		s.upstreams = append(s.upstreams, ap)
	}
	return s
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func orDefaultDur(v, d time.Duration) time.Duration {
	if v <= 0 {
		return d
	}
	return v
}

// parseUpstream accepts IP:port or a bare IP (port 53).
func parseUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("upstream %q is not an IP address or IP:port", s)
	}
	return netip.AddrPortFrom(a.Unmap(), 53), nil
}

// label normalises a VM name to the key of the records map: lowercase,
// without a trailing dot or domain.
func (s *Server) label(name string) string {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	return strings.TrimSuffix(name, "."+strings.TrimSuffix(s.zone, "."))
}

// Set makes NAME.domain resolve to addr (an A record for an IPv4 address,
// AAAA for IPv6). name is the VM name; case does not matter. An invalid
// addr removes the name.
func (s *Server) Set(name string, addr netip.Addr) {
	if !addr.IsValid() {
		s.Remove(name)
		return
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.records[s.label(name)] = addr.Unmap()
}

// Remove forgets name; queries for it then get NXDOMAIN.
func (s *Server) Remove(name string) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	delete(s.records, s.label(name))
}

// Replace swaps in records as the complete set of names, atomically: a
// concurrent query sees either the old set or the new one. Entries with an
// invalid address are left out.
func (s *Server) Replace(records map[string]netip.Addr) {
	m := make(map[string]netip.Addr, len(records))
	for name, addr := range records {
		if addr.IsValid() {
			m[s.label(name)] = addr.Unmap()
		}
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.records = m
}

// SetForwarders replaces the set of guest addresses whose queries outside
// the banger domain are forwarded on the guest sockets. Other guests get
// REFUSED for them.
func (s *Server) SetForwarders(clients []netip.Addr) {
	m := make(map[netip.Addr]bool, len(clients))
	for _, c := range clients {
		m[c.Unmap()] = true
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.forwarders = m
}

// Upstreams returns the servers forwarded queries go to now (the
// configured ones, or /etc/resolv.conf's, never this server itself).
func (s *Server) Upstreams() []netip.AddrPort { return s.usableUpstreams() }

// GuestFilter decides which names a guest under an egress policy may
// resolve, and learns what it was told (the egress proxy checks
// transparent connections against those answers).
type GuestFilter interface {
	AllowsResolve(name string) bool
	RecordAnswer(name string, addrs []netip.Addr, ttl time.Duration)
}

// SetFilters replaces the set of filtered guests (see GuestFilter). A
// filtered guest's names are forwarded whether or not SetForwarders
// names it.
func (s *Server) SetFilters(filters map[netip.Addr]GuestFilter) {
	m := make(map[netip.Addr]GuestFilter, len(filters))
	for a, f := range filters {
		m[a.Unmap()] = f
	}
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.filters = m
}

func (s *Server) filterFor(client netip.Addr) GuestFilter {
	s.recMu.RLock()
	defer s.recMu.RUnlock()
	return s.filters[client.Unmap()]
}

// mayForward reports whether a query from client, received on a guest
// socket, may be forwarded.
func (s *Server) mayForward(client netip.Addr) bool {
	s.recMu.RLock()
	defer s.recMu.RUnlock()
	return s.forwarders[client.Unmap()]
}

func (s *Server) lookup(label string) (netip.Addr, bool) {
	s.recMu.RLock()
	defer s.recMu.RUnlock()
	a, ok := s.records[label]
	return a, ok
}

// namesFor returns the labels whose address is a, sorted.
func (s *Server) namesFor(a netip.Addr) []string {
	s.recMu.RLock()
	defer s.recMu.RUnlock()
	var names []string
	for n, addr := range s.records {
		if addr == a {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Handler returns the query handler, for use with a miekg/dns server or
// directly in tests. Forwarded queries are bounded only by the per-upstream
// timeout.
func (s *Server) Handler() miekg.Handler { return handler{s: s, ctx: context.Background()} }

// GuestHandler is Handler as the guest sockets serve it: queries outside the
// domain are forwarded only for the clients named with SetForwarders.
func (s *Server) GuestHandler() miekg.Handler {
	return handler{s: s, ctx: context.Background(), guests: true}
}

// ListenAndServeGuests is ListenAndServe for guests (see GuestHandler).
func (s *Server) ListenAndServeGuests(ctx context.Context, addr string) error {
	pc, l, err := listenPair(ctx, addr)
	if err != nil {
		return fmt.Errorf("serve dns on %s: %w", addr, err)
	}
	return s.serve(ctx, pc, l, true)
}

// ServeGuests is Serve for guests (see GuestHandler).
func (s *Server) ServeGuests(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	return s.serve(ctx, pc, l, true)
}

// ListenAndServe binds addr (e.g. "127.0.0.1:42069" or "172.16.0.1:53")
// for UDP and TCP and serves queries on both until ctx ends. It returns as
// soon as both sockets are bound, so a port already in use is an immediate
// error; with port 0, UDP and TCP get the same port. Use Addrs to learn
// the bound address and Wait to wait for the shutdown after ctx ends. It
// may be called several times to serve several addresses.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	pc, l, err := listenPair(ctx, addr)
	if err != nil {
		return fmt.Errorf("serve dns on %s: %w", addr, err)
	}
	return s.Serve(ctx, pc, l)
}

// Serve serves queries on already bound sockets (either may be nil) until
// ctx ends, then closes them. It returns once serving has started. It lets
// a privileged helper bind port 53 and hand the sockets over.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	return s.serve(ctx, pc, l, false)
}

func (s *Server) serve(ctx context.Context, pc net.PacketConn, l net.Listener, guests bool) error {
	if pc == nil && l == nil {
		return errors.New("serve dns: no sockets")
	}
	h := handler{s: s, ctx: ctx, guests: guests}
	var (
		servers []*miekg.Server
		addrs   []netip.AddrPort
	)
	if pc != nil {
		servers = append(servers, &miekg.Server{PacketConn: pc, Handler: h})
		addrs = append(addrs, addrPortOf(pc.LocalAddr()))
	}
	if l != nil {
		servers = append(servers, &miekg.Server{Listener: l, Handler: h})
		if a := addrPortOf(l.Addr()); !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}

	// Wait until every server is started, so that shutting them down
	// cannot race with their start.
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			for _, other := range servers {
				other.Shutdown()
			}
			closeAll(pc, l)
			return fmt.Errorf("serve dns: %w", err)
		}
	}

	s.mu.Lock()
	s.bound = append(s.bound, addrs...)
	s.mu.Unlock()

	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case err := <-errc:
			// A server stopped on its own: unexpected, stop the rest.
			s.log.Error("dns: server stopped", "err", err)
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, srv := range servers {
			srv.ShutdownContext(sctx)
		}
		closeAll(pc, l)
		s.mu.Lock()
		for _, a := range addrs {
			if i := slices.Index(s.bound, a); i >= 0 {
				s.bound = slices.Delete(s.bound, i, i+1)
			}
		}
		s.mu.Unlock()
	}()
	return nil
}

func closeAll(pc net.PacketConn, l net.Listener) {
	if pc != nil {
		pc.Close()
	}
	if l != nil {
		l.Close()
	}
}

// Addrs returns the addresses being served, in the order they were bound.
func (s *Server) Addrs() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.bound)
}

// Wait blocks until every Serve or ListenAndServe whose context has ended
// has closed its sockets. Call it after cancelling, before rebinding the
// same address.
func (s *Server) Wait() { s.wg.Wait() }

func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// listenPair binds addr for TCP and UDP. With port 0, the UDP socket is
// bound to the port the kernel picked for TCP, retrying with a fresh port
// when that one is taken for UDP.
func listenPair(ctx context.Context, addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	var lc net.ListenConfig
	for attempt := 0; ; attempt++ {
		l, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, nil, err
		}
		udpAddr := addr
		if port == "0" {
			udpAddr = net.JoinHostPort(host, fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
		}
		pc, err := lc.ListenPacket(ctx, "udp", udpAddr)
		if err == nil {
			return pc, l, nil
		}
		l.Close()
		if port != "0" || attempt >= 20 {
			return nil, nil, err
		}
	}
}

// handler serves queries; ctx bounds forwarding. guests marks a guest
// socket, where only the forwarders' queries are forwarded.
type handler struct {
	s      *Server
	ctx    context.Context
	guests bool
}

// ServeDNS implements miekg.Handler.
func (h handler) ServeDNS(w miekg.ResponseWriter, req *miekg.Msg) {
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	forward := true
	var filter GuestFilter
	if h.guests {
		client := addrPortOf(w.RemoteAddr()).Addr()
		forward = h.s.mayForward(client)
		if filter = h.s.filterFor(client); filter != nil {
			forward = true
		}
	}
	resp := h.s.answer(h.ctx, req, network, forward, filter)
	if resp == nil {
		return
	}
	if network == "udp" {
		size := miekg.MinMsgSize
		if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
			size = int(opt.UDPSize())
		}
		resp.Truncate(size)
	}
	w.WriteMsg(resp)
}

// answer computes the response to req, received over network ("udp" or
// "tcp"); nil means no answer at all. Without forward, queries outside the
// domain are REFUSED. With a filter, names it does not allow are NXDOMAIN
// (never forwarded) and the answers to the others are reported to it.
func (s *Server) answer(ctx context.Context, req *miekg.Msg, network string, forward bool, filter GuestFilter) *miekg.Msg {
	if req.Response {
		return nil
	}
	if req.Opcode != miekg.OpcodeQuery {
		return new(miekg.Msg).SetRcode(req, miekg.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		return new(miekg.Msg).SetRcodeFormatError(req)
	}
	q := req.Question[0]
	name := strings.ToLower(miekg.Fqdn(q.Name))
	if name == s.zone || strings.HasSuffix(name, "."+s.zone) {
		return s.local(req, q, name)
	}
	if q.Qtype == miekg.TypePTR {
		if m := s.reverse(req, q, name); m != nil {
			return m
		}
	}
	if !forward {
		return s.forwardFail(req, miekg.RcodeRefused)
	}
	if filter != nil {
		if !filter.AllowsResolve(name) {
			m := s.reply(req, miekg.RcodeNameError)
			m.Authoritative = false
			return m
		}
		r := s.forward(ctx, req, q, name, network)
		recordAnswer(filter, name, q.Qtype, r)
		return r
	}
	return s.forward(ctx, req, q, name, network)
}

// recordAnswer reports the A/AAAA addresses of a forwarded answer for
// name (at the end of any CNAME chain in it) with the smallest TTL met.
func recordAnswer(f GuestFilter, name string, qtype uint16, r *miekg.Msg) {
	if r == nil || r.Rcode != miekg.RcodeSuccess || (qtype != miekg.TypeA && qtype != miekg.TypeAAAA) {
		return
	}
	target := strings.ToLower(name)
	var addrs []netip.Addr
	ttl := uint32(0)
	first := true
	note := func(t uint32) {
		if first || t < ttl {
			ttl, first = t, false
		}
	}
	for hops := 0; hops < 16; hops++ {
		next := ""
		for _, rr := range r.Answer {
			h := rr.Header()
			if strings.ToLower(h.Name) != target {
				continue
			}
			switch v := rr.(type) {
			case *miekg.CNAME:
				next = strings.ToLower(v.Target)
				note(h.Ttl)
			case *miekg.A:
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
					addrs = append(addrs, a)
					note(h.Ttl)
				}
			case *miekg.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
					addrs = append(addrs, a)
					note(h.Ttl)
				}
			}
		}
		if len(addrs) > 0 || next == "" {
			break
		}
		target = next
	}
	if len(addrs) > 0 {
		f.RecordAnswer(strings.TrimSuffix(name, "."), addrs, time.Duration(ttl)*time.Second)
	}
}

// reply starts an authoritative answer to req.
func (s *Server) reply(req *miekg.Msg, rcode int) *miekg.Msg {
	m := new(miekg.Msg)
	m.SetRcode(req, rcode)
	m.Authoritative = true
	m.RecursionAvailable = true
	if req.IsEdns0() != nil {
		m.SetEdns0(ednsSize, false)
	}
	return m
}

func (s *Server) hdr(name string, t uint16) miekg.RR_Header {
	return miekg.RR_Header{Name: name, Rrtype: t, Class: miekg.ClassINET, Ttl: s.ttl}
}

// soa is the synthetic SOA of the zone; its minimum is the negative TTL.
func (s *Server) soa() *miekg.SOA {
	return &miekg.SOA{
		Hdr:     s.hdr(s.zone, miekg.TypeSOA),
		Ns:      "ns." + s.zone,
		Mbox:    "hostmaster." + s.zone,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  s.ttl,
	}
}

// local answers a query for a name in the banger domain.
func (s *Server) local(req *miekg.Msg, q miekg.Question, name string) *miekg.Msg {
	if q.Qclass != miekg.ClassINET && q.Qclass != miekg.ClassANY {
		return s.reply(req, miekg.RcodeRefused)
	}
	if name == s.zone {
		m := s.reply(req, miekg.RcodeSuccess)
		if q.Qtype == miekg.TypeSOA || q.Qtype == miekg.TypeANY {
			m.Answer = append(m.Answer, s.soa())
		} else {
			m.Ns = append(m.Ns, s.soa())
		}
		return m
	}
	label := strings.TrimSuffix(name, "."+s.zone)
	addr, ok := s.lookup(label)
	if !ok {
		m := s.reply(req, miekg.RcodeNameError)
		m.Ns = append(m.Ns, s.soa())
		return m
	}
	m := s.reply(req, miekg.RcodeSuccess)
	qname := miekg.Fqdn(q.Name) // echo the client's case (0x20 randomisation)
	switch {
	case addr.Is4() && (q.Qtype == miekg.TypeA || q.Qtype == miekg.TypeANY):
		m.Answer = append(m.Answer, &miekg.A{Hdr: s.hdr(qname, miekg.TypeA), A: addr.AsSlice()})
	case addr.Is6() && (q.Qtype == miekg.TypeAAAA || q.Qtype == miekg.TypeANY):
		m.Answer = append(m.Answer, &miekg.AAAA{Hdr: s.hdr(qname, miekg.TypeAAAA), AAAA: addr.AsSlice()})
	default:
		// The name exists but has no data of this type (NODATA).
		m.Ns = append(m.Ns, s.soa())
	}
	return m
}

// reverse answers a PTR query for the address of a known VM; nil when the
// address is not one of ours, so the query is forwarded.
func (s *Server) reverse(req *miekg.Msg, q miekg.Question, name string) *miekg.Msg {
	a, ok := parseReverse(name)
	if !ok {
		return nil
	}
	names := s.namesFor(a)
	if len(names) == 0 {
		return nil
	}
	m := s.reply(req, miekg.RcodeSuccess)
	for _, n := range names {
		m.Answer = append(m.Answer, &miekg.PTR{Hdr: s.hdr(miekg.Fqdn(q.Name), miekg.TypePTR), Ptr: n + "." + s.zone})
	}
	return m
}

// parseReverse turns an in-addr.arpa or ip6.arpa name into its address.
func parseReverse(name string) (netip.Addr, bool) {
	name = strings.TrimSuffix(name, ".")
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		slices.Reverse(labels)
		a, err := netip.ParseAddr(strings.Join(labels, "."))
		return a, err == nil && a.Is4()
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		nibbles := strings.Split(rest, ".")
		if len(nibbles) != 32 {
			return netip.Addr{}, false
		}
		slices.Reverse(nibbles)
		var b strings.Builder
		for i, n := range nibbles {
			if len(n) != 1 {
				return netip.Addr{}, false
			}
			if i > 0 && i%4 == 0 {
				b.WriteByte(':')
			}
			b.WriteString(n)
		}
		a, err := netip.ParseAddr(b.String())
		return a.Unmap(), err == nil
	}
	return netip.Addr{}, false
}

// forward relays req to the upstreams in turn and returns the first
// useful answer: any answer but SERVFAIL or REFUSED, which are passed on
// only when no upstream does better.
func (s *Server) forward(ctx context.Context, req *miekg.Msg, q miekg.Question, name, network string) *miekg.Msg {
	if s.fixed && len(s.upstreams) == 0 {
		return s.forwardFail(req, miekg.RcodeRefused)
	}
	ups := s.usableUpstreams()
	if len(ups) == 0 {
		s.log.Warn("dns: no upstream to forward to", "name", name)
		return s.forwardFail(req, miekg.RcodeServerFailure)
	}
	key := inflightKey{name, q.Qtype, q.Qclass}
	if !s.enter(key) {
		s.log.Warn("dns: forwarding loop suspected; not forwarding", "name", name, "type", miekg.TypeToString[q.Qtype])
		return s.forwardFail(req, miekg.RcodeServerFailure)
	}
	defer s.leave(key)

	out := req.Copy()
	out.Id = miekg.Id()
	client := &miekg.Client{Net: network, Timeout: s.timeout}
	var fallback *miekg.Msg
	for _, u := range ups {
		if ctx.Err() != nil {
			break
		}
		actx, cancel := context.WithTimeout(ctx, s.timeout)
		r, _, err := client.ExchangeContext(actx, out, u.String())
		cancel()
		if err != nil {
			s.log.Debug("dns: upstream failed", "upstream", u, "name", name, "err", err)
			continue
		}
		r.Id = req.Id
		if r.Rcode == miekg.RcodeServerFailure || r.Rcode == miekg.RcodeRefused {
			if fallback == nil {
				fallback = r
			}
			continue
		}
		return r
	}
	if fallback != nil {
		return fallback
	}
	return s.forwardFail(req, miekg.RcodeServerFailure)
}

func (s *Server) forwardFail(req *miekg.Msg, rcode int) *miekg.Msg {
	m := new(miekg.Msg)
	m.SetRcode(req, rcode)
	m.RecursionAvailable = true
	if req.IsEdns0() != nil {
		m.SetEdns0(ednsSize, false)
	}
	return m
}

func (s *Server) enter(k inflightKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[k] >= maxSameInflight {
		return false
	}
	s.inflight[k]++
	return true
}

func (s *Server) leave(k inflightKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight[k]--; s.inflight[k] <= 0 {
		delete(s.inflight, k)
	}
}

// usableUpstreams returns the upstreams minus the server's own addresses.
func (s *Server) usableUpstreams() []netip.AddrPort {
	ups := s.upstreams
	if !s.fixed {
		ups = s.resolvUpstreams()
	}
	s.mu.Lock()
	bound := slices.Clone(s.bound)
	s.mu.Unlock()
	var local []netip.Addr // interface addresses, when a wildcard is bound
	localLoaded := false
	var out []netip.AddrPort
	for _, u := range ups {
		self := false
		for _, b := range bound {
			if b.Port() != u.Port() {
				continue
			}
			if b.Addr() == u.Addr() {
				self = true
				break
			}
			if b.Addr().IsUnspecified() {
				if !localLoaded {
					local, localLoaded = s.localAddrs(), true
				}
				if u.Addr().IsLoopback() || u.Addr().IsUnspecified() || slices.Contains(local, u.Addr()) {
					self = true
					break
				}
			}
		}
		if !self {
			out = append(out, u)
		}
	}
	return out
}

func (s *Server) localAddrs() []netip.Addr {
	addrs, err := s.ifAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// resolvUpstreams returns the nameservers of the resolv.conf file,
// re-reading it when it has changed (NetworkManager and VPN clients
// rewrite it on network changes).
func (s *Server) resolvUpstreams() []netip.AddrPort {
	fi, err := os.Stat(s.resolvConf)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.resolv.loaded {
			s.log.Warn("dns: cannot read resolver config", "path", s.resolvConf, "err", err)
		}
		s.resolv = resolvCache{}
		return nil
	}
	if s.resolv.loaded && fi.ModTime().Equal(s.resolv.modTime) && fi.Size() == s.resolv.size {
		return s.resolv.servers
	}
	data, err := readResolvConf(s.resolvConf)
	if err != nil {
		s.log.Warn("dns: cannot read resolver config", "path", s.resolvConf, "err", err)
		return nil
	}
	s.resolv = resolvCache{modTime: fi.ModTime(), size: fi.Size(), loaded: true, servers: ParseResolvConf(data)}
	return s.resolv.servers
}

// maxResolvConfSize bounds how much of a resolv.conf is read; a real one
// is a few hundred bytes, and what lies beyond the bound is ignored.
const maxResolvConfSize = 64 << 10

// readResolvConf reads at most maxResolvConfSize bytes of the file at path.
func readResolvConf(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxResolvConfSize))
}

// maxResolvServers is how many nameservers of a resolv.conf are used: the
// first three, as glibc (MAXNS), musl and Go's own resolver do, so guests
// ask the servers the host's programs ask, and a file listing thousands
// cannot make one query try them all in turn.
const maxResolvServers = 3

// ParseResolvConf returns the nameservers of a resolv.conf file, port 53,
// in order, without duplicates and at most maxResolvServers of them; the
// file is read by miekg/dns's ClientConfigFromReader, which stops at a line
// longer than 64 KiB. Entries that are not IP addresses are skipped.
// Loopback stubs such as systemd-resolved's 127.0.0.53 are kept: the
// server runs on the host, where they are reachable, and they give the
// guests the host's own view of DNS (VPN split DNS, search of local
// zones, caching). Forwarding back into the server itself is prevented
// separately.
func ParseResolvConf(data []byte) []netip.AddrPort {
	conf, err := miekg.ClientConfigFromReader(bytes.NewReader(data))
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, name := range conf.Servers {
		if i := strings.IndexAny(name, "#;"); i >= 0 {
			name = name[:i] // a comment right after the address
		}
		a, err := netip.ParseAddr(name)
		if err != nil {
			continue
		}
		ap := netip.AddrPortFrom(a.Unmap(), 53)
		if !slices.Contains(out, ap) {
			out = append(out, ap)
		}
		if len(out) == maxResolvServers {
			break
		}
	}
	return out
}
