package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/egress/ca"
	"banger/internal/egress/egresslog"
	"banger/internal/egress/policy"
	"banger/internal/secrets"
)

const realSecret = "sk-REAL-value-0123456789"

// fakeResolver answers from a map; unknown names are NXDOMAIN.
type fakeResolver struct {
	mu sync.Mutex
	m  map[string][]netip.Addr
}

func (f *fakeResolver) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var as []netip.Addr
	for _, a := range addrs {
		as = append(as, netip.MustParseAddr(a))
	}
	f.m[name] = as
}

func (f *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.m[strings.ToLower(host)]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// upstream is a test server on 127.0.0.x that echoes what it received.
type upstream struct {
	srv   *httptest.Server
	addr  netip.AddrPort
	conns atomic.Int64
}

type env struct {
	t          testing.TB
	upCA       *ca.CA
	upPool     *x509.CertPool
	bangerCA   *ca.CA
	bangerPool *x509.CertPool
	res        *fakeResolver
	store      *secrets.Store
	proxy      *Proxy
	vm         *VM
	bindings   *secrets.Bindings
	log        *egresslog.Log
	logPath    string
	ctx        context.Context
}

func newEnv(t testing.TB, spec policy.Spec, tweak ...func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, res: &fakeResolver{m: map[string][]netip.Addr{}}}
	var err error
	if e.upCA, err = ca.LoadOrCreate(filepath.Join(dir, "upstream-ca")); err != nil {
		t.Fatal(err)
	}
	e.upPool = x509.NewCertPool()
	e.upPool.AppendCertsFromPEM(e.upCA.CertPEM())
	if e.bangerCA, err = ca.LoadOrCreate(filepath.Join(dir, "banger-ca")); err != nil {
		t.Fatal(err)
	}
	e.bangerPool = x509.NewCertPool()
	e.bangerPool.AppendCertsFromPEM(e.bangerCA.CertPEM())
	if e.store, err = secrets.Open(filepath.Join(dir, "state")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	for _, n := range []string{"MY_KEY", "OTHER_KEY", "BODY_KEY"} {
		if err := e.store.Set(n, []byte(realSecret+"-"+n)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{
		Resolver:         e.res,
		CA:               e.bangerCA,
		Secrets:          e.store,
		ExtraRootCAs:     e.upCA.CertPEM(), // system roots + the test CA
		AllowUpstream:    func(netip.Addr) bool { return true },
		HandshakeTimeout: 2 * time.Second,
		IdleTimeout:      5 * time.Second,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	if e.proxy, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.proxy.Close() })
	e.logPath = filepath.Join(dir, "egress.jsonl")
	if e.log, err = egresslog.Open(e.logPath, 1<<20); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.log.Close() })
	pol, err := policy.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	if e.bindings, err = secrets.Bind(pol); err != nil {
		t.Fatal(err)
	}
	if e.vm, err = e.proxy.NewVM(VMConfig{Name: "dev", Policy: pol, Bindings: e.bindings, Log: e.log}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e.ctx = ctx
	return e
}

func (e *env) placeholder(secret string) string {
	ph, ok := e.bindings.Placeholder(secret)
	if !ok {
		e.t.Fatalf("no placeholder for %s", secret)
	}
	return ph
}

// upstream starts an echo server for name on ip (TLS unless plain) and
// makes the proxy's resolver answer name -> ip.
func (e *env) upstream(name, ip string, plain bool) *upstream {
	e.t.Helper()
	return e.upstreamWith(name, ip, plain, nil)
}

// upstreamWith is upstream with handler h instead of the echo.
func (e *env) upstreamWith(name, ip string, plain bool, h http.Handler) *upstream {
	e.t.Helper()
	u := &upstream{}
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		cert := ""
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cert = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		fmt.Fprintf(w, "server=%s\nhost=%s\nauth=%s\nbody=%s\nclientcert=%s\n", name, r.Host, r.Header.Get("Authorization"), body, cert)
	})
	if h == nil {
		h = echo
	}
	srv := httptest.NewUnstartedServer(h)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		e.t.Fatal(err)
	}
	srv.Listener = ln
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	if plain {
		srv.Start()
	} else {
		leaf, err := e.upCA.Leaf(name)
		if err != nil {
			e.t.Fatal(err)
		}
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*leaf}, ClientAuth: tls.RequestClientCert}
		srv.StartTLS()
	}
	e.t.Cleanup(srv.Close)
	u.srv = srv
	u.addr = netip.MustParseAddrPort(ln.Addr().String())
	e.res.set(name, ip)
	return u
}

// transparent starts a listener whose connections the VM serves as if
// nftables had redirected them from orig.
func (e *env) transparent(orig netip.AddrPort) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go e.vm.ServeConn(e.ctx, c, orig)
		}
	}()
	return ln.Addr().String()
}

// explicit starts the VM's HTTP proxy listener (user mode).
func (e *env) explicit() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	go e.vm.Serve(e.ctx, ln)
	return ln.Addr().String()
}

// client returns an HTTP client that trusts pool and sends every
// connection to proxyAddr: as a transparent redirect would (viaProxy
// false) or as an HTTP proxy (true).
func (e *env) client(proxyAddr string, viaProxy bool, pool *x509.CertPool, clientCert *tls.Certificate) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		DisableKeepAlives: true,
	}
	if clientCert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*clientCert}
	}
	if viaProxy {
		u, _ := url.Parse("http://" + proxyAddr)
		tr.Proxy = http.ProxyURL(u)
	} else {
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", proxyAddr)
		}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(c *http.Client, u string, hdr ...string) (int, string, error) {
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// records returns the VM's log once n records are there (or fails).
func (e *env) records(n int) []egresslog.Record {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var out []egresslog.Record
		egresslog.Read(e.logPath, func(r egresslog.Record) error { out = append(out, r); return nil })
		if len(out) >= n || time.Now().After(deadline) {
			if len(out) < n {
				e.t.Fatalf("want %d log records, have %d: %+v", n, len(out), out)
			}
			return out
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lastRecord waits for the n-th record and returns it.
func (e *env) lastRecord(n int) egresslog.Record {
	e.t.Helper()
	r := e.records(n)
	return r[n-1]
}

func httpsURL(name string, u *upstream) string {
	return fmt.Sprintf("https://%s:%d/", name, u.addr.Port())
}

func httpURL(name string, u *upstream) string {
	return fmt.Sprintf("http://%s:%d/", name, u.addr.Port())
}
