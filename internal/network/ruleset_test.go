package network

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

var (
	guestA = netip.MustParseAddr("172.16.0.2")
	guestB = netip.MustParseAddr("172.16.0.3")
)

// baseChains are the chains of banger's table whatever the guests.
var baseChains = []Chain{
	{Name: "forward", Type: "filter", Hook: "forward", Priority: 0, Policy: Accept},
	{Name: "input", Type: "filter", Hook: "input", Priority: 0, Policy: Accept},
	{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: 100, Policy: Accept},
}

var gw = netip.MustParseAddr("172.16.0.1")

// inputRules are the input chain's rules for the default bridge: guests
// reach the host's DNS and answers to the host's own connections only.
var inputRules = []Rule{
	{Chain: "input", InIface: br, CTState: CTEstablished | CTRelated, Action: Accept},
	{Chain: "input", InIface: br, Dest: gw, L4: "udp", DPort: 53, Action: Accept},
	{Chain: "input", InIface: br, Dest: gw, L4: "tcp", DPort: 53, Action: Accept},
	{Chain: "input", InIface: br, Action: Drop},
}

func rules(parts ...any) []Rule {
	var out []Rule
	for _, p := range parts {
		switch p := p.(type) {
		case Rule:
			out = append(out, p)
		case []Rule:
			out = append(out, p...)
		}
	}
	return out
}

// Expected rules, spelled out. br is the default bridge.
const br = "banger0"

var (
	ruleEstablished = Rule{Chain: "forward", CTState: CTEstablished | CTRelated, Action: Accept}
	ruleDropOut     = Rule{Chain: "forward", InIface: br, NotOutIface: br, Action: Drop}
	ruleFwdA        = Rule{Chain: "forward", InIface: br, NotOutIface: br, Source: guestA, Action: Accept}
	ruleFwdB        = Rule{Chain: "forward", InIface: br, NotOutIface: br, Source: guestB, Action: Accept}
	ruleMasqA       = Rule{Chain: "postrouting", NotOutIface: br, Source: guestA, Action: Masquerade}
	ruleMasqB       = Rule{Chain: "postrouting", NotOutIface: br, Source: guestB, Action: Masquerade}
)

func mustRuleset(t *testing.T, cfg Config, guests ...netip.Addr) Table {
	t.Helper()
	tab, err := Ruleset(cfg, guests)
	if err != nil {
		t.Fatalf("Ruleset(%v): %v", guests, err)
	}
	return tab
}

func TestRulesetNoGuests(t *testing.T) {
	got := mustRuleset(t, Config{})
	want := Table{Family: "ip", Name: "banger", Chains: baseChains, Rules: rules(ruleEstablished, ruleDropOut, inputRules)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Ruleset(no guests) =\n%v\nwant\n%v", got, want)
	}
	if len(got.NATGuests()) != 0 {
		t.Errorf("NATGuests = %v, want none", got.NATGuests())
	}
}

func TestRulesetOneGuest(t *testing.T) {
	got := mustRuleset(t, Config{}, guestA)
	want := Table{Family: "ip", Name: "banger", Chains: baseChains, Rules: rules(ruleEstablished, ruleFwdA, ruleDropOut, inputRules, ruleMasqA)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Ruleset(a) =\n%v\nwant\n%v", got, want)
	}
}

func TestRulesetTwoGuests(t *testing.T) {
	// Order and duplicates of the input do not matter; the output is sorted.
	got := mustRuleset(t, Config{}, guestB, guestA, guestB)
	want := Table{Family: "ip", Name: "banger", Chains: baseChains, Rules: rules(
		ruleEstablished, ruleFwdA, ruleFwdB, ruleDropOut, inputRules, ruleMasqA, ruleMasqB,
	)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Ruleset(b, a, b) =\n%v\nwant\n%v", got, want)
	}
	if g := got.NATGuests(); !reflect.DeepEqual(g, []netip.Addr{guestA, guestB}) {
		t.Errorf("NATGuests = %v, want [a b]", g)
	}
	const text = `table ip banger {
	chain forward {
		type filter hook forward priority 0; policy accept;
		ct state established,related accept
		iifname "banger0" oifname != "banger0" ip saddr 172.16.0.2 accept
		iifname "banger0" oifname != "banger0" ip saddr 172.16.0.3 accept
		iifname "banger0" oifname != "banger0" drop
	}
	chain input {
		type filter hook input priority 0; policy accept;
		iifname "banger0" ct state established,related accept
		iifname "banger0" ip daddr 172.16.0.1 udp dport 53 accept
		iifname "banger0" ip daddr 172.16.0.1 tcp dport 53 accept
		iifname "banger0" drop
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		oifname != "banger0" ip saddr 172.16.0.2 masquerade
		oifname != "banger0" ip saddr 172.16.0.3 masquerade
	}
}
`
	if got.String() != text {
		t.Errorf("String() =\n%s\nwant\n%s", got, text)
	}
}

func TestRulesetFollowsConfig(t *testing.T) {
	cfg := Config{Bridge: "br-test", CIDR: netip.MustParsePrefix("10.7.0.1/16"), Table: "bt"}
	g := netip.MustParseAddr("10.7.3.4")
	// A 4in6 form of the address is the same guest.
	got := mustRuleset(t, cfg, netip.AddrFrom16(g.As16()))
	gw := netip.MustParseAddr("10.7.0.1")
	want := Table{Family: "ip", Name: "bt", Chains: baseChains, Rules: []Rule{
		{Chain: "forward", CTState: CTEstablished | CTRelated, Action: Accept},
		{Chain: "forward", InIface: "br-test", NotOutIface: "br-test", Source: g, Action: Accept},
		{Chain: "forward", InIface: "br-test", NotOutIface: "br-test", Action: Drop},
		{Chain: "input", InIface: "br-test", CTState: CTEstablished | CTRelated, Action: Accept},
		{Chain: "input", InIface: "br-test", Dest: gw, L4: "udp", DPort: 53, Action: Accept},
		{Chain: "input", InIface: "br-test", Dest: gw, L4: "tcp", DPort: 53, Action: Accept},
		{Chain: "input", InIface: "br-test", Action: Drop},
		{Chain: "postrouting", NotOutIface: "br-test", Source: g, Action: Masquerade},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Ruleset =\n%v\nwant\n%v", got, want)
	}
}

func TestRulesetRejectsNonGuests(t *testing.T) {
	for _, s := range []string{"172.16.0.0", "172.16.0.1", "172.16.0.255", "172.16.1.2", "8.8.8.8", "fd00::2"} {
		if _, err := Ruleset(Config{}, []netip.Addr{netip.MustParseAddr(s)}); err == nil {
			t.Errorf("Ruleset accepted %s as a nat guest", s)
		}
	}
	if _, err := Ruleset(Config{}, []netip.Addr{{}}); err == nil {
		t.Error("Ruleset accepted the zero address as a nat guest")
	}
}

func TestCTStateString(t *testing.T) {
	for s, want := range map[CTState]string{
		CTEstablished | CTRelated: "established,related",
		CTEstablished:             "established",
		1<<3 | 1<<9:               "new,0x200",
	} {
		if got := s.String(); got != want {
			t.Errorf("CTState(%#x).String() = %q, want %q", uint32(s), got, want)
		}
	}
}

// With guest_to_guest = false, guests cannot reach each other routed through
// the host either: the forward chain drops bridge-to-bridge first.
func TestRulesetIsolateGuests(t *testing.T) {
	got := mustRuleset(t, Config{IsolateGuests: true}, guestA)
	want := Table{Family: "ip", Name: "banger", Chains: baseChains, Rules: rules(
		Rule{Chain: "forward", InIface: br, OutIface: br, Action: Drop},
		ruleEstablished, ruleFwdA, ruleDropOut, inputRules, ruleMasqA)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Ruleset(isolated) =\n%v\nwant\n%v", got, want)
	}
}

var (
	macA = "02:00:00:00:00:0a"
	macB = "02:00:00:00:00:0b"
)

var bridgeChains = []Chain{
	{Name: "forward", Type: "filter", Hook: "forward", Priority: -200, Policy: Accept},
	{Name: "prerouting", Type: "filter", Hook: "prerouting", Priority: -200, Policy: Accept},
}

// Each bound tap may send IPv4 and ARP from its own MAC and address only;
// everything else from any tap (unbound ones included) is dropped.
func TestBridgeRuleset(t *testing.T) {
	got, err := BridgeRuleset(Config{}, map[string]Binding{
		"bgtap10": {MAC: "02:00:00:00:00:0B", IP: guestB},
		"bgtap2":  {MAC: macA, IP: guestA},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Table{Family: "bridge", Name: "banger", Chains: bridgeChains, Rules: []Rule{
		{Chain: "prerouting", InIface: "bgtap2", EtherSrc: macA, Proto: ProtoIP, Source: guestA, Action: Accept},
		{Chain: "prerouting", InIface: "bgtap2", EtherSrc: macA, Proto: ProtoARP, Source: guestA, Action: Accept},
		{Chain: "prerouting", InIface: "bgtap10", EtherSrc: macB, Proto: ProtoIP, Source: guestB, Action: Accept},
		{Chain: "prerouting", InIface: "bgtap10", EtherSrc: macB, Proto: ProtoARP, Source: guestB, Action: Accept},
		{Chain: "prerouting", InPrefix: "bgtap", Action: Drop},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("BridgeRuleset =\n%v\nwant\n%v", got, want)
	}
	if b := got.Bindings(); !reflect.DeepEqual(b, map[string]Binding{"bgtap2": {macA, guestA}, "bgtap10": {macB, guestB}}) {
		t.Errorf("Bindings = %v", b)
	}
	const text = `table bridge banger {
	chain forward {
		type filter hook forward priority -200; policy accept;
	}
	chain prerouting {
		type filter hook prerouting priority -200; policy accept;
		iifname "bgtap2" ether saddr 02:00:00:00:00:0a ether type ip ip saddr 172.16.0.2 accept
		iifname "bgtap2" ether saddr 02:00:00:00:00:0a ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 02:00:00:00:00:0a arp saddr ip 172.16.0.2 accept
		iifname "bgtap10" ether saddr 02:00:00:00:00:0b ether type ip ip saddr 172.16.0.3 accept
		iifname "bgtap10" ether saddr 02:00:00:00:00:0b ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 02:00:00:00:00:0b arp saddr ip 172.16.0.3 accept
		iifname "bgtap*" drop
	}
}
`
	if got.String() != text {
		t.Errorf("String() =\n%s\nwant\n%s", got, text)
	}
	for _, r := range got.Rules {
		if n := len(r.comment()); n > 255 {
			t.Errorf("comment of %v is %d bytes: nftables keeps 256 at most", r, n)
		}
	}

	// No binding: every tap is mute. Isolated guests: taps do not reach
	// each other.
	got, err = BridgeRuleset(Config{IsolateGuests: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want = Table{Family: "bridge", Name: "banger", Chains: bridgeChains, Rules: []Rule{
		{Chain: "forward", InPrefix: "bgtap", OutPrefix: "bgtap", Action: Drop},
		{Chain: "prerouting", InPrefix: "bgtap", Action: Drop},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("BridgeRuleset(isolated, none) =\n%v\nwant\n%v", got, want)
	}
}

func TestBridgeRulesetRejectsBadBindings(t *testing.T) {
	for name, b := range map[string]map[string]Binding{
		"not a tap":       {"eth0": {macA, guestA}},
		"leading zero":    {"bgtap01": {macA, guestA}},
		"multicast mac":   {"bgtap1": {"03:00:00:00:00:01", guestA}},
		"zero mac":        {"bgtap1": {"00:00:00:00:00:00", guestA}},
		"long mac":        {"bgtap1": {"02:00:00:00:00:00:00:01", guestA}},
		"no mac":          {"bgtap1": {"", guestA}},
		"gateway":         {"bgtap1": {macA, netip.MustParseAddr("172.16.0.1")}},
		"outside":         {"bgtap1": {macA, netip.MustParseAddr("10.0.0.2")}},
		"broadcast":       {"bgtap1": {macA, netip.MustParseAddr("172.16.0.255")}},
		"no address":      {"bgtap1": {macA, netip.Addr{}}},
		"one ip two taps": {"bgtap1": {macA, guestA}, "bgtap2": {macB, guestA}},
	} {
		if _, err := BridgeRuleset(Config{}, b); err == nil {
			t.Errorf("%s: BridgeRuleset accepted %v", name, b)
		}
	}
}

// EgressRuleset refuses what it cannot express safely, and without
// filtered guests it is exactly Ruleset.
func TestEgressRulesetChecks(t *testing.T) {
	cfg := Config{}.WithDefaults()
	g := netip.MustParseAddr("172.16.0.2")
	bad := []struct {
		nat []netip.Addr
		eg  Egress
	}{
		{nil, Egress{Guests: []GuestEgress{{IP: g}}}}, // no proxy port
		{nil, Egress{ProxyPort: 3129, Guests: []GuestEgress{{IP: netip.MustParseAddr("10.0.0.2")}}}},
		{[]netip.Addr{g}, Egress{ProxyPort: 3129, Guests: []GuestEgress{{IP: g}}}},
		{nil, Egress{ProxyPort: 3129, Guests: []GuestEgress{{IP: g}, {IP: g}}}},
		{nil, Egress{ProxyPort: 3129, Guests: []GuestEgress{{IP: g, Allow: []NetAllow{{Net: netip.MustParsePrefix("10.1.2.3/8")}}}}}},
		{nil, Egress{ProxyPort: 3129, Guests: []GuestEgress{{IP: g, Allow: []NetAllow{{Net: netip.MustParsePrefix("2001:db8::/32")}}}}}},
		{nil, Egress{ProxyPort: 3129, Guests: []GuestEgress{{IP: g, Allow: []NetAllow{{Net: netip.MustParsePrefix("10.0.0.0/8"), Port: 5}}}}}},
		{nil, Egress{ProxyPort: 3129, Guests: []GuestEgress{{IP: g, Allow: []NetAllow{{Net: netip.MustParsePrefix("10.0.0.0/8"), Proto: "sctp"}}}}}},
	}
	for _, c := range bad {
		if _, err := EgressRuleset(cfg, c.nat, c.eg); err == nil {
			t.Errorf("accepted %+v %+v", c.nat, c.eg)
		}
	}
	plain, _ := Ruleset(cfg, []netip.Addr{g})
	same, err := EgressRuleset(cfg, []netip.Addr{g}, Egress{ProxyPort: 3129})
	if err != nil || !reflect.DeepEqual(plain, same) {
		t.Errorf("no filtered guests: %v\n%s\nvs\n%s", err, plain, same)
	}
	tb, err := EgressRuleset(cfg, nil, Egress{ProxyPort: 3129, Guests: []GuestEgress{{IP: g,
		Allow: []NetAllow{{Net: netip.MustParsePrefix("10.0.0.0/8"), Proto: "udp"}, {Net: netip.MustParsePrefix("192.0.2.7/32"), Proto: "tcp", Port: 5432}}}}})
	if err != nil {
		t.Fatal(err)
	}
	s := tb.String()
	for _, want := range []string{
		`iifname "banger0" ip saddr 172.16.0.2 tcp dport 443 redirect to :3129`,
		`iifname "banger0" oifname != "banger0" ip saddr 172.16.0.2 ip daddr 10.0.0.0/8 meta l4proto udp accept`,
		`iifname "banger0" oifname != "banger0" ip saddr 172.16.0.2 ip daddr 192.0.2.7 tcp dport 5432 accept`,
		`iifname "banger0" ip saddr 172.16.0.2 ip daddr 172.16.0.1 tcp dport 3129 accept`,
		`oifname != "banger0" ip saddr 172.16.0.2 masquerade`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, s)
		}
	}
	if len(tb.NATGuests()) != 0 {
		t.Errorf("a filtered guest counted as NAT: %v", tb.NATGuests())
	}
}
