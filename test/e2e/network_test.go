//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
)

func needNetns(t *testing.T) {
	t.Helper()
	if !e.netns {
		t.Skip("needs root: the daemon and its guest networks run in a namespace this run creates")
	}
}

// inDaemonNS runs f on a thread switched into the run's network namespace
// (the daemon's); sockets made there stay in it.
func inDaemonNS(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(e.nsPath())
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	f()
}

// dnsQuery asks the daemon's DNS listener (in the run's namespace) for
// name's A record: the address (empty if none) and the rcode; no answer
// at all is an error of the test.
func dnsQuery(t *testing.T, name string) (string, int) {
	t.Helper()
	ans, rcode, err := dnsLookup(t, name)
	if err != nil {
		t.Errorf("dns query %s: %v", name, err)
	}
	return ans, rcode
}

// dnsLookup is dnsQuery returning the failure to get an answer (rcode -1).
func dnsLookup(t *testing.T, name string) (ans string, rcode int, err error) {
	t.Helper()
	rcode = -1
	inDaemonNS(t, func() {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		var r *dns.Msg
		r, _, err = (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, "127.0.0.1:42069")
		if err != nil {
			return
		}
		rcode = r.Rcode
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				ans = a.A.String()
			}
		}
	})
	return ans, rcode, err
}

func vmIP(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	r := must(t, e.cli(ctx, "", "vm", "show", "--json", name))
	var v struct{ IP string }
	jsonUnmarshal(t, r.stdout, &v)
	return v.IP
}

// TestBridgeDNS: two VMs reach each other by <name>.vm; the host resolves
// both through the daemon's DNS; a deleted VM's name stops resolving.
func TestBridgeDNS(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 8*time.Minute)
	a := newVM(t, ctx, "neta")
	b := newVM(t, ctx, "netb")
	ipA, ipB := vmIP(t, ctx, a), vmIP(t, ctx, b)
	if ipA == "" || ipB == "" || ipA == ipB {
		t.Fatalf("addresses %q %q", ipA, ipB)
	}
	// Name resolution through the guest's resolver (the bridge address).
	if out := guest(t, ctx, a, "getent hosts netb.vm"); !strings.Contains(out, ipB) {
		t.Errorf("neta resolves netb.vm to %q, want %s", out, ipB)
	}
	// Reachability: sshd in netb may still be starting, so retry.
	out := guest(t, ctx, a, `for i in $(seq 90); do timeout 2 bash -c 'echo > /dev/tcp/`+ipB+`/22' 2>/dev/null && { echo reached; break; }; sleep 1; done
echo; ip neigh; ip route`)
	if !strings.Contains(out, "reached") {
		t.Errorf("neta could not reach netb (%s) on port 22:\n%s", ipB, out)
	}
	query := func(name string) (string, int) { return dnsQuery(t, name) }
	if got, _ := query("neta.vm"); got != ipA {
		t.Errorf("host lookup neta.vm = %q, want %s", got, ipA)
	}
	if got, _ := query("NETB.vm"); got != ipB {
		t.Errorf("host lookup NETB.vm = %q, want %s", got, ipB)
	}
	must(t, e.cli(ctx, "", "vm", "stop", b))
	if got, rc := query("netb.vm"); got != "" || rc != dns.RcodeNameError {
		t.Errorf("stopped vm still resolves: %q rcode %d", got, rc)
	}
}

// TestSSH: vm ssh propagates exit codes and arguments; stock OpenSSH
// reaches NAME.vm after ssh-config --install, whose install/uninstall keep
// the user's own config byte for byte.
func TestSSH(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 5*time.Minute)
	vm := newVM(t, ctx, "sshbox")
	// sshd may still be starting right after boot.
	deadline := time.Now().Add(3 * time.Minute)
	var r result
	for time.Now().Before(deadline) {
		if r = e.cliNS(ctx, "", "vm", "ssh", vm, "--", "true"); r.code == 0 {
			break
		}
		time.Sleep(time.Second)
	}
	if r.code != 0 {
		t.Fatalf("vm ssh: %s", r)
	}
	if r = e.cliNS(ctx, "", "vm", "ssh", vm, "--", "sh", "-c", "exit 42"); r.code != 42 {
		t.Errorf("vm ssh exit code: %s", r)
	}
	if r = e.cliNS(ctx, "", "vm", "ssh", vm, "--", "printf", "[%s]", "a b", "it's", ""); r.stdout != "[a b][it's][]" {
		t.Errorf("vm ssh quoting: %q", r.stdout)
	}

	home := t.TempDir()
	userCfg := filepath.Join(home, ".ssh", "config")
	os.MkdirAll(filepath.Dir(userCfg), 0o700)
	original := "# mine\nHost example\n  User bob\n  Port 2222" // no trailing newline on purpose
	os.WriteFile(userCfg, []byte(original), 0o600)
	env := append(append([]string{}, e.environ...), "HOME="+home)
	run := func(args ...string) result {
		ev := *e
		ev.environ = env
		return ev.cli(ctx, "", args...)
	}
	must(t, run("ssh-config", "--install"))
	must(t, run("ssh-config", "--install"))
	b, _ := os.ReadFile(userCfg)
	if strings.Count(string(b), "Include") != 1 || !strings.Contains(string(b), original) {
		t.Errorf("install not idempotent or clobbered the user's config:\n%s", b)
	}
	// Stock OpenSSH reads the user's config through -F here: it takes ~
	// from the password database, not from $HOME.
	r = e.inNS(ctx, "ssh", "-F", userCfg, "-o", "BatchMode=yes", vm+".vm", "echo", "via-openssh")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "via-openssh" {
		t.Errorf("ssh %s.vm with the installed config: %s", vm, r)
	}
	must(t, run("ssh-config", "--uninstall"))
	if b, _ := os.ReadFile(userCfg); string(b) != original {
		t.Errorf("uninstall did not restore the file:\n%q\nwant\n%q", b, original)
	}
}

// TestNAT: with --nat a guest reaches a server in a second namespace acting
// as the uplink; without it, it cannot; the rule is gone after delete.
func TestNAT(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 8*time.Minute)
	up := newUplink(t, ctx, "e2eup")
	natVM := newVM(t, ctx, "natbox", "--nat")
	plain := newVM(t, ctx, "nonat")
	up.mustReach(t, ctx, natVM)
	if out := e.cli(ctx, "", "vm", "exec", plain, "--", "sh", "-c", uplinkFetch); strings.Contains(out.stdout, "uplink-ok") {
		t.Errorf("guest without --nat reached the uplink")
	}
	natIP := vmIP(t, ctx, natVM)
	// NAT survives stop/start without duplicating its rule.
	must(t, e.cli(ctx, "", "vm", "stop", natVM))
	must(t, e.cli(ctx, "", "vm", "start", natVM))
	if n := masqueradeRules(t, natIP); n != 1 {
		t.Errorf("%d masquerade rules for %s after stop/start, want 1", n, natIP)
	}
	must(t, e.cli(ctx, "", "vm", "delete", natVM))
	if n := masqueradeRules(t, natIP); n != 0 {
		t.Errorf("%d masquerade rules for %s after delete", n, natIP)
	}
}

// uplink is a second namespace standing for the host's uplink: joined to
// the run's namespace by a veth pair (10.250.0.1 on the run's side,
// 10.250.0.2 in it), with an HTTP server on 10.250.0.2:8080 that reports
// the source address of each request on seen.
type uplink struct {
	seen chan string
}

// uplinkFetch is the guest-side request to the uplink's server.
const uplinkFetch = `timeout 10 bash -c 'exec 3<>/dev/tcp/10.250.0.2/8080; printf "GET / HTTP/1.0\r\n\r\n" >&3; cat <&3'`

// newUplink makes the uplink namespace, its veth pair (named prefix0 and
// prefix1) and its server, all removed when t ends.
func newUplink(t *testing.T, ctx context.Context, prefix string) *uplink {
	t.Helper()
	name := fmt.Sprintf("banger-e2e-up-%d-%s", os.Getpid(), prefix)
	if r := e.command(ctx, "", "ip", "netns", "add", name); r.code != 0 {
		t.Fatalf("ip netns add: %s", r)
	}
	t.Cleanup(func() { e.command(context.Background(), "", "ip", "netns", "del", name) })
	here, there := prefix+"0", prefix+"1"
	for _, args := range [][]string{
		{"ip", "link", "add", here, "type", "veth", "peer", "name", there, "netns", name},
		{"ip", "addr", "add", "10.250.0.1/30", "dev", here},
		{"ip", "link", "set", here, "up"},
	} {
		if r := e.inNS(ctx, args[0], args[1:]...); r.code != 0 {
			t.Fatalf("%v: %s", args, r)
		}
	}
	for _, args := range [][]string{
		{"addr", "add", "10.250.0.2/30", "dev", there},
		{"link", "set", there, "up"},
		{"link", "set", "lo", "up"},
	} {
		if r := e.command(ctx, "", "ip", append([]string{"-n", name}, args...)...); r.code != 0 {
			t.Fatalf("%v: %s", args, r)
		}
	}
	var ln net.Listener
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, _ := netns.Get()
		defer orig.Close()
		h, err := netns.GetFromName(name)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		netns.Set(h)
		ln, err = net.Listen("tcp", "10.250.0.2:8080")
		netns.Set(orig)
		if err != nil {
			t.Fatal(err)
		}
	}()
	u := &uplink{seen: make(chan string, 16)}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case u.seen <- r.RemoteAddr:
		default:
		}
		io.WriteString(w, "uplink-ok\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return u
}

// mustReach checks that vm reaches the uplink's server and that the
// server saw the masqueraded address, not the guest's.
func (u *uplink) mustReach(t *testing.T, ctx context.Context, vm string) {
	t.Helper()
	for len(u.seen) > 0 {
		<-u.seen
	}
	out := e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", uplinkFetch)
	if !strings.Contains(out.stdout, "uplink-ok") {
		t.Errorf("%s could not reach the uplink through NAT: %s", vm, out)
		return
	}
	select {
	case from := <-u.seen:
		if !strings.HasPrefix(from, "10.250.0.1:") {
			t.Errorf("uplink saw %s, want the masqueraded 10.250.0.1", from)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the uplink's server answered %s but recorded no request", vm)
	}
}

// TestDaemonRestartNetwork: a bridge-mode VM with NAT keeps its address,
// its DNS name and its NAT through a daemon restart (the new daemon
// re-adopts its tap and rule in the same namespace), and the new daemon
// removes them when the VM is deleted.
func TestDaemonRestartNetwork(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 10*time.Minute)
	up := newUplink(t, ctx, "e2ers")
	vm := newVM(t, ctx, "keepnet", "--nat")
	before := showVM(t, ctx, vm)
	ip := vmIP(t, ctx, vm)
	if ip == "" {
		t.Fatalf("bridge VM without an address: %+v", before)
	}
	tap := vmmTap(before.PID)
	check := func(stage string) {
		t.Helper()
		if got, rc := dnsQuery(t, vm+".vm"); got != ip {
			t.Errorf("%s: host lookup %s.vm = %q (rcode %d), want %s", stage, vm, got, rc, ip)
		}
		if out := guest(t, ctx, vm, "ip -4 -o addr show; getent hosts "+vm+".vm"); strings.Count(out, ip) < 2 {
			t.Errorf("%s: guest address or its own name lost, want %s:\n%s", stage, ip, out)
		}
		up.mustReach(t, ctx, vm)
		if n := masqueradeRules(t, ip); n != 1 {
			t.Errorf("%s: %d masquerade rules for %s, want 1", stage, n, ip)
		}
		if tap != "" {
			if r := e.inNS(ctx, "ip", "-o", "link", "show", tap); r.code != 0 || !strings.Contains(r.stdout, "master") || !strings.Contains(r.stdout, "UP") {
				t.Errorf("%s: tap %s not up on the bridge: %s", stage, tap, r)
			}
		}
	}
	check("before the restart")

	e.restartDaemonAfter(t)
	old := e.daemonPID
	must(t, e.cli(ctx, "", "daemon", "stop"))
	if alive(old) {
		t.Fatalf("daemon pid %d alive after daemon stop", old)
	}
	if _, rc, err := dnsLookup(t, vm+".vm"); err == nil {
		t.Fatalf("something still answers DNS with the daemon stopped (rcode %d): the check below would prove nothing", rc)
	}
	if err := e.startDaemon(); err != nil {
		t.Fatal(err)
	}
	after := showVM(t, ctx, vm)
	if after.State != "running" || after.PID != before.PID {
		t.Fatalf("after the restart: %+v (pid was %d)", after, before.PID)
	}
	if got := vmIP(t, ctx, vm); got != ip {
		t.Errorf("address changed across the restart: %s -> %s", ip, got)
	}
	check("after the restart")

	// The new daemon owns the network it adopted: delete undoes it.
	must(t, e.cli(ctx, "", "vm", "delete", vm))
	if n := masqueradeRules(t, ip); n != 0 {
		t.Errorf("%d masquerade rules for %s after delete", n, ip)
	}
	if got, rc := dnsQuery(t, vm+".vm"); got != "" || rc != dns.RcodeNameError {
		t.Errorf("deleted VM still resolves: %q rcode %d", got, rc)
	}
}

// vmmTap is the tap the VMM with pid uses (from its command line), or ""
// when it names none.
func vmmTap(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	for _, arg := range strings.Split(string(b), "\x00") {
		for _, opt := range strings.Split(arg, ",") {
			if v, ok := strings.CutPrefix(opt, "ifname="); ok {
				return v
			}
		}
	}
	return ""
}

// masqueradeRules counts banger's NAT rules mentioning ip (by their
// comments, which name the rule).
func masqueradeRules(t *testing.T, ip string) int {
	t.Helper()
	n := 0
	inDaemonNS(t, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			if tb.Name != "banger" {
				continue
			}
			chains, _ := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
			for _, ch := range chains {
				if ch.Table.Name != tb.Name || ch.Name != "postrouting" {
					continue
				}
				rules, _ := c.GetRules(tb, ch)
				for _, r := range rules {
					if strings.Contains(string(r.UserData), ip) {
						n++
					}
				}
			}
		}
	})
	return n
}

// TestPortsAndPublish: vm ports lists sshd on 22 with its NAME.vm endpoint;
// --publish makes a guest HTTP server answer on the host; a taken host
// port is refused at create.
func TestPortsAndPublish(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 5*time.Minute)
	vm := newVM(t, ctx, "webbox", "--publish", "127.0.0.1:18080:8080")
	var ports []struct {
		Proto, Process, Endpoint string
		Port                     int
	}
	deadline := time.Now().Add(3 * time.Minute)
	found := false
	for time.Now().Before(deadline) && !found {
		r := must(t, e.cli(ctx, "", "vm", "ports", "--json", vm))
		jsonUnmarshal(t, r.stdout, &ports)
		for _, p := range ports {
			if p.Port == 22 && strings.HasPrefix(p.Proto, "tcp") && p.Endpoint == "webbox.vm:22" && strings.Contains(p.Process, "sshd") {
				found = true
			}
		}
		if !found {
			time.Sleep(time.Second)
		}
	}
	if !found {
		t.Errorf("vm ports lacks sshd on 22 with endpoint webbox.vm:22: %+v", ports)
	}
	must(t, e.cli(ctx, "", "vm", "session", "start", vm, "--name", "web", "--",
		"sh", "-c", "mkdir -p /root/www && echo published-ok > /root/www/index.html && exec busybox httpd -f -p 8080 -h /root/www"))
	var body string
	waitFor(ctx, time.Minute, 500*time.Millisecond, func() bool {
		body = e.inNS(ctx, "curl", "-s", "--max-time", "3", "http://127.0.0.1:18080/").stdout
		return strings.Contains(body, "published-ok")
	})
	if !strings.Contains(body, "published-ok") {
		t.Errorf("published port did not answer: %q", body)
	}
	if ep := portEndpoint(t, ctx, vm, 8080); ep != "127.0.0.1:18080" {
		t.Errorf("vm ports: endpoint for the published 8080 is %q, want 127.0.0.1:18080", ep)
	}
	r := e.cli(ctx, "", "vm", "create", "--name", "clash", "--publish", "127.0.0.1:18080:80")
	if r.code == 0 || !strings.Contains(r.stderr, "18080") {
		t.Errorf("a taken host port must be refused at create: %s", r)
	}
	if _, ok := vmNames(t, ctx)["clash"]; ok {
		t.Errorf("refused create left a row")
	}
}

// TestUserMode: a VM on user networking (no bridge, no root needed) is
// reachable by vm exec and vm ssh.
func TestUserMode(t *testing.T) {
	ctx := ctxFor(t, 5*time.Minute)
	vm := newVM(t, ctx, "userbox", "--network", "user", "--publish", "127.0.0.1:18081:8080")
	if out := guest(t, ctx, vm, "ip -4 addr show | grep -o '10.0.2.15'"); !strings.Contains(out, "10.0.2.15") {
		t.Errorf("user-mode guest address: %q", out)
	}
	deadline := time.Now().Add(3 * time.Minute)
	var r result
	for time.Now().Before(deadline) {
		if r = e.cliNS(ctx, "", "vm", "ssh", vm, "--", "echo", "user-ssh-ok"); r.code == 0 {
			break
		}
		time.Sleep(time.Second)
	}
	if strings.TrimSpace(r.stdout) != "user-ssh-ok" {
		t.Errorf("vm ssh in user mode: %s", r)
	}
	// --publish in user mode goes through the VMM's own forwarding.
	must(t, e.cli(ctx, "", "vm", "session", "start", vm, "--name", "web", "--",
		"sh", "-c", "mkdir -p /root/www && echo user-published > /root/www/index.html && exec busybox httpd -f -p 8080 -h /root/www"))
	var body string
	waitFor(ctx, time.Minute, 500*time.Millisecond, func() bool {
		body = e.inNS(ctx, "curl", "-s", "--max-time", "3", "http://127.0.0.1:18081/").stdout
		return strings.Contains(body, "user-published")
	})
	if !strings.Contains(body, "user-published") {
		t.Errorf("user-mode published port did not answer: %q", body)
	}
	if ep := portEndpoint(t, ctx, vm, 8080); ep != "127.0.0.1:18081" {
		t.Errorf("vm ports: user-mode endpoint for 8080 is %q, want 127.0.0.1:18081", ep)
	}
}

// portEndpoint is the endpoint `vm ports` gives for the guest's TCP port,
// which must be listed (the server on it already answered).
func portEndpoint(t *testing.T, ctx context.Context, vm string, port int) string {
	t.Helper()
	var ports []struct {
		Proto    string
		Port     int
		Endpoint string
	}
	jsonUnmarshal(t, must(t, e.cli(ctx, "", "vm", "ports", "--json", vm)).stdout, &ports)
	for _, p := range ports {
		if p.Port == port && strings.HasPrefix(p.Proto, "tcp") {
			return p.Endpoint
		}
	}
	t.Errorf("vm ports does not list tcp port %d: %+v", port, ports)
	return ""
}

// TestNoNetworkLeaks runs last among the network scenarios: with every VM
// deleted, no tap beyond the pool, no NAT rule and no address remain.
func TestNoNetworkLeaks(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 3*time.Minute)
	for name := range vmNames(t, ctx) {
		must(t, e.cli(ctx, "", "vm", "delete", name))
	}
	// Shared VMs are gone: later scenarios create them afresh.
	shared.once, shared.err = sync.Once{}, nil
	wsVM.once, wsVM.err = sync.Once{}, nil
	var r result
	taps := 0
	waitFor(ctx, 30*time.Second, 200*time.Millisecond, func() bool {
		r = e.inNS(ctx, "ip", "-o", "link", "show")
		taps = strings.Count(r.stdout, "bgtap")
		return taps <= 2
	})
	if taps > 2 {
		t.Errorf("%d banger taps left (pool is 2):\n%s", taps, r.stdout)
	}
	if n := masqueradeRules(t, "172.16."); n != 0 {
		t.Errorf("%d NAT rules left", n)
	}
	if n := tapBindings(t); n != 0 {
		t.Errorf("%d tap bindings (anti-spoofing accept rules) left", n)
	}
}

// tapBindings counts the accept rules of banger's bridge table: two per
// tap bound to a guest.
func tapBindings(t *testing.T) int {
	t.Helper()
	n := 0
	inDaemonNS(t, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chains {
			if ch.Table.Name != "banger" || ch.Name != "prerouting" {
				continue
			}
			rules, _ := c.GetRules(ch.Table, ch)
			for _, r := range rules {
				if strings.Contains(string(r.UserData), " accept") {
					n++
				}
			}
		}
	})
	return n
}
