package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"banger/internal/egress/egresslog"
	"banger/internal/egress/policy"
)

type connKind int

const (
	kindExplicit        connKind = iota // HTTP proxy protocol from the guest
	kindTransparentHTTP                 // redirected plain HTTP
	kindIntercept                       // TLS terminated by the proxy
)

// connInfo travels with a connection into the http.Server.
type connInfo struct {
	vm   *VM
	kind connKind
	via  string         // transparent, connect, http-proxy
	orig netip.AddrPort // transparent: original destination
	// The target of a CONNECT tunnel (authority) or intercepted TLS.
	name string
	port uint16

	hijacked atomic.Bool
	parent   context.Context // ServeConn's context
}

type connKey struct{}

// serveTLS handles a connection that starts with a TLS record. For a
// transparent connection info.orig is set; for a CONNECT tunnel info.name
// and info.port hold the authority (already allowed).
func (v *VM) serveTLS(ctx context.Context, c net.Conn, first []byte, info *connInfo) {
	p := v.p
	rec := egresslog.Record{Via: info.via, IP: ipString(info.orig), Port: info.orig.Port(), Name: info.name}
	if !info.orig.IsValid() {
		rec.Port = info.port
	}
	deny := func(reason string) {
		rec.Verdict, rec.Reason = egresslog.Deny, reason
		v.record(rec)
	}
	hello, rc, err := peekClientHello(ctx, c, first, p.cfg.HandshakeTimeout)
	if err != nil {
		deny(err.Error())
		return
	}
	sni := hello.ServerName
	var name string
	var port uint16
	if info.orig.IsValid() { // transparent
		port = info.orig.Port()
		if sni == "" {
			rec.Name = ""
			if v.Policy().AllowsIP(info.orig.Addr(), port, policy.TCP) {
				v.passthrough(ctx, rc, info.orig.Addr().String(), port, rec, "tcp")
				return
			}
			deny("TLS without SNI to an address the policy does not allow")
			return
		}
		rec.Name = sni
		n, reason := v.checkName(sni, port, info.orig)
		if reason != "" {
			deny(reason)
			return
		}
		name = n
	} else { // CONNECT: the authority was checked; the SNI must agree
		name, port = info.name, info.port
		if sni != "" {
			n, err := policy.NormalizeName(sni)
			if err != nil {
				if ip, perr := netip.ParseAddr(sni); perr == nil {
					n = ip.Unmap().String()
				} else {
					deny(fmt.Sprintf("bad TLS server name: %v", err))
					return
				}
			}
			if n != name {
				deny(fmt.Sprintf("SNI/authority mismatch: TLS server name %s, CONNECT %s", n, name))
				return
			}
		}
	}
	rec.Name = name
	if !v.interceptFor(name, port) {
		v.passthrough(ctx, rc, name, port, rec, "tls-passthrough")
		return
	}
	if p.cfg.CA == nil {
		deny("interception needed for a secret host but no CA is configured")
		return
	}
	leaf, err := p.cfg.CA.Leaf(name)
	if err != nil {
		deny(err.Error())
		return
	}
	tc := tls.Server(rc, &tls.Config{
		Certificates: []tls.Certificate{*leaf},
		NextProtos:   []string{"http/1.1"},
		MinVersion:   tls.VersionTLS12,
	})
	tc.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		deny(fmt.Sprintf("TLS handshake with the guest: %v", err))
		return
	}
	tc.SetDeadline(time.Time{})
	v.serveHTTPConn(ctx, tc, &connInfo{vm: v, kind: kindIntercept, via: info.via, orig: info.orig, name: name, port: port})
}

// passthrough connects to name:port (resolved by the proxy) and splices
// the guest's connection (with its replayed first bytes) to it.
func (v *VM) passthrough(ctx context.Context, guest net.Conn, name string, port uint16, rec egresslog.Record, kind string) {
	p := v.p
	start := p.cfg.Now()
	rec.Kind = kind
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	up, err := p.dialUpstream(dctx, "tcp", net.JoinHostPort(name, strconv.Itoa(int(port))))
	cancel()
	if err != nil {
		rec.Verdict, rec.Reason = egresslog.Deny, fmt.Sprintf("upstream: %v", err)
		v.record(rec)
		return
	}
	rec.IP = addrPortOf(up.RemoteAddr()).Addr().String()
	iu := newIdleConn(up, p.cfg.IdleTimeout)
	if g := findIdle(guest); g != nil {
		g.shareActivity(iu) // a long download with a silent guest is not idle
	}
	if !p.conns.track(iu) {
		iu.Close()
		return
	}
	defer p.conns.untrack(iu)
	up2, down := splice(guest, iu)
	rec.Verdict = egresslog.Allow
	rec.BytesUp, rec.BytesDown = up2, down
	rec.Duration = p.cfg.Now().Sub(start).Seconds()
	v.record(rec)
}

// dialUpstream resolves the host of addr with the proxy's resolver and
// dials the first address AllowUpstream accepts that answers.
func (p *Proxy) dialUpstream(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip.Unmap()}
	} else {
		rctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
		addrs, err = p.cfg.Resolver.LookupNetIP(rctx, "ip", host)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
	}
	var lastErr error
	tried := 0
	for _, a := range addrs {
		a = a.Unmap()
		if !p.cfg.AllowUpstream(a) {
			continue
		}
		tried++
		c, err := p.cfg.Dialer.DialContext(ctx, "tcp", net.JoinHostPort(a.String(), portStr))
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	if tried == 0 {
		return nil, fmt.Errorf("%s resolves to no address the proxy may connect to (%v)", host, addrs)
	}
	return nil, lastErr
}
