package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"banger/internal/egress/egresslog"
	"banger/internal/egress/policy"
	"banger/internal/secrets"
)

// target is where a request read by the proxy goes.
type target struct {
	scheme string // http or https
	name   string // normalised host name or IP literal
	port   uint16
}

func (p *Proxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	sc := r.Context().Value(connKey{}).(*servedConn)
	sc.requests.Add(1)
	info := sc.info
	v := info.vm
	rec := egresslog.Record{Via: info.via, IP: ipString(info.orig), Method: r.Method, Path: r.URL.Path, Kind: "http"}
	deny := func(status int, reason string) {
		rec.Verdict, rec.Reason, rec.Status = egresslog.Deny, reason, status
		v.record(rec)
		w.Header().Set("Connection", "close")
		http.Error(w, "banger egress: "+reason, status)
	}
	if r.Method == http.MethodConnect && info.kind != kindExplicit {
		deny(http.StatusMethodNotAllowed, "CONNECT is only for the explicit proxy")
		return
	}
	switch info.kind {
	case kindExplicit:
		if r.Method == http.MethodConnect {
			v.handleConnect(w, r, sc)
			return
		}
		rec.Name = r.URL.Host
		if !r.URL.IsAbs() || r.URL.Host == "" {
			deny(http.StatusBadRequest, "not a proxy request (want an absolute http:// URL or CONNECT)")
			return
		}
		if r.URL.Scheme != "http" {
			deny(http.StatusBadRequest, fmt.Sprintf("scheme %q: only http:// in absolute form (use CONNECT for https)", r.URL.Scheme))
			return
		}
		host, port, err := splitHostPort(r.URL.Host, 80)
		if err != nil {
			deny(http.StatusBadRequest, err.Error())
			return
		}
		rec.Port = port
		name, reason := v.checkName(host, port, netip.AddrPort{})
		if reason != "" {
			deny(http.StatusForbidden, reason)
			return
		}
		v.forward(w, r, target{"http", name, port}, rec)
	case kindTransparentHTTP:
		port := info.orig.Port()
		rec.Name, rec.Port = r.Host, port
		host, hport, err := splitHostPort(r.Host, port)
		if err != nil {
			deny(http.StatusBadRequest, err.Error())
			return
		}
		if hport != port {
			deny(http.StatusForbidden, fmt.Sprintf("Host port %d differs from the destination port %d", hport, port))
			return
		}
		name, reason := v.checkName(host, port, info.orig)
		if reason != "" {
			deny(http.StatusForbidden, reason)
			return
		}
		v.forward(w, r, target{"http", name, port}, rec)
	case kindIntercept:
		rec.Kind, rec.Name, rec.Port = "tls-intercept", info.name, info.port
		host, hport, err := splitHostPort(r.Host, info.port)
		if err != nil {
			deny(http.StatusBadRequest, err.Error())
			return
		}
		n, nerr := policy.NormalizeName(host)
		if nerr != nil || n != info.name || hport != info.port {
			deny(http.StatusForbidden, fmt.Sprintf("SNI/Host mismatch: TLS server name %s, Host %s", info.name, r.Host))
			return
		}
		// The policy may have changed since the handshake.
		if _, reason := v.checkName(info.name, info.port, netip.AddrPort{}); reason != "" {
			deny(http.StatusForbidden, reason)
			return
		}
		v.forward(w, r, target{"https", info.name, info.port}, rec)
	}
}

// splitHostPort splits an authority, with def as the port when there is
// none, and checks the port.
func splitHostPort(hostport string, def uint16) (string, uint16, error) {
	if hostport == "" {
		return "", 0, fmt.Errorf("no host")
	}
	host, ps, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port (or a bare IPv6 literal in brackets).
		return trimBrackets(hostport), def, nil
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("bad port in %q", hostport)
	}
	return host, uint16(n), nil
}

// handleConnect serves CONNECT host:port: the authority decides, then
// the tunnel is TLS (SNI must agree, maybe intercepted) or raw TCP.
func (v *VM) handleConnect(w http.ResponseWriter, r *http.Request, sc *servedConn) {
	info := sc.info
	rec := egresslog.Record{Via: "connect", Kind: "connect", Name: r.Host}
	deny := func(status int, reason string) {
		rec.Verdict, rec.Reason = egresslog.Deny, reason
		v.record(rec)
		w.Header().Set("Connection", "close")
		http.Error(w, "banger egress: "+reason, status)
	}
	host, ps, err := net.SplitHostPort(r.Host)
	n, perr := strconv.ParseUint(ps, 10, 16)
	if err != nil || perr != nil || n == 0 {
		deny(http.StatusBadRequest, fmt.Sprintf("CONNECT %q: want host:port", r.Host))
		return
	}
	port := uint16(n)
	rec.Name, rec.Port = host, port
	name, reason := v.checkName(host, port, netip.AddrPort{})
	if reason != "" {
		deny(http.StatusForbidden, reason)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		deny(http.StatusInternalServerError, "cannot hijack the connection")
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	info.hijacked.Store(true)
	defer conn.Close()
	conn.SetDeadline(time.Time{})
	var c net.Conn = conn
	if n := brw.Reader.Buffered(); n > 0 { // the guest did not wait for 200
		b, _ := brw.Reader.Peek(n)
		c = &rewindConn{Conn: conn, buf: append([]byte(nil), b...)}
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	first := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(v.p.cfg.HandshakeTimeout))
	if _, err := io.ReadFull(c, first); err != nil {
		rec.Verdict, rec.Reason = egresslog.Deny, "no data in the tunnel before the deadline"
		v.record(rec)
		return
	}
	c.SetReadDeadline(time.Time{})
	ctx := info.ctx()
	if first[0] == 0x16 {
		v.serveTLS(ctx, c, first, &connInfo{vm: v, via: "connect", name: name, port: port})
		return
	}
	rec.Name = name
	v.passthrough(ctx, &rewindConn{Conn: c, buf: first}, name, port, rec, "tcp")
}

// forward substitutes secrets and sends r to t, streaming the response
// back, and logs the request.
func (v *VM) forward(w http.ResponseWriter, r *http.Request, t target, rec egresslog.Record) {
	p := v.p
	start := p.cfg.Now()
	rec.Name, rec.Port = t.name, t.port
	st := v.state.Load()
	used, status, reason := v.substitute(r, st, t)
	if reason != "" {
		rec.Verdict, rec.Reason, rec.Status = egresslog.Deny, reason, status
		v.record(rec)
		w.Header().Set("Connection", "close")
		http.Error(w, "banger egress: "+reason, status)
		return
	}
	rec.Secrets = used
	rec.Secret = len(used) > 0

	var mu sync.Mutex
	var upstreamErr error
	body := &countingReader{r: r.Body}
	r.Body = body
	cw := &countingWriter{ResponseWriter: w}
	trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
		mu.Lock()
		rec.IP = addrPortOf(ci.Conn.RemoteAddr()).Addr().String()
		mu.Unlock()
	}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = t.scheme
			pr.Out.URL.Host = net.JoinHostPort(t.name, strconv.Itoa(int(t.port)))
			pr.Out.Host = pr.In.Host
		},
		Transport:     p.transport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			mu.Lock()
			upstreamErr = err
			mu.Unlock()
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	// ReverseProxy aborts the handler with a panic (http.ErrAbortHandler)
	// when the copy fails midway: the record is written in any case.
	completed := false
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		rec.Status = cw.status
		rec.BytesUp, rec.BytesDown = body.n, cw.n
		rec.Duration = p.cfg.Now().Sub(start).Seconds()
		rec.Verdict = egresslog.Allow
		switch {
		case upstreamErr != nil:
			rec.Verdict, rec.Reason = egresslog.Deny, fmt.Sprintf("upstream: %v", upstreamErr)
		case !completed:
			rec.Reason = "aborted while streaming"
		}
		v.record(rec)
	}()
	rp.ServeHTTP(cw, r.WithContext(httptrace.WithClientTrace(r.Context(), trace)))
	completed = true
}

// substitute checks the request's placeholders against t and replaces the
// ones bound to t by their values. It returns the names of the secrets
// used, or an HTTP status and a reason for refusing the request.
func (v *VM) substitute(r *http.Request, st *vmState, t target) ([]string, int, string) {
	p := v.p
	tlsUp := t.scheme == "https"
	// Every placeholder of this VM in the header and URL must be allowed
	// here (placeholders of no binding of this VM are left alone).
	var inHeader []secrets.Binding
	seen := map[string]bool{}
	check := func(s string) (int, string) {
		for _, ph := range secrets.FindPlaceholders(s) {
			if seen[ph] {
				continue
			}
			b, ok := st.bindings.Lookup(ph)
			if !ok {
				continue
			}
			seen[ph] = true
			if !b.Secret.AllowsHost(t.name, t.port) {
				return http.StatusForbidden, fmt.Sprintf("placeholder of secret %s sent to %s:%d, which the secret is not bound to", b.Secret.Name, t.name, t.port)
			}
			if !tlsUp {
				return http.StatusForbidden, fmt.Sprintf("placeholder of secret %s over plain HTTP (the real value would travel in clear)", b.Secret.Name)
			}
			inHeader = append(inHeader, b)
		}
		return 0, ""
	}
	for k, vals := range r.Header {
		if code, reason := check(k); reason != "" {
			return nil, code, reason
		}
		for _, val := range vals {
			if code, reason := check(val); reason != "" {
				return nil, code, reason
			}
		}
	}
	if code, reason := check(r.URL.String()); reason != "" {
		return nil, code, reason
	}

	values := map[string]string{}
	value := func(b secrets.Binding) (string, error) {
		if v, ok := values[b.Secret.Name]; ok {
			return v, nil
		}
		if p.cfg.Secrets == nil {
			return "", fmt.Errorf("no secret store")
		}
		raw, err := p.cfg.Secrets.Get(b.Secret.Name)
		if err != nil {
			return "", err
		}
		values[b.Secret.Name] = string(raw)
		return string(raw), nil
	}
	used := map[string]bool{}

	// Bodies: only for secrets bound to this host that opted in.
	var bodyBindings []secrets.Binding
	if tlsUp {
		for _, b := range st.bindings.All() {
			if b.Secret.Body && b.Secret.AllowsHost(t.name, t.port) {
				bodyBindings = append(bodyBindings, b)
			}
		}
	}
	if len(bodyBindings) > 0 && r.Body != nil && r.Body != http.NoBody {
		if r.Header.Get("Content-Encoding") != "" {
			// A compressed body is forwarded as is (placeholders in it stay).
		} else {
			data, err := io.ReadAll(io.LimitReader(r.Body, p.cfg.MaxSubstBody+1))
			r.Body.Close()
			if err != nil {
				return nil, http.StatusBadRequest, fmt.Sprintf("read request body: %v", err)
			}
			if int64(len(data)) > p.cfg.MaxSubstBody {
				return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes cannot be scanned for secrets", p.cfg.MaxSubstBody)
			}
			for _, ph := range secrets.FindPlaceholders(string(data)) {
				b, ok := st.bindings.Lookup(ph)
				if !ok {
					continue
				}
				if !b.Secret.AllowsHost(t.name, t.port) {
					return nil, http.StatusForbidden, fmt.Sprintf("placeholder of secret %s sent to %s:%d, which the secret is not bound to", b.Secret.Name, t.name, t.port)
				}
				if !b.Secret.Body {
					continue
				}
				val, err := value(b)
				if err != nil {
					return nil, http.StatusBadGateway, fmt.Sprintf("secret %s: %v", b.Secret.Name, err)
				}
				data = bytes.ReplaceAll(data, []byte(ph), []byte(val))
				used[b.Secret.Name] = true
			}
			r.Body = io.NopCloser(bytes.NewReader(data))
			r.ContentLength = int64(len(data))
			r.TransferEncoding = nil
			r.Header.Del("Content-Length")
		}
	}

	for _, b := range inHeader {
		val, err := value(b)
		if err != nil {
			return nil, http.StatusBadGateway, fmt.Sprintf("secret %s: %v", b.Secret.Name, err)
		}
		for k, vals := range r.Header {
			for i, hv := range vals {
				if !strings.Contains(hv, b.Placeholder) {
					continue
				}
				nv := strings.ReplaceAll(hv, b.Placeholder, val)
				if !httpguts.ValidHeaderFieldValue(nv) {
					return nil, http.StatusBadGateway, fmt.Sprintf("secret %s: its value is not valid in an HTTP header", b.Secret.Name)
				}
				vals[i] = nv
				used[b.Secret.Name] = true
			}
			r.Header[k] = vals
		}
	}
	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, 0, ""
}

type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
}

func (c *countingWriter) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
	c.ResponseWriter.WriteHeader(s)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController (used by ReverseProxy to flush and
// to hijack for upgrades) reach the real writer.
func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// ctx is the context of the connection's ServeConn.
func (i *connInfo) ctx() context.Context {
	if i.parent != nil {
		return i.parent
	}
	return context.Background()
}
