//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
)

// testCA is a throwaway CA for TestEgress's upstream servers; its
// certificate is at file (the daemon's egress_extra_ca).
type testCA struct {
	file string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(file string) (*testCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "banger e2e egress test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(file, p, 0o644); err != nil {
		return nil, err
	}
	return &testCA{file: file, cert: cert, key: key, pem: p}, nil
}

// leaf mints a server certificate for names.
func (c *testCA) leaf(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		DNSNames: names, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestEgress's uplink: the daemon's upstream resolver (10.250.1.2:53, as
// TestHostileNetwork's) and servers at 10.250.1.2 (api.test, *.wild.test)
// and 10.250.3.2 (other.test, never allowed by name).
const (
	egressMain  = hostileUplinkPeer
	egressOther = "10.250.3.2"
)

type egressDNS struct {
	mu    sync.Mutex
	asked map[string]bool
}

func (d *egressDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg).SetReply(req)
	for _, q := range req.Question {
		name := strings.ToLower(q.Name)
		d.mu.Lock()
		d.asked[name] = true
		d.mu.Unlock()
		ip := egressMain
		if name == "other.test." {
			ip = egressOther
		}
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A: net.ParseIP(ip)})
		}
	}
	w.WriteMsg(m)
}

func (d *egressDNS) wasAsked(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.asked[dns.Fqdn(name)]
}

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func egressUplink(t *testing.T, ctx context.Context) (*egressDNS, *countingListener, *countingListener) {
	t.Helper()
	uplink := fmt.Sprintf("banger-e2e-eg-%d", os.Getpid())
	if r := e.command(ctx, "", "ip", "netns", "add", uplink); r.code != 0 {
		t.Fatalf("ip netns add: %s", r)
	}
	t.Cleanup(func() { e.command(context.Background(), "", "ip", "netns", "del", uplink) })
	for _, args := range [][]string{
		{"ip", "link", "add", "e2eeg0", "type", "veth", "peer", "name", "e2eeg1", "netns", uplink},
		{"ip", "addr", "add", hostileUplinkHost + "/30", "dev", "e2eeg0"},
		{"ip", "link", "set", "e2eeg0", "up"},
		{"ip", "route", "add", egressOther + "/32", "via", egressMain},
	} {
		if r := e.inNS(ctx, args[0], args[1:]...); r.code != 0 {
			t.Fatalf("%v: %s", args, r)
		}
	}
	t.Cleanup(func() { e.inNS(context.Background(), "ip", "link", "del", "e2eeg0") })
	for _, args := range [][]string{
		{"addr", "add", egressMain + "/30", "dev", "e2eeg1"},
		{"addr", "add", egressOther + "/32", "dev", "e2eeg1"},
		{"link", "set", "e2eeg1", "up"},
		{"link", "set", "lo", "up"},
	} {
		if r := e.command(ctx, "", "ip", append([]string{"-n", uplink}, args...)...); r.code != 0 {
			t.Fatalf("%v: %s", args, r)
		}
	}
	d := &egressDNS{asked: map[string]bool{}}
	mainCert := e.egressCA.leaf(t, "api.test", "*.wild.test", "other.test")
	otherCert := e.egressCA.leaf(t, "other.test")
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The Authorization header is echoed as its SHA-256 only: the
		// guest must learn that the real secret arrived without ever
		// receiving it.
		sum := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		fmt.Fprintf(w, "served-by=%s host=%s auth-sha256=%s\n", r.Context().Value(http.LocalAddrContextKey), r.Host, hex.EncodeToString(sum[:]))
	})
	var other *countingListener
	var rawAllowed, rawDenied *countingListener
	inNamedNS(t, uplink, func() error {
		pc, err := net.ListenPacket("udp", hostileUpstream)
		if err != nil {
			return err
		}
		tl, err := net.Listen("tcp", hostileUpstream)
		if err != nil {
			return err
		}
		for _, srv := range []*dns.Server{{PacketConn: pc, Handler: d}, {Listener: tl, Handler: d}} {
			go srv.ActivateAndServe()
			t.Cleanup(func() { srv.Shutdown() })
		}
		serve := func(addr string, cert *tls.Certificate) (*countingListener, error) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, err
			}
			cl := &countingListener{Listener: ln}
			var l net.Listener = cl
			if cert != nil {
				l = tls.NewListener(cl, &tls.Config{Certificates: []tls.Certificate{*cert}})
			}
			hs := &http.Server{Handler: echo}
			go hs.Serve(l)
			t.Cleanup(func() { hs.Close() })
			return cl, nil
		}
		if _, err := serve(egressMain+":443", &mainCert); err != nil {
			return err
		}
		if _, err := serve(egressMain+":80", nil); err != nil {
			return err
		}
		if other, err = serve(egressOther+":443", &otherCert); err != nil {
			return err
		}
		if rawAllowed, err = serve(egressOther+":8443", nil); err != nil {
			return err
		}
		rawDenied, err = serve(egressOther+":8444", nil)
		return err
	})
	_ = rawAllowed
	return d, other, rawDenied
}

// buildEgressClient builds the guest's HTTP client (static) into dir.
func buildEgressClient(t *testing.T, ctx context.Context, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "egc")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./testdata/egressclient")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build egress client: %v\n%s", err, b)
	}
	return out
}

// egressRecords reads the VM's egress log from its state directory.
func egressRecords(t *testing.T, ctx context.Context, vm string) []map[string]any {
	t.Helper()
	r := must(t, e.cli(ctx, "", "vm", "show", "--json", vm))
	var v struct{ ID string }
	jsonUnmarshal(t, r.stdout, &v)
	files, _ := filepath.Glob(filepath.Join(e.root, "state", "*", "vms", v.ID, "egress.jsonl"))
	if len(files) == 0 {
		files, _ = filepath.Glob(filepath.Join(e.root, "state", "vms", v.ID, "egress.jsonl"))
	}
	if len(files) == 0 {
		t.Fatalf("no egress log for %s under %s", vm, e.root)
	}
	f, err := os.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(io.LimitReader(f, 8<<20))
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

func hasRecord(recs []map[string]any, name, verdict string) bool {
	for _, r := range recs {
		if r["name"] == name && r["verdict"] == verdict {
			return true
		}
	}
	return false
}

// egressChains counts the egress chains and the rules naming ip in
// banger's ip table.
func egressChains(t *testing.T, ip string) (chains, rules int) {
	t.Helper()
	inDaemonNS(t, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tables, _ := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		for _, tb := range tables {
			if tb.Name != "banger" {
				continue
			}
			all, _ := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
			for _, ch := range all {
				if ch.Table.Name != tb.Name {
					continue
				}
				if strings.HasPrefix(ch.Name, "egress_") {
					chains++
				}
				rs, _ := c.GetRules(tb, ch)
				for _, r := range rs {
					if strings.Contains(string(r.UserData), ip+" ") {
						rules++
					}
				}
			}
		}
	})
	return chains, rules
}

// TestEgress (bridge mode): a VM under an allow policy, against an uplink
// namespace with its own resolver and HTTPS servers (certificates from the
// run's test CA, which the daemon trusts through egress_extra_ca):
//   - an allowed name and a wildcard name work over HTTPS through the
//     transparent proxy (TLS passed through: the guest verifies the real
//     server's certificate);
//   - a name outside the policy is NXDOMAIN and never reaches the upstream
//     resolver;
//   - HTTPS to the non-allowed server by address is refused by the proxy
//     and that server sees no connection; raw TCP to a non-allowed
//     address:port is dropped, to the allowed CIDR rule's port it works;
//   - an SNI that banger's DNS did not resolve to the destination is
//     refused, as is a plain-HTTP Host outside the policy;
//   - the egress log shows the allowed and the refused attempts;
//   - vm set changes the policy of the running VM at once;
//   - deleting the VM leaves no egress rule behind.
func TestEgress(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 12*time.Minute)
	up, other, rawDenied := egressUplink(t, ctx)
	client := buildEgressClient(t, ctx, t.TempDir())
	policyArgs := []string{"--allow", "api.test", "--allow", "*.wild.test", "--allow", egressOther + ":8443/tcp"}
	vm := newVM(t, ctx, "egbox", policyArgs...)
	ip := vmIP(t, ctx, vm)
	must(t, e.cli(ctx, "", "vm", "cp", client, vm+":/usr/local/bin/egc"))
	must(t, e.cli(ctx, "", "vm", "cp", e.egressCA.file, vm+":/root/ca.pem"))
	egc := func(args string) string {
		r := e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", "chmod +x /usr/local/bin/egc; egc -ca /root/ca.pem "+args+" 2>&1; true")
		return r.stdout + r.stderr
	}
	if ch, _ := egressChains(t, ip); ch != 2 {
		t.Errorf("%d egress chains while a filtered vm runs, want 2", ch)
	}
	if out := must(t, e.cli(ctx, "", "vm", "show", vm)).stdout; !strings.Contains(out, "allow api.test, *.wild.test") {
		t.Errorf("vm show lacks the policy:\n%s", out)
	}

	if out := egc("https://api.test/"); !strings.Contains(out, "status 200") || !strings.Contains(out, "host=api.test") {
		t.Errorf("allowed name: %s", out)
	}
	if out := egc("https://deep.wild.test/"); !strings.Contains(out, "status 200") {
		t.Errorf("wildcard name: %s", out)
	}
	if out := egc("https://other.test/"); !strings.Contains(out, "no such host") {
		t.Errorf("name outside the policy: %s (want NXDOMAIN: no such host)", out)
	}
	if up.wasAsked("other.test") {
		t.Errorf("the upstream resolver was asked for a name outside the policy")
	}
	// By address, with the right SNI: the proxy refuses, the server
	// never sees a connection.
	if out := egc("-connect " + egressOther + ":443 https://other.test/"); strings.Contains(out, "status 200") {
		t.Errorf("non-allowed server by address: %s", out)
	}
	// SNI of an allowed name to an address banger's DNS did not give
	// for it: refused.
	if out := egc("-connect " + egressOther + ":443 https://api.test/"); strings.Contains(out, "status 200") {
		t.Errorf("SNI/destination mismatch: %s", out)
	}
	if n := other.n.Load(); n != 0 {
		t.Errorf("the non-allowed server saw %d connections", n)
	}
	// Plain HTTP: the Host header decides.
	if out := egc("http://api.test/"); !strings.Contains(out, "status 200") {
		t.Errorf("plain http to an allowed name: %s", out)
	}
	if out := egc("-host other.test http://api.test/"); strings.Contains(out, "status 200") {
		t.Errorf("plain http with a Host outside the policy: %s", out)
	}
	// Raw TCP: only the CIDR rule's port.
	raw := func(port string) string {
		return strings.TrimSpace(guest(t, ctx, vm, `timeout 5 bash -c 'exec 3<>/dev/tcp/`+egressOther+`/`+port+`' 2>/dev/null && echo connected || echo blocked`))
	}
	if got := raw("8443"); got != "connected" {
		t.Errorf("allowed address:port: %s", got)
	}
	if got := raw("8444"); got != "blocked" || rawDenied.n.Load() != 0 {
		t.Errorf("non-allowed address:port: %s (%d accepted)", got, rawDenied.n.Load())
	}

	recs := egressRecords(t, ctx, vm)
	if !hasRecord(recs, "api.test", "allow") || !hasRecord(recs, "deep.wild.test", "allow") || !hasRecord(recs, "other.test", "deny") {
		b, _ := json.MarshalIndent(recs, "", " ")
		t.Errorf("egress log lacks the allowed/refused attempts:\n%s", b)
	}

	if out := must(t, e.cli(ctx, "", "vm", "egress", vm)).stdout; !strings.Contains(out, "allow api.test") || !strings.Contains(out, "deny  other.test") {
		t.Errorf("vm egress:\n%s", out)
	}

	// A policy change on the running VM takes effect at once.
	must(t, e.cli(ctx, "", append([]string{"vm", "set", vm, "--allow", "other.test"}, policyArgs...)...))
	if out := egc("https://other.test/"); !strings.Contains(out, "status 200") {
		t.Errorf("after allowing other.test: %s", out)
	}
	must(t, e.cli(ctx, "", append([]string{"vm", "set", vm}, policyArgs...)...))
	if out := egc("https://other.test/"); strings.Contains(out, "status 200") {
		t.Errorf("after removing other.test again: %s", out)
	}
	// --egress none: nothing, not even the allowed name.
	must(t, e.cli(ctx, "", "vm", "set", vm, "--egress", "none"))
	if out := egc("https://api.test/"); strings.Contains(out, "status 200") {
		t.Errorf("after --egress none: %s", out)
	}
	if ch, rules := egressChains(t, ip); ch != 0 || rules != 0 {
		t.Errorf("after --egress none: %d egress chains, %d rules for %s", ch, rules, ip)
	}
	must(t, e.cli(ctx, "", append([]string{"vm", "set", vm}, policyArgs...)...))
	if ch, _ := egressChains(t, ip); ch != 2 {
		t.Errorf("after allowing again: %d egress chains", ch)
	}

	t.Run("secret", func(t *testing.T) { egressSecret(t, ctx, vm, other, policyArgs) })

	must(t, e.cli(ctx, "", "vm", "delete", vm))
	if ch, rules := egressChains(t, ip); ch != 0 || rules != 0 {
		t.Errorf("after delete: %d egress chains, %d rules for %s", ch, rules, ip)
	}
}

// egressSecret: a secret given to the running VM by vm set reaches the
// guest as a placeholder; the proxy (TLS intercepted with banger's CA,
// which the guest now trusts) substitutes the real value on requests to
// the secret's host only, and the real value is nowhere in the guest: not
// in any process environment, not on its disks, not in its memory (the
// whole VMM process memory, which holds guest RAM, read through
// /proc/PID/mem; the placeholder is found in the same read).
func egressSecret(t *testing.T, ctx context.Context, vm string, other *countingListener, policyArgs []string) {
	buf := make([]byte, 16)
	rand.Read(buf)
	real := "sk-e2e-" + hex.EncodeToString(buf)
	must(t, e.cli(ctx, real+"\n", "secret", "set", "MY_KEY"))
	t.Cleanup(func() { e.cli(context.Background(), "", "secret", "rm", "MY_KEY") })
	if out := must(t, e.cli(ctx, "", "secret", "list")).stdout; strings.TrimSpace(out) != "MY_KEY" {
		t.Errorf("secret list: %q", out)
	}
	must(t, e.cli(ctx, "", append([]string{"vm", "set", vm, "--secret", "MY_KEY", "--secret-host", "api.test"}, policyArgs...)...))
	want := sha256.Sum256([]byte("Bearer " + real))
	run := func(script string) string {
		r := e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", script+" 2>&1; true")
		return r.stdout + r.stderr
	}
	ph := strings.TrimSpace(run(`printf %s "$MY_KEY"`))
	if !strings.HasPrefix(ph, "banger-secret-") || strings.Contains(ph, real) {
		t.Fatalf("guest $MY_KEY = %q, want a placeholder", ph)
	}
	// The system trust store (no -ca): banger's CA is installed.
	out := run(`egc -header "Authorization: Bearer $MY_KEY" https://api.test/`)
	if !strings.Contains(out, "auth-sha256="+hex.EncodeToString(want[:])) {
		t.Errorf("the server did not get the real secret: %s", out)
	}
	if strings.Contains(out, real) {
		t.Errorf("the real secret reached the guest: %s", out)
	}
	// The placeholder elsewhere: refused (plain HTTP is read by the
	// proxy; other.test is not allowed at all).
	if out := run(`egc -header "Authorization: Bearer $MY_KEY" http://api.test/`); strings.Contains(out, "status 200") {
		t.Errorf("placeholder over plain http accepted: %s", out)
	}
	before := other.n.Load() // the policy-change check connected to it
	if out := run(`egc -ca /root/ca.pem -header "Authorization: Bearer $MY_KEY" -connect ` + egressOther + `:443 https://other.test/`); strings.Contains(out, "status 200") || other.n.Load() != before {
		t.Errorf("placeholder to the non-allowed server: %s (%d new connections)", out, other.n.Load()-before)
	}
	recs := egressRecords(t, ctx, vm)
	substituted := false
	for _, r := range recs {
		if r["name"] == "api.test" && r["secret"] == true {
			substituted = true
		}
	}
	if !substituted {
		t.Errorf("egress log shows no substitution")
	}
	// A process keeps the placeholder in its environment while we look.
	run(`setsid nohup sleep 600 >/dev/null 2>&1 < /dev/null &`)
	environ := run(`cat /proc/[0-9]*/environ | tr '\0' '\n'`)
	if !strings.Contains(environ, ph) {
		t.Errorf("no guest process environment holds the placeholder")
	}
	if strings.Contains(environ, real) {
		t.Errorf("the real secret is in a guest process environment")
	}
	var v struct {
		ID  string
		PID int
	}
	jsonUnmarshal(t, must(t, e.cli(ctx, "", "vm", "show", "--json", vm)).stdout, &v)
	dirs, _ := filepath.Glob(filepath.Join(e.root, "state", "*", "vms", v.ID))
	if len(dirs) == 0 {
		t.Fatalf("no state dir for %s", vm)
	}
	files, _ := filepath.Glob(filepath.Join(dirs[0], "*"))
	for _, f := range files {
		if strings.HasSuffix(f, "egress.jsonl") {
			continue
		}
		if n := countInFile(t, f, nil, []byte(real)); n > 0 {
			t.Errorf("the real secret is on the VM's disk file %s", f)
		}
	}
	found := countInFile(t, fmt.Sprintf("/proc/%d/mem", v.PID), procMaps(t, v.PID), []byte(real), []byte(ph))
	if found&2 == 0 {
		t.Errorf("the placeholder is not in the VM's memory: the search does not work")
	}
	if found&1 != 0 {
		t.Errorf("the real secret is in the VM's memory")
	}
}

// region is a readable range of a process's memory.
type region struct{ start, end int64 }

func procMaps(t *testing.T, pid int) []region {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []region
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[1][0] != 'r' {
			continue
		}
		var s, e int64
		if _, err := fmt.Sscanf(f[0], "%x-%x", &s, &e); err == nil {
			out = append(out, region{s, e})
		}
	}
	return out
}

// countInFile searches file (only the given regions, or all of it) for
// each needle and returns a bit set: bit i for needle i found.
func countInFile(t *testing.T, file string, regions []region, needles ...[]byte) int {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if regions == nil {
		fi, _ := f.Stat()
		regions = []region{{0, fi.Size()}}
	}
	found := 0
	const chunk = 4 << 20
	overlap := 256
	buf := make([]byte, chunk+overlap)
	for _, r := range regions {
		for off := r.start; off < r.end; off += chunk {
			n := int(min(int64(len(buf)), r.end-off))
			m, _ := f.ReadAt(buf[:n], off)
			for i, nd := range needles {
				if bytes.Contains(buf[:m], nd) {
					found |= 1 << i
				}
			}
		}
	}
	return found
}
