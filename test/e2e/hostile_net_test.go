//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netns"
)

// The uplink namespace of TestHostileNetwork: the daemon's namespace is
// 10.250.1.1, the uplink 10.250.1.2, where a resolver (the daemon's only DNS
// upstream, see the harness config) and an HTTP server listen.
const (
	hostileUplinkHost = "10.250.1.1"
	hostileUplinkPeer = "10.250.1.2"
	hostileUpstream   = hostileUplinkPeer + ":53"
)

// upstreamLog is a resolver that answers every A query with the uplink's
// address and remembers the names it was asked.
type upstreamLog struct {
	mu    sync.Mutex
	names []string
}

func (u *upstreamLog) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg).SetReply(req)
	for _, q := range req.Question {
		u.mu.Lock()
		u.names = append(u.names, strings.ToLower(q.Name))
		u.mu.Unlock()
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
				A: net.ParseIP(hostileUplinkPeer)})
		}
	}
	w.WriteMsg(m)
}

func (u *upstreamLog) asked(name string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, n := range u.names {
		if n == dns.Fqdn(name) {
			return true
		}
	}
	return false
}

// inNamedNS runs f on a thread switched into the named namespace.
func inNamedNS(t *testing.T, name string, f func() error) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	err = f()
	if serr := netns.Set(orig); serr != nil {
		t.Fatal(serr)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// hostileUplink makes the uplink namespace with its resolver and HTTP
// server; the HTTP server reports each client address on seen.
func hostileUplink(t *testing.T, ctx context.Context) (*upstreamLog, <-chan string) {
	t.Helper()
	uplink := fmt.Sprintf("banger-e2e-hn-%d", os.Getpid())
	if r := e.command(ctx, "", "ip", "netns", "add", uplink); r.code != 0 {
		t.Fatalf("ip netns add: %s", r)
	}
	t.Cleanup(func() { e.command(context.Background(), "", "ip", "netns", "del", uplink) })
	for _, args := range [][]string{
		{"ip", "link", "add", "e2ehn0", "type", "veth", "peer", "name", "e2ehn1", "netns", uplink},
		{"ip", "addr", "add", hostileUplinkHost + "/30", "dev", "e2ehn0"},
		{"ip", "link", "set", "e2ehn0", "up"},
	} {
		if r := e.inNS(ctx, args[0], args[1:]...); r.code != 0 {
			t.Fatalf("%v: %s", args, r)
		}
	}
	t.Cleanup(func() { e.inNS(context.Background(), "ip", "link", "del", "e2ehn0") })
	for _, args := range [][]string{
		{"addr", "add", hostileUplinkPeer + "/30", "dev", "e2ehn1"},
		{"link", "set", "e2ehn1", "up"},
		{"link", "set", "lo", "up"},
	} {
		if r := e.command(ctx, "", "ip", append([]string{"-n", uplink}, args...)...); r.code != 0 {
			t.Fatalf("%v: %s", args, r)
		}
	}
	up := &upstreamLog{}
	seen := make(chan string, 16)
	inNamedNS(t, uplink, func() error {
		pc, err := net.ListenPacket("udp", hostileUpstream)
		if err != nil {
			return err
		}
		tl, err := net.Listen("tcp", hostileUpstream)
		if err != nil {
			pc.Close()
			return err
		}
		for _, srv := range []*dns.Server{{PacketConn: pc, Handler: up}, {Listener: tl, Handler: up}} {
			go srv.ActivateAndServe()
			t.Cleanup(func() { srv.Shutdown() })
		}
		web, err := net.Listen("tcp", hostileUplinkPeer+":8080")
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case seen <- r.RemoteAddr:
			default:
			}
			io.WriteString(w, "uplink-ok\n")
		})}
		go hs.Serve(web)
		t.Cleanup(func() { hs.Close() })
		return nil
	})
	return up, seen
}

// guestDev is a shell snippet setting $dev to the guest's network interface.
const guestDev = `dev=$(ls /sys/class/net | grep -vx lo | head -n1); `

// TestHostileNetwork: a guest that is root inside its VM (vm exec) and
// tries the ways out of bridge mode, all inside this run's namespaces:
//   - spoofing a NAT guest's address, and its address and MAC, to reach the
//     uplink: dropped at the bridge (the NAT guest itself gets out);
//   - resolving names outside banger's domain through the bridge DNS
//     without NAT: not answered, and the upstream resolver sees nothing
//     (a NAT guest's query does reach it);
//   - connecting to a host service listening on 0.0.0.0 in the daemon's
//     namespace: dropped (the bridge DNS port is reachable);
//   - the VMM of each VM runs under QEMU's seccomp sandbox, and as a user
//     of its own when the daemon runs as root.
func TestHostileNetwork(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 10*time.Minute)
	up, seen := hostileUplink(t, ctx)
	natVM := newVM(t, ctx, "hnnat", "--nat")
	evil := newVM(t, ctx, "hnevil")
	natIP, evilIP := vmIP(t, ctx, natVM), vmIP(t, ctx, evil)
	gw := strings.TrimSpace(guest(t, ctx, evil, `ip -4 route show default | awk '{print $3; exit}'`))
	if net.ParseIP(gw) == nil {
		t.Fatalf("guest default gateway %q", gw)
	}
	natMAC := strings.TrimSpace(guest(t, ctx, natVM, guestDev+`cat /sys/class/net/$dev/address`))
	evilMAC := strings.TrimSpace(guest(t, ctx, evil, guestDev+`cat /sys/class/net/$dev/address`))
	fetch := `timeout 5 bash -c 'exec 3<>/dev/tcp/` + hostileUplinkPeer + `/8080; printf "GET / HTTP/1.0\r\n\r\n" >&3; cat <&3' 2>&1`
	drain := func() {
		for {
			select {
			case <-seen:
			default:
				return
			}
		}
	}

	// Control: the NAT guest gets out, masqueraded.
	if out := guest(t, ctx, natVM, fetch); !strings.Contains(out, "uplink-ok") {
		t.Fatalf("--nat guest could not reach the uplink: %s", out)
	}
	if from := <-seen; !strings.HasPrefix(from, hostileUplinkHost+":") {
		t.Errorf("uplink saw %s, want the masqueraded %s", from, hostileUplinkHost)
	}

	t.Run("dns", func(t *testing.T) {
		// The NAT guest's resolver forwards (so the path is there) ...
		if out := guest(t, ctx, natVM, "getent hosts allowed.hostile.example || true"); !strings.Contains(out, hostileUplinkPeer) || !up.asked("allowed.hostile.example") {
			t.Errorf("nat guest: getent = %q, upstream asked: %v", out, up.asked("allowed.hostile.example"))
		}
		// ... the other guest's does not, for any type, over UDP or TCP.
		out := guest(t, ctx, evil, "getent hosts tunnel.hostile.example; getent ahosts txt.hostile.example; echo rc=$?")
		if strings.Contains(out, hostileUplinkPeer) {
			t.Errorf("guest without nat resolved an outside name: %q", out)
		}
		if up.asked("tunnel.hostile.example") || up.asked("txt.hostile.example") {
			t.Errorf("the upstream resolver saw a query of the guest without nat")
		}
		// banger's own names still resolve for it.
		if out := guest(t, ctx, evil, "getent hosts "+natVM+".vm"); !strings.Contains(out, natIP) {
			t.Errorf("guest without nat cannot resolve %s.vm: %q", natVM, out)
		}
	})

	t.Run("host-service", func(t *testing.T) {
		var accepted atomic.Int32
		var ln net.Listener
		inDaemonNS(t, func() {
			var err error
			if ln, err = net.Listen("tcp", "0.0.0.0:0"); err != nil {
				t.Fatal(err)
			}
		})
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				c.Close()
			}
		}()
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		probe := func(port string) string {
			return strings.TrimSpace(guest(t, ctx, evil, `timeout 5 bash -c 'exec 3<>/dev/tcp/`+gw+`/`+port+`' 2>/dev/null && echo connected || echo blocked`))
		}
		if got := probe("53"); got != "connected" {
			t.Errorf("guest cannot reach the bridge DNS over TCP: %s", got)
		}
		if got := probe(port); got != "blocked" || accepted.Load() != 0 {
			t.Errorf("guest reached a host service on 0.0.0.0:%s: %s (%d accepted)", port, got, accepted.Load())
		}
	})

	t.Run("spoof", func(t *testing.T) {
		// The NAT guest goes quiet (link down), so that without
		// anti-spoofing the bridge would learn the spoofer's port for the
		// NAT guest's MAC and deliver the answers to it.
		guest(t, ctx, natVM, guestDev+`ip link set $dev down`)
		defer guest(t, ctx, natVM, guestDev+`ip link set $dev up; ip route replace default via `+gw+` dev $dev`)
		drain()
		// Its address only.
		out := guest(t, ctx, evil, guestDev+`ip addr flush dev $dev; ip addr add `+natIP+`/24 dev $dev; ip route replace default via `+gw+` dev $dev; `+fetch+`; true`)
		if strings.Contains(out, "uplink-ok") {
			t.Errorf("guest with the nat guest's address reached the uplink")
		}
		// Its address and its MAC.
		out = guest(t, ctx, evil, guestDev+`ip link set $dev down; ip link set $dev address `+natMAC+`; ip link set $dev up; `+
			`ip addr flush dev $dev; ip addr add `+natIP+`/24 dev $dev; ip route replace default via `+gw+` dev $dev; `+fetch+`; true`)
		if strings.Contains(out, "uplink-ok") {
			t.Errorf("guest with the nat guest's address and MAC reached the uplink")
		}
		select {
		case from := <-seen:
			t.Errorf("the uplink served a spoofing guest (as %s)", from)
		default:
		}
		// Its own identity back, it is a working guest again: the drops
		// above were anti-spoofing, not a dead link.
		out = guest(t, ctx, evil, guestDev+`ip link set $dev down; ip link set $dev address `+evilMAC+`; ip link set $dev up; `+
			`ip addr flush dev $dev; ip addr add `+evilIP+`/24 dev $dev; ip route replace default via `+gw+` dev $dev; `+
			`for i in 1 2 3 4 5; do timeout 3 bash -c 'exec 3<>/dev/tcp/`+gw+`/53' 2>/dev/null && { echo connected; break; }; sleep 1; done`)
		if !strings.Contains(out, "connected") {
			t.Errorf("guest with its own identity back cannot reach the bridge DNS: %s", out)
		}
	})

	t.Run("vmm-confined", func(t *testing.T) {
		for _, vm := range []string{natVM, evil} {
			pid := showVM(t, ctx, vm).PID
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				t.Fatal(err)
			}
			status := map[string]string{}
			for _, line := range strings.Split(string(b), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					status[k] = strings.TrimSpace(v)
				}
			}
			if status["Seccomp"] != "2" {
				t.Errorf("vm %s: qemu pid %d has Seccomp: %q, want 2 (filter)", vm, pid, status["Seccomp"])
			}
			if os.Geteuid() == 0 {
				for _, k := range []string{"Uid", "Gid"} {
					for _, id := range strings.Fields(status[k]) {
						if id == "0" {
							t.Errorf("vm %s: qemu pid %d runs with %s: %s under a root daemon", vm, pid, k, status[k])
							break
						}
					}
				}
			}
		}
	})
}
