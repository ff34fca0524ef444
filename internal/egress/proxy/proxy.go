// Package proxy is banger's egress proxy: the daemon-side process that
// every HTTP and HTTPS connection of a VM with an egress policy goes
// through. It decides by name (TLS SNI or HTTP Host), resolves the name
// itself, connects upstream itself, and logs every attempt.
//
// # Two ways in, one policy
//
// Transparent (bridge mode): nftables redirects a VM's TCP 80/443 to the
// proxy's listener; OriginalDst recovers where the guest was going. The
// proxy reads the name from the ClientHello (SNI; the hello is peeked with
// crypto/tls's parser and replayed, never consumed) or from the HTTP Host
// header (parsed by net/http), and refuses a connection whose name the
// guest did not resolve to that destination through banger's DNS:
//
//	A transparent connection to D = ip:port carrying name N (SNI, or the
//	Host header for plain HTTP) is a mismatch, and refused, unless banger's
//	DNS server answered N (after normalisation) to this VM with an A/AAAA
//	record equal to ip, and that answer is still valid: its TTL, clamped to
//	[1 min, 1 h], plus a 10 min grace. An IP literal N matches only
//	D's own ip. A TLS connection without SNI is passed through to D only if
//	D is allowed by an address (CIDR) rule; otherwise refused.
//
// Explicit (user mode, and any guest that sets HTTP_PROXY/HTTPS_PROXY):
// the guest talks HTTP proxy protocol to the same code: absolute-form
// requests for http:// URLs and CONNECT host:port for anything else. The
// decision is by the CONNECT authority (or the request URL's host); a TLS
// tunnel whose SNI differs from the authority's host is a mismatch and is
// refused. A tunnel that does not start with a TLS ClientHello is passed
// through as plain TCP to the (allowed) authority.
//
// In both modes the proxy connects to the addresses its own Resolver gives
// for the name (never to the guest's destination ip), and never to
// addresses Config.AllowUpstream refuses (loopback, link-local,
// unspecified, multicast by default), so a policy name that resolves to
// the host itself does not open the host.
//
// # Secrets
//
// A host with no secret bound is passed through byte for byte: the guest's
// TLS session is with the real server. A host that a VM's secret may be
// sent to (secrets.Bindings) is intercepted: the proxy completes the
// guest's handshake with a leaf minted by banger's CA (package ca), reads
// each request with net/http, checks that its Host header names the same
// host as the SNI (421-like mismatch: refused with 403), replaces every
// placeholder of a secret allowed for that host by the real value in the
// request headers (and in the body, up to MaxSubstBody, for secrets that
// opt in), and forwards it with net/http/httputil.ReverseProxy over TLS
// verified against the host's roots as Go reads them (SSL_CERT_FILE and
// SSL_CERT_DIR honoured) plus Config.ExtraRootCAs. A request that carries
// a placeholder of this VM to a host the secret is not bound to is refused
// (403) before any upstream connection is made, and logged. Placeholders
// in the URL are checked but not substituted.
//
// Plain HTTP (port 80, or http:// through the explicit proxy) is read and
// forwarded the same way, but a request carrying a placeholder is always
// refused there: substituting would send the real value over the network
// in clear text.
//
// Only traffic the proxy reads can be checked for placeholders: through a
// passed-through TLS session a placeholder travels encrypted to an allowed
// host, where it is worthless.
//
// # Bounds
//
// Every guest connection has a handshake deadline (the ClientHello or the
// request header must arrive within HandshakeTimeout), an idle timeout on
// every read and write, a header size cap, and a per-VM cap on concurrent
// connections; every upstream dial and TLS handshake has a timeout.
//
// # Wiring (what the daemon does)
//
//	ca, _ := ca.LoadOrCreate(stateDir + "/egress-ca")   // ca.CertPEM() -> guest trust store
//	store, _ := secrets.Open(stateDir)
//	px, _ := proxy.New(proxy.Config{CA: ca, Secrets: store, Resolver: &proxy.DNSResolver{...}})
//	// per VM, at create/start (policy.Spec persisted with the VM):
//	pol, _ := policy.Build(spec)
//	b, _ := secrets.Restore(pol, savedPlaceholders)      // b.Env() -> agent env; b.Placeholders() -> store
//	lg, _ := egresslog.Open(runDir + "/egress.jsonl", 4<<20)
//	vm, _ := px.NewVM(proxy.VMConfig{Name: name, Policy: pol, Bindings: b, Log: lg})
//	// bridge mode: one shared listener, nftables redirects each tap's TCP 80/443 to it
//	go px.Serve(ctx, ln, func(src netip.Addr) *proxy.VM { return byGuestIP[src] })
//	// user mode: a listener per VM, reached through QEMU's forward; HTTP(S)_PROXY in the guest
//	go vm.Serve(ctx, ln)
//	// DNS server, for every answer it gives the VM:
//	vm.RecordAnswer(qname, addrs, ttl)   // and policy.AllowsResolve(qname) to decide NXDOMAIN
//	// vm set NAME --allow ...:
//	vm.SetPolicy(newPol, secrets.Rebind(b, newPol))
package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"banger/internal/egress/ca"
	"banger/internal/egress/egresslog"
	"banger/internal/egress/policy"
	"banger/internal/secrets"
)

// Resolver resolves names for upstream connections. *net.Resolver
// satisfies it; the daemon may give one that asks configured upstreams.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Dialer opens upstream connections. *net.Dialer satisfies it.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// SecretSource gives a secret's real value. *secrets.Store satisfies it.
type SecretSource interface {
	Get(name string) ([]byte, error)
}

// Defaults of Config's limits.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
	DefaultDialTimeout      = 10 * time.Second
	DefaultResponseTimeout  = 2 * time.Minute
	DefaultMaxHeaderBytes   = 64 << 10
	DefaultMaxSubstBody     = 1 << 20
	DefaultMaxConnsPerVM    = 256
)

// Config configures a Proxy. Zero fields take the defaults.
type Config struct {
	Resolver Resolver     // default net.DefaultResolver
	Dialer   Dialer       // default a net.Dialer with DialTimeout
	CA       *ca.CA       // mints leaves for intercepted hosts; nil: interception refused
	Secrets  SecretSource // real values; nil: substitution refused

	// RootCAs verifies upstream TLS; nil means the host's roots as Go
	// reads them (x509.SystemCertPool: SSL_CERT_FILE, SSL_CERT_DIR).
	RootCAs *x509.CertPool
	// ExtraRootCAs (PEM) are trusted for upstream TLS in addition.
	ExtraRootCAs []byte
	// AllowUpstream says whether the proxy may connect to an address;
	// default DefaultAllowUpstream.
	AllowUpstream func(netip.Addr) bool

	HandshakeTimeout time.Duration // ClientHello / request header deadline
	IdleTimeout      time.Duration // per read/write on any connection
	DialTimeout      time.Duration // upstream dial and TLS handshake
	ResponseTimeout  time.Duration // upstream response header
	MaxHeaderBytes   int           // request header cap
	MaxSubstBody     int64         // body read for substitution
	MaxConnsPerVM    int

	Logger *slog.Logger
	Now    func() time.Time
}

// DefaultAllowUpstream refuses loopback, unspecified, link-local and
// multicast addresses: the proxy runs on the host and must not open it.
func DefaultAllowUpstream(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && !a.IsLoopback() && !a.IsUnspecified() && !a.IsLinkLocalUnicast() &&
		!a.IsLinkLocalMulticast() && !a.IsInterfaceLocalMulticast() && !a.IsMulticast()
}

// Proxy serves the egress connections of any number of VMs.
type Proxy struct {
	cfg       Config
	log       *slog.Logger
	transport *http.Transport
	srv       *http.Server
	ln        *chanListener

	conns connSet
	wg    sync.WaitGroup
}

// New makes a Proxy. Close releases it.
func New(cfg Config) (*Proxy, error) {
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&cfg.IdleTimeout, DefaultIdleTimeout)
	def(&cfg.DialTimeout, DefaultDialTimeout)
	def(&cfg.ResponseTimeout, DefaultResponseTimeout)
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxSubstBody <= 0 {
		cfg.MaxSubstBody = DefaultMaxSubstBody
	}
	if cfg.MaxConnsPerVM <= 0 {
		cfg.MaxConnsPerVM = DefaultMaxConnsPerVM
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{Timeout: cfg.DialTimeout}
	}
	if cfg.AllowUpstream == nil {
		cfg.AllowUpstream = DefaultAllowUpstream
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	roots := cfg.RootCAs
	if roots == nil {
		sys, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("egress proxy: system roots: %w", err)
		}
		roots = sys
	} else {
		roots = roots.Clone()
	}
	if len(cfg.ExtraRootCAs) > 0 {
		if !roots.AppendCertsFromPEM(cfg.ExtraRootCAs) {
			return nil, errors.New("egress proxy: extra root CAs: no certificate in PEM")
		}
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, log: lg, ln: newChanListener()}
	p.transport = &http.Transport{
		Proxy: nil, // never the daemon's own proxy settings
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := p.dialUpstream(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return newIdleConn(c, cfg.IdleTimeout), nil // a stalled upstream body is cut too
		},
		TLSClientConfig:        &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    cfg.DialTimeout,
		ResponseHeaderTimeout:  cfg.ResponseTimeout,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConnsPerHost:    16,
		MaxResponseHeaderBytes: 1 << 20,
		ForceAttemptHTTP2:      false,
		TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(p.serveHTTP),
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(lg.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c.(*servedConn))
		},
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.srv.Serve(p.ln)
	}()
	return p, nil
}

// Close stops the proxy: every connection is closed.
func (p *Proxy) Close() error {
	p.conns.close(true)
	p.ln.Close()
	p.srv.Close()
	p.transport.CloseIdleConnections()
	p.wg.Wait()
	return nil
}

// connSet is the open connections of a Proxy or a VM, closed together.
type connSet struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// track adds c, or reports false once the set is closed for good.
func (s *connSet) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *connSet) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// close closes every connection in the set; with refuse, later track
// calls fail.
func (s *connSet) close(refuse bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if refuse {
		s.closed = true
	}
	for c := range s.conns {
		c.Close()
	}
}

// VMConfig describes a VM to the proxy.
type VMConfig struct {
	Name     string
	Policy   *policy.Policy
	Bindings *secrets.Bindings // from secrets.Bind(Policy); nil: no secrets
	Log      *egresslog.Log    // nil: records are not kept
}

// VM is one VM's view of the proxy: its policy, placeholders, DNS answers
// and connection budget.
type VM struct {
	p        *Proxy
	name     string
	state    atomic.Pointer[vmState]
	log      *egresslog.Log
	resolved *resolvedNames
	sem      chan struct{}
	conns    connSet
}

// Close ends every open connection of the VM and refuses new ones (the
// VM stops, or its policy was narrowed and open tunnels must not outlive
// it: a new VM value then takes over).
func (v *VM) Close() { v.conns.close(true) }

// CloseConns ends every open connection of the VM but keeps serving new
// ones, e.g. after SetPolicy narrowed the policy: open pass-through
// tunnels were decided under the old one.
func (v *VM) CloseConns() { v.conns.close(false) }

type vmState struct {
	policy   *policy.Policy
	bindings *secrets.Bindings
}

// NewVM registers a VM. It has no listener of its own: hand its
// connections to ServeConn, or use Serve / Proxy.Serve.
func (p *Proxy) NewVM(c VMConfig) (*VM, error) {
	if c.Name == "" {
		return nil, errors.New("egress proxy: vm without a name")
	}
	if c.Policy == nil {
		return nil, fmt.Errorf("egress proxy: vm %q without a policy", c.Name)
	}
	v := &VM{p: p, name: c.Name, log: c.Log, resolved: newResolvedNames(p.cfg.Now),
		sem: make(chan struct{}, p.cfg.MaxConnsPerVM)}
	v.state.Store(&vmState{policy: c.Policy, bindings: c.Bindings})
	return v, nil
}

// Name is the VM's name.
func (v *VM) Name() string { return v.name }

// SetPolicy changes a running VM's policy and placeholders; new
// connections and new requests on open ones see it at once. Keep the
// placeholders the guest already has with secrets.Rebind.
func (v *VM) SetPolicy(p *policy.Policy, b *secrets.Bindings) {
	v.state.Store(&vmState{policy: p, bindings: b})
}

// Policy is the VM's current policy.
func (v *VM) Policy() *policy.Policy { return v.state.Load().policy }

// RecordAnswer is the DNS server's hook: it gave this VM addrs for name
// (the name the guest asked, the final A/AAAA addresses after any CNAME)
// with the given TTL. Transparent connections are checked against these.
func (v *VM) RecordAnswer(name string, addrs []netip.Addr, ttl time.Duration) {
	v.resolved.record(name, addrs, ttl)
}

// Resolved reports whether banger's DNS currently vouches for name -> addr
// for this VM (see the package documentation for the exact rule).
func (v *VM) Resolved(name string, addr netip.Addr) bool { return v.resolved.has(name, addr) }

func (v *VM) record(r egresslog.Record) {
	r.VM = v.name
	if r.Proto == "" {
		r.Proto = "tcp"
	}
	if r.Time.IsZero() {
		r.Time = v.p.cfg.Now()
	}
	if r.Verdict == egresslog.Deny {
		v.p.log.Info("egress refused", "vm", v.name, "name", r.Name, "ip", r.IP, "port", r.Port, "via", r.Via, "reason", r.Reason)
	}
	if v.log != nil {
		if err := v.log.Append(r); err != nil {
			v.p.log.Warn("egress log", "vm", v.name, "err", err)
		}
	}
}

// Serve accepts connections on ln until ctx ends or ln fails; every one
// is this VM's (a per-VM listener, e.g. the end of QEMU's user-mode
// forward) and explicit (HTTP proxy protocol).
func (v *VM) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("egress proxy %s: %w", v.name, err)
		}
		go v.ServeConn(ctx, c, netip.AddrPort{})
	}
}

// Serve accepts connections on a listener shared by VMs (bridge mode):
// vmFor maps a connection's source address to its VM (nil: the
// connection is closed). A connection nftables redirected (OriginalDst
// gives a destination other than the listener itself) is transparent; any
// other is explicit.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener, vmFor func(src netip.Addr) *VM) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("egress proxy: %w", err)
		}
		src := addrPortOf(c.RemoteAddr())
		vm := vmFor(src.Addr())
		if vm == nil {
			p.log.Info("egress proxy: connection from no known vm", "src", src)
			c.Close()
			continue
		}
		orig, err := OriginalDst(c)
		if err != nil || orig == addrPortOf(c.LocalAddr()) {
			orig = netip.AddrPort{}
		}
		go vm.ServeConn(ctx, c, orig)
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// ServeConn handles one connection of this VM and returns when it is
// over. origDst is where nftables found it going (transparent mode); the
// zero AddrPort means the guest uses the proxy explicitly.
func (v *VM) ServeConn(ctx context.Context, c net.Conn, origDst netip.AddrPort) {
	p := v.p
	via := "transparent"
	if !origDst.IsValid() {
		via = "connect"
	}
	if origDst.IsValid() {
		origDst = netip.AddrPortFrom(origDst.Addr().Unmap(), origDst.Port())
	}
	select {
	case v.sem <- struct{}{}:
		defer func() { <-v.sem }()
	default:
		c.Close()
		v.record(egresslog.Record{Via: via, IP: ipString(origDst), Port: origDst.Port(), Verdict: egresslog.Deny,
			Reason: fmt.Sprintf("too many concurrent connections (%d)", cap(v.sem))})
		return
	}
	if !p.conns.track(c) {
		c.Close()
		return
	}
	defer p.conns.untrack(c)
	if !v.conns.track(c) {
		c.Close()
		return
	}
	defer v.conns.untrack(c)
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	ic := newIdleConn(c, p.cfg.IdleTimeout)
	if !origDst.IsValid() {
		v.serveHTTPConn(ctx, ic, &connInfo{vm: v, kind: kindExplicit, via: "http-proxy"})
		return
	}
	// Transparent: TLS (by its first byte) or plain HTTP.
	first := make([]byte, 1)
	ic.SetReadDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	if _, err := io.ReadFull(ic, first); err != nil {
		ic.SetReadDeadline(time.Time{})
		v.record(egresslog.Record{Via: via, IP: ipString(origDst), Port: origDst.Port(), Verdict: egresslog.Deny,
			Reason: "no data from the guest before the deadline"})
		return
	}
	ic.SetReadDeadline(time.Time{})
	if first[0] == 0x16 { // TLS handshake record
		v.serveTLS(ctx, ic, first, &connInfo{vm: v, via: via, orig: origDst})
		return
	}
	v.serveHTTPConn(ctx, &rewindConn{Conn: ic, buf: first}, &connInfo{vm: v, kind: kindTransparentHTTP, via: via, orig: origDst})
}

func ipString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.Addr().String()
}

// serveHTTPConn gives c to the proxy's http.Server and waits until it is
// closed (or hijacked and then closed).
func (v *VM) serveHTTPConn(ctx context.Context, c net.Conn, info *connInfo) {
	info.parent = ctx
	sc := newServedConn(c, info)
	if err := v.p.ln.push(ctx, sc); err != nil {
		c.Close()
		return
	}
	select {
	case <-sc.done:
	case <-ctx.Done():
		sc.Close()
	}
	if sc.requests.Load() == 0 && !info.hijacked.Load() {
		rec := egresslog.Record{Via: info.via, IP: ipString(info.orig), Port: info.orig.Port(), Verdict: egresslog.Deny,
			Kind: "http", Reason: "no valid HTTP request (malformed, too large or too slow)"}
		if info.kind == kindIntercept {
			rec.Kind, rec.Name, rec.Port = "tls-intercept", info.name, info.port
		}
		v.record(rec)
	}
}

// checkName applies the policy (and, in transparent mode, the DNS answer
// check) to name:port. It returns the normalised name, or a reason.
func (v *VM) checkName(name string, port uint16, orig netip.AddrPort) (string, string) {
	pol := v.Policy()
	if ip, err := netip.ParseAddr(trimBrackets(name)); err == nil {
		ip = ip.Unmap()
		if !pol.AllowsIP(ip, port, policy.TCP) {
			return "", fmt.Sprintf("address %s port %d not allowed by the policy", ip, port)
		}
		if orig.IsValid() && ip != orig.Addr() {
			return "", fmt.Sprintf("name %s differs from the destination %s", ip, orig.Addr())
		}
		return ip.String(), ""
	}
	n, err := policy.NormalizeName(name)
	if err != nil {
		return "", fmt.Sprintf("bad host name: %v", err)
	}
	if !pol.AllowsName(n, port) {
		return "", fmt.Sprintf("%s port %d not allowed by the policy", n, port)
	}
	if orig.IsValid() && !v.resolved.has(n, orig.Addr()) {
		return "", fmt.Sprintf("name/destination mismatch: %s was not resolved to %s by banger's DNS", n, orig.Addr())
	}
	return n, ""
}

func trimBrackets(s string) string {
	if len(s) > 1 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}

// interceptFor reports whether name:port must be intercepted: some secret
// of the VM may be sent there.
func (v *VM) interceptFor(name string, port uint16) bool {
	for _, b := range v.state.Load().bindings.All() {
		if b.Secret.AllowsHost(name, port) {
			return true
		}
	}
	return false
}
