package privhelper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"banger/internal/network"
)

// Defaults of Options.
const (
	// DefaultOpTimeout bounds one operation.
	DefaultOpTimeout = 2 * time.Minute
	// requestTimeout bounds reading a request and writing a response, so a
	// stalled client cannot hold a handler.
	requestTimeout = 10 * time.Second
	// releaseTimeout bounds the release of a tap whose client went away.
	releaseTimeout = 30 * time.Second
)

// Options configure a Server.
type Options struct {
	// Host performs the network operations (network.NewHost in
	// banger-helper, network.Fake in tests).
	Host network.Host
	// Config is Host's configuration (defaults are applied): requests are
	// validated against it, state reports it and dns_sockets binds its
	// bridge address.
	Config network.Config
	// AllowUID is the uid that may call besides root: the daemon's owner.
	AllowUID int
	// DNSAddr is where dns_sockets binds; the zero value means port 53 of
	// the bridge address (Config.CIDR's address).
	DNSAddr netip.AddrPort
	// OpTimeout bounds one operation; zero means DefaultOpTimeout.
	OpTimeout time.Duration
	// Log gets one line per request and every refusal; nil discards.
	Log *slog.Logger
}

// Server serves the helper protocol (see the package documentation) for one
// network.Host. Create it with NewServer, run it with Serve and Close it
// afterwards.
type Server struct {
	host      network.Host
	cfg       network.Config
	allowUID  uint32
	dnsAddr   netip.AddrPort
	opTimeout time.Duration
	log       *slog.Logger
	// ns is the network namespace the DNS sockets are bound in: the one
	// of the thread that called NewServer, as for network.NewHost.
	ns netns.NsHandle

	// mu guards the DNS sockets and closed.
	mu     sync.Mutex
	udpFD  int // -1 until bound
	tcpFD  int // -1 until bound
	closed bool
}

// NewServer checks o and returns a Server. The DNS sockets will be bound in
// the network namespace of the calling thread at the time of the call,
// whichever goroutine serves the request (like network.NewHost).
func NewServer(o Options) (*Server, error) {
	if o.Host == nil {
		return nil, errors.New("new helper server: no network host")
	}
	cfg := o.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new helper server: %w", err)
	}
	if o.AllowUID < 0 || int64(o.AllowUID) > 1<<32-2 { // (uid_t)-1 is no uid
		return nil, fmt.Errorf("new helper server: allowed uid %d is not a uid", o.AllowUID)
	}
	dnsAddr := o.DNSAddr
	if !dnsAddr.IsValid() {
		dnsAddr = netip.AddrPortFrom(cfg.CIDR.Addr(), 53)
	}
	if !dnsAddr.Addr().Unmap().Is4() {
		return nil, fmt.Errorf("new helper server: dns address %s is not IPv4", dnsAddr)
	}
	dnsAddr = netip.AddrPortFrom(dnsAddr.Addr().Unmap(), dnsAddr.Port())
	timeout := o.OpTimeout
	if timeout <= 0 {
		timeout = DefaultOpTimeout
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("new helper server: open current network namespace: %w", err)
	}
	return &Server{
		host: o.Host, cfg: cfg, allowUID: uint32(o.AllowUID), dnsAddr: dnsAddr, opTimeout: timeout, log: log,
		ns: ns, udpFD: -1, tcpFD: -1,
	}, nil
}

// Serve accepts connections on ln and answers each in its own goroutine
// until ctx ends; then it closes ln (which removes a Unix socket's file) and
// waits for the requests in flight, which are not cancelled by ctx but only
// by their client hanging up or by the operation timeout. It returns nil
// after ctx ended, or the error that stopped accepting.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept: %w", err)
			}
			// e.g. EMFILE: back off rather than spin.
			s.log.Error("helper: accept", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		uc, ok := conn.(*net.UnixConn)
		if !ok {
			conn.Close()
			s.log.Error("helper: not a unix socket connection", "remote", conn.RemoteAddr())
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(ctx, uc)
		}()
	}
}

// Close releases the DNS sockets held by the server (copies handed to
// clients keep working) and its namespace handle. It touches no taps, the
// bridge or NAT rules. Call it after Serve returned.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, fd := range []*int{&s.udpFD, &s.tcpFD} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	errs = append(errs, s.ns.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close helper server: %w", err)
	}
	return nil
}

// codedError is an error with the wire code it is reported with.
type codedError struct {
	code string
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func coded(code, format string, args ...any) error {
	return &codedError{code: code, err: fmt.Errorf(format, args...)}
}

// codeOf is the wire code of an operation's error.
func codeOf(err error) string {
	var ce *codedError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.Is(err, network.ErrNoBridge):
		return CodeNoBridge
	case errors.Is(err, network.ErrNotTap):
		return CodeNotTap
	case errors.Is(err, network.ErrTapLimit):
		return CodeTapLimit
	}
	return CodeFailed
}

// caller is who is on the other end of a connection.
type caller struct {
	uid, gid uint32
	pid      int32
}

// handle answers one connection: check the caller, read one request, run
// it, answer, close.
func (s *Server) handle(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	start := time.Now()
	conn.SetDeadline(start.Add(requestTimeout))

	who, err := peerCred(conn)
	if err != nil {
		s.log.Error("helper: read peer credentials", "err", err)
		s.reply(conn, &response{Error: &wireError{Code: CodeFailed, Message: "cannot read peer credentials"}}, nil)
		return
	}
	if who.uid != 0 && who.uid != s.allowUID {
		// Nothing of the request is read: a refused caller's input is
		// never parsed.
		s.log.Warn("helper: refused caller", "uid", who.uid, "gid", who.gid, "pid", who.pid, "allowed_uid", s.allowUID)
		s.reply(conn, &response{Error: &wireError{Code: CodeForbidden,
			Message: fmt.Sprintf("uid %d may not use the privileged helper (allowed: uid %d and root)", who.uid, s.allowUID)}}, nil)
		return
	}

	req, err := readRequest(conn)
	if err == nil {
		err = s.validate(req)
	}
	if err != nil {
		op := ""
		if req != nil {
			op = req.Op
		}
		s.log.Warn("helper: bad request", "op", truncate(op), "uid", who.uid, "pid", who.pid, "err", err)
		s.reply(conn, &response{Error: &wireError{Code: codeOf(err), Message: err.Error()}}, nil)
		return
	}

	// The operation runs until it is done, the client hangs up or the
	// timeout passes; the server shutting down does not cancel it.
	opCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opTimeout)
	defer cancel()
	conn.SetDeadline(time.Time{})
	watched := watchHangup(conn, cancel)
	defer func() {
		conn.Close()
		<-watched
	}()

	resp, fds, err := s.do(opCtx, req)
	for _, fd := range fds {
		defer unix.Close(fd)
	}
	if err != nil {
		resp = &response{Error: &wireError{Code: codeOf(err), Message: err.Error()}}
		fds = nil
	} else {
		resp.OK = true
	}
	conn.SetWriteDeadline(time.Now().Add(requestTimeout))
	werr := s.reply(conn, resp, fds)
	attrs := []any{"op", req.Op, "uid", who.uid, "pid", who.pid, "duration", time.Since(start).Round(time.Microsecond)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	if werr != nil {
		attrs = append(attrs, "reply_err", werr)
	}
	s.log.Info("helper: request", attrs...)
	if werr != nil && err == nil && req.Op == OpAcquireTap {
		// The client will never learn the tap's name: give it back.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer rcancel()
		if rerr := s.host.ReleaseTap(rctx, resp.Tap); rerr != nil {
			s.log.Error("helper: release tap of a departed client", "tap", resp.Tap, "err", rerr)
		} else {
			s.log.Info("helper: released tap of a departed client", "tap", resp.Tap)
		}
	}
}

// watchHangup cancels when the client closes its end (or anything else ends
// reading from conn, such as closing conn). The returned channel is closed
// when the watcher has returned.
func watchHangup(conn *net.UnixConn, cancel context.CancelFunc) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			if _, err := conn.Read(buf); err != nil {
				cancel()
				return
			}
		}
	}()
	return done
}

// truncate shortens an untrusted string for the log.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// peerCred returns the credentials the peer had when it connected.
func peerCred(conn *net.UnixConn) (caller, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return caller{}, err
	}
	var (
		cred *unix.Ucred
		cerr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return caller{}, err
	}
	if cerr != nil {
		return caller{}, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return caller{uid: cred.Uid, gid: cred.Gid, pid: cred.Pid}, nil
}

// readRequest decodes one request, strictly: no unknown fields, bounded
// size. A request that is not even JSON comes back nil.
func readRequest(r io.Reader) (*request, error) {
	dec := json.NewDecoder(io.LimitReader(r, maxRequest))
	dec.DisallowUnknownFields()
	var req request
	if err := dec.Decode(&req); err != nil {
		return nil, coded(CodeBadRequest, "read request: %v", err)
	}
	return &req, nil
}

// validate checks a request against the allow-list and the configuration,
// before anything runs.
func (s *Server) validate(req *request) error {
	if req.Version != ProtocolVersion {
		return coded(CodeBadVersion, "protocol version %d is not supported (this helper speaks %d)", req.Version, ProtocolVersion)
	}
	if !knownOp(req.Op) {
		return coded(CodeUnknownOp, "unknown operation %q", truncate(req.Op))
	}
	if req.Op != OpReleaseTap && req.Tap != "" {
		return coded(CodeBadRequest, "%s takes no tap", req.Op)
	}
	if req.Op != OpSetEgress && req.Egress != nil {
		return coded(CodeBadRequest, "%s takes no egress", req.Op)
	}
	if req.Op != OpSetNAT && req.Op != OpSetEgress && req.Guests != nil {
		return coded(CodeBadRequest, "%s takes no guests", req.Op)
	}
	if req.Op != OpAcquireTap && req.Binding != nil {
		return coded(CodeBadRequest, "%s takes no binding", req.Op)
	}
	switch req.Op {
	case OpAcquireTap:
		if req.Binding == nil {
			return coded(CodeBadRequest, "acquire_tap needs a binding (the mac and ip the tap may send from)")
		}
		hw, err := net.ParseMAC(req.Binding.MAC)
		if err != nil || len(hw) != 6 || hw[0]&1 != 0 {
			return coded(CodeBadRequest, "acquire tap: mac %q is not a unicast Ethernet address", truncate(req.Binding.MAC))
		}
		if !validGuest(s.cfg.CIDR, req.Binding.IP.Unmap()) {
			return coded(CodeBadRequest, "acquire tap: %s is not a guest address of %s", req.Binding.IP, s.cfg.CIDR.Masked())
		}
	case OpReleaseTap:
		if !validTap(s.cfg.TapPrefix, req.Tap) {
			return &codedError{code: CodeNotTap, err: fmt.Errorf("release tap %q: %w (want %s<N>)", truncate(req.Tap), network.ErrNotTap, s.cfg.TapPrefix)}
		}
	case OpSetEgress:
		if req.Guests == nil || req.Egress == nil {
			return coded(CodeBadRequest, "set_egress needs guests and egress")
		}
		if _, err := network.EgressRuleset(s.cfg, *req.Guests, *req.Egress); err != nil {
			return coded(CodeBadRequest, "set egress: %v", err)
		}
	case OpSetNAT:
		if req.Guests == nil {
			return coded(CodeBadRequest, "set_nat needs guests (an empty list clears nat)")
		}
		for i, g := range *req.Guests {
			g = g.Unmap()
			if !validGuest(s.cfg.CIDR, g) {
				return coded(CodeBadRequest, "set nat: %s is not a guest address of %s", g, s.cfg.CIDR.Masked())
			}
			(*req.Guests)[i] = g
		}
	}
	return nil
}

// do runs a validated request. fds are descriptors to pass with the
// response, owned by the caller.
func (s *Server) do(ctx context.Context, req *request) (*response, []int, error) {
	resp := &response{}
	var err error
	switch req.Op {
	case OpEnsureBridge:
		err = s.host.EnsureBridge(ctx)
	case OpAcquireTap:
		resp.Tap, err = s.host.AcquireTap(ctx, *req.Binding)
	case OpReleaseTap:
		err = s.host.ReleaseTap(ctx, req.Tap)
	case OpSetNAT:
		err = s.host.SetNAT(ctx, *req.Guests)
	case OpSetEgress:
		err = s.host.SetEgress(ctx, *req.Guests, *req.Egress)
	case OpState:
		var st network.State
		st, err = s.host.State(ctx)
		resp.State, resp.Config = toWireState(st), toWireConfig(s.cfg)
	case OpDNSSockets:
		var fds []int
		fds, err = s.dnsSockets()
		if err == nil {
			resp.DNS = &wireDNS{Addr: s.dnsAddr, FDs: dnsFDs}
			return resp, fds, nil
		}
	default:
		err = coded(CodeUnknownOp, "unknown operation %q", truncate(req.Op)) // validate refused it already
	}
	if err != nil {
		return nil, nil, err
	}
	return resp, nil, nil
}

// reply writes resp as one line, with fds attached (SCM_RIGHTS) if any.
func (s *Server) reply(conn *net.UnixConn, resp *response, fds []int) error {
	b, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	b = append(b, '\n')
	if len(fds) == 0 {
		_, err = conn.Write(b)
		return err
	}
	n, _, err := conn.WriteMsgUnix(b, unix.UnixRights(fds...), nil)
	if err == nil && n < len(b) {
		_, err = conn.Write(b[n:])
	}
	return err
}

// dnsSockets returns duplicates of the DNS sockets (UDP, then TCP), binding
// them on first use. The caller closes the duplicates.
func (s *Server) dnsSockets() ([]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("dns sockets: server closed")
	}
	if s.udpFD < 0 {
		var udp, tcp int
		err := inNS(s.ns, func() error {
			var err error
			udp, tcp, err = bindDNS(s.dnsAddr)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("bind dns sockets on %s: %w", s.dnsAddr, err)
		}
		s.udpFD, s.tcpFD = udp, tcp
		s.log.Info("helper: bound dns sockets", "addr", s.dnsAddr)
	}
	var fds []int
	for _, fd := range []int{s.udpFD, s.tcpFD} {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, d := range fds {
				unix.Close(d)
			}
			return nil, fmt.Errorf("dns sockets: dup: %w", err)
		}
		fds = append(fds, dup)
	}
	return fds, nil
}

// inNS runs fn on a throwaway OS thread inside ns, so sockets fn creates
// belong to ns whichever namespace the calling goroutine's thread is in.
// A thread already in ns is not switched, which needs no privilege.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		if cur, err := netns.Get(); err == nil {
			same := cur.Equal(ns)
			cur.Close()
			if same {
				errc <- fn()
				return
			}
		}
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// bindDNS binds a listening TCP socket and a UDP socket to addr (IPv4), in
// blocking mode (the receiver's runtime sets its own mode). IP_FREEBIND lets
// them bind before the address exists on the bridge. With port 0 both get
// the same port.
func bindDNS(addr netip.AddrPort) (udp, tcp int, err error) {
	for attempt := 0; ; attempt++ {
		tcp, err = bindSocket(unix.SOCK_STREAM, addr)
		if err != nil {
			return -1, -1, fmt.Errorf("tcp: %w", err)
		}
		port := addr.Port()
		if port == 0 {
			sa, err := unix.Getsockname(tcp)
			if err != nil {
				unix.Close(tcp)
				return -1, -1, fmt.Errorf("tcp: getsockname: %w", err)
			}
			port = uint16(sa.(*unix.SockaddrInet4).Port)
		}
		udp, err = bindSocket(unix.SOCK_DGRAM, netip.AddrPortFrom(addr.Addr(), port))
		if err == nil {
			return udp, tcp, nil
		}
		unix.Close(tcp)
		if addr.Port() != 0 || attempt >= 20 || !errors.Is(err, unix.EADDRINUSE) {
			return -1, -1, fmt.Errorf("udp: %w", err)
		}
	}
}

// bindSocket makes one bound socket of type typ (listening for TCP).
func bindSocket(typ int, addr netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if typ == unix.SOCK_STREAM {
		// A restarted helper can rebind while old connections linger.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fail("SO_REUSEADDR", err)
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1); err != nil {
		return fail("IP_FREEBIND", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		return fail("bind", err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
			return fail("listen", err)
		}
	}
	return fd, nil
}
