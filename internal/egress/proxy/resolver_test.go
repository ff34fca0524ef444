package proxy

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestDNSResolver(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		switch {
		case q.Name == "api.test." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{rr("api.test. 60 IN CNAME edge.cdn.test."), rr("edge.cdn.test. 60 IN A 192.0.2.10"),
				rr("unrelated.test. 60 IN A 192.0.2.66")} // not on the chain: ignored
		case q.Name == "api.test." && q.Qtype == dns.TypeAAAA:
			m.Answer = []dns.RR{rr("api.test. 60 IN CNAME edge.cdn.test."), rr("edge.cdn.test. 60 IN AAAA 2001:db8::10")}
		case q.Name == "loop.test.":
			m.Answer = []dns.RR{rr("loop.test. 60 IN CNAME loop.test.")}
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	defer srv.Shutdown()
	r := &DNSResolver{Servers: []netip.AddrPort{netip.MustParseAddrPort(pc.LocalAddr().String())}, Timeout: 2 * time.Second}
	ctx := context.Background()
	got, err := r.LookupNetIP(ctx, "ip", "api.test")
	if err != nil || len(got) != 2 || got[0] != netip.MustParseAddr("192.0.2.10") || got[1] != netip.MustParseAddr("2001:db8::10") {
		t.Errorf("api.test: %v %v", got, err)
	}
	if got, err := r.LookupNetIP(ctx, "ip4", "api.test"); err != nil || len(got) != 1 {
		t.Errorf("ip4: %v %v", got, err)
	}
	_, err = r.LookupNetIP(ctx, "ip", "nx.test")
	if de, ok := err.(*net.DNSError); !ok || !de.IsNotFound {
		t.Errorf("nx.test: %v", err)
	}
	if got, err := r.LookupNetIP(ctx, "ip", "loop.test"); err == nil {
		t.Errorf("CNAME loop resolved to %v", got)
	}
	if _, err := (&DNSResolver{}).LookupNetIP(ctx, "ip", "api.test"); err == nil {
		t.Error("no servers")
	}
}
