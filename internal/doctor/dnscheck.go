package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	miekg "github.com/miekg/dns"
)

// dnsProbeName is the name the DNS check asks for: in banger's zone, so
// banger's resolver answers it itself, with NXDOMAIN (or an address, should
// a VM be called doctor-probe), and never forwards it.
const dnsProbeName = "doctor-probe.vm."

// checkDNS checks the daemon's resolver for NAME.vm on dns_listen: with the
// daemon running, that it answers; without, that the daemon could bind the
// address when it starts (it refuses to start otherwise).
func checkDNS(ctx context.Context, addr string, daemonUp bool, configFile string, timeout time.Duration) Check {
	c := Check{Name: "dns"}
	if daemonUp {
		rcode, err := queryDNS(ctx, addr, timeout)
		switch {
		case err != nil:
			c.Status = Fail
			c.Detail = fmt.Sprintf("the daemon runs, but nothing answers DNS on %s (%v): NAME.vm does not resolve", addr, err)
			c.Fix = "restart the daemon (banger daemon stop; banger daemon start) and read its log if it persists"
		case rcode == miekg.RcodeNameError || rcode == miekg.RcodeSuccess:
			c.Status = Pass
			c.Detail = fmt.Sprintf("banger's resolver answers on %s (%s: %s)", addr, dnsProbeName, miekg.RcodeToString[rcode])
		default:
			c.Status = Warn
			c.Detail = fmt.Sprintf("something answers on %s, but with %s for %s, which banger's resolver never does", addr, miekg.RcodeToString[rcode], dnsProbeName)
			c.Fix = fmt.Sprintf("check what listens there (ss -lunp 'sport = :%s'); set dns_listen in %s to a free address", portOf(addr), configFile)
		}
		return c
	}
	if err := canBind(addr); err != nil {
		c.Status = Fail
		if errors.Is(err, syscall.EADDRINUSE) {
			c.Detail = fmt.Sprintf("%s is taken by another process: the daemon cannot serve NAME.vm there and refuses to start", addr)
			if rcode, qerr := queryDNS(ctx, addr, timeout/2); qerr == nil && rcode == miekg.RcodeNameError {
				c.Detail += " (it answers like banger's resolver: another user's banger daemon?)"
			}
		} else {
			c.Detail = fmt.Sprintf("cannot bind %s (%v): the daemon refuses to start", addr, err)
		}
		c.Fix = fmt.Sprintf("set dns_listen in %s to a free address, e.g. dns_listen = %q, or stop what listens there (ss -lunpt 'sport = :%s')",
			configFile, suggestDNSListen(addr), portOf(addr))
		return c
	}
	c.Status = Pass
	c.Detail = fmt.Sprintf("daemon not running; %s is free for its resolver", addr)
	return c
}

// queryDNS sends one A query for dnsProbeName over UDP.
func queryDNS(ctx context.Context, addr string, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m := new(miekg.Msg)
	m.SetQuestion(dnsProbeName, miekg.TypeA)
	cl := &miekg.Client{Net: "udp", Timeout: timeout}
	r, _, err := cl.ExchangeContext(ctx, m, addr)
	if err != nil {
		return 0, err
	}
	return r.Rcode, nil
}

// canBind binds addr for TCP and UDP, as the daemon will, and lets go.
func canBind(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	return pc.Close()
}

// suggestDNSListen proposes a free loopback address for dns_listen.
func suggestDNSListen(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) == nil {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return net.JoinHostPort(host, "42070")
	}
	defer l.Close()
	return l.Addr().String()
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return port
}
