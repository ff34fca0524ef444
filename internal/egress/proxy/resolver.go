package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// DNSResolver resolves upstream names by asking the given DNS servers
// only (the daemon's configured upstreams): unlike the host resolver it
// never reads /etc/hosts, so a name in a policy cannot be pointed at a
// host-local entry. It follows the CNAME chain of the answer from the
// name asked and keeps only the A/AAAA records on that chain.
type DNSResolver struct {
	Servers []netip.AddrPort
	Timeout time.Duration // per query; default 5 s
}

// maxCNAMEChain bounds the chain followed in one answer.
const maxCNAMEChain = 8

// LookupNetIP implements Resolver. network is "ip", "ip4" or "ip6".
func (r *DNSResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if len(r.Servers) == 0 {
		return nil, errors.New("dns resolver: no servers")
	}
	var types []uint16
	switch network {
	case "ip":
		types = []uint16{dns.TypeA, dns.TypeAAAA}
	case "ip4":
		types = []uint16{dns.TypeA}
	case "ip6":
		types = []uint16{dns.TypeAAAA}
	default:
		return nil, fmt.Errorf("dns resolver: network %q", network)
	}
	var out []netip.Addr
	var lastErr error
	for _, t := range types {
		addrs, err := r.query(ctx, host, t)
		if err != nil {
			lastErr = err
			continue
		}
		out = append(out, addrs...)
	}
	if len(out) == 0 {
		if lastErr == nil {
			lastErr = &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return nil, lastErr
	}
	return out, nil
}

func (r *DNSResolver) query(ctx context.Context, host string, qtype uint16) ([]netip.Addr, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(host), qtype)
	m.RecursionDesired = true
	var lastErr error
	for _, s := range r.Servers {
		for _, netw := range []string{"udp", "tcp"} {
			c := &dns.Client{Net: netw, Timeout: timeout}
			qctx, cancel := context.WithTimeout(ctx, timeout)
			resp, _, err := c.ExchangeContext(qctx, m, s.String())
			cancel()
			if err != nil {
				lastErr = err
				break // next server
			}
			if resp.Truncated && netw == "udp" {
				continue // again over TCP
			}
			if resp.Rcode == dns.RcodeNameError {
				return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
			}
			if resp.Rcode != dns.RcodeSuccess {
				lastErr = fmt.Errorf("dns %s: %s", host, dns.RcodeToString[resp.Rcode])
				break
			}
			return chainAddrs(m.Question[0].Name, resp.Answer, qtype), nil
		}
	}
	return nil, fmt.Errorf("resolve %s: %w", host, lastErr)
}

// chainAddrs follows CNAMEs from name through answer and returns the
// addresses of type qtype at the end of the chain.
func chainAddrs(name string, answer []dns.RR, qtype uint16) []netip.Addr {
	cur := strings.ToLower(name)
	for i := 0; i < maxCNAMEChain; i++ {
		next := ""
		for _, rr := range answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.ToLower(c.Hdr.Name) == cur {
				next = strings.ToLower(c.Target)
			}
		}
		if next == "" {
			break
		}
		cur = next
	}
	var out []netip.Addr
	for _, rr := range answer {
		if strings.ToLower(rr.Header().Name) != cur || rr.Header().Rrtype != qtype {
			continue
		}
		var ip net.IP
		switch v := rr.(type) {
		case *dns.A:
			ip = v.A
		case *dns.AAAA:
			ip = v.AAAA
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}
