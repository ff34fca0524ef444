package network

import (
	"net/netip"
	"reflect"
	"testing"
)

var (
	guestA = netip.MustParseAddr("172.16.0.2")
	guestB = netip.MustParseAddr("172.16.0.3")
)

// baseChains are the chains of banger's table whatever the guests.
var baseChains = []Chain{
	{Name: "forward", Type: "filter", Hook: "forward", Priority: 0, Policy: Accept},
	{Name: "postrouting", Type: "nat", Hook: "postrouting", Priority: 100, Policy: Accept},
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
	want := Table{Name: "banger", Chains: baseChains, Rules: []Rule{ruleEstablished, ruleDropOut}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Ruleset(no guests) =\n%v\nwant\n%v", got, want)
	}
	if len(got.NATGuests()) != 0 {
		t.Errorf("NATGuests = %v, want none", got.NATGuests())
	}
}

func TestRulesetOneGuest(t *testing.T) {
	got := mustRuleset(t, Config{}, guestA)
	want := Table{Name: "banger", Chains: baseChains, Rules: []Rule{ruleEstablished, ruleFwdA, ruleDropOut, ruleMasqA}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Ruleset(a) =\n%v\nwant\n%v", got, want)
	}
}

func TestRulesetTwoGuests(t *testing.T) {
	// Order and duplicates of the input do not matter; the output is sorted.
	got := mustRuleset(t, Config{}, guestB, guestA, guestB)
	want := Table{Name: "banger", Chains: baseChains, Rules: []Rule{
		ruleEstablished, ruleFwdA, ruleFwdB, ruleDropOut, ruleMasqA, ruleMasqB,
	}}
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
	want := Table{Name: "bt", Chains: baseChains, Rules: []Rule{
		{Chain: "forward", CTState: CTEstablished | CTRelated, Action: Accept},
		{Chain: "forward", InIface: "br-test", NotOutIface: "br-test", Source: g, Action: Accept},
		{Chain: "forward", InIface: "br-test", NotOutIface: "br-test", Action: Drop},
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
