package network

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Names of the chains in banger's tables.
const (
	ChainForward     = "forward"
	ChainInput       = "input"
	ChainPostrouting = "postrouting"
	ChainPrerouting  = "prerouting"
	// The egress chains (ip table, only while some guest has an allow
	// policy): the transparent redirect to the egress proxy and the
	// masquerade of what the policy lets out.
	ChainEgressPre  = "egress_prerouting"
	ChainEgressPost = "egress_postrouting"
)

// Families of banger's two tables: FamilyIP holds NAT and what guests may
// send to or through the host, FamilyBridge what each tap may send at all.
const (
	FamilyIP     = "ip"
	FamilyBridge = "bridge"
)

// Action is what a rule does with a matching packet, or a chain's policy.
type Action string

// Actions used in banger's tables.
const (
	Accept     Action = "accept"
	Drop       Action = "drop"
	Masquerade Action = "masquerade"
	// Redirect sends the packet to the host itself, port Rule.ToPort
	// (nat prerouting).
	Redirect Action = "redirect"
)

// Link-layer protocols a bridge rule can match (Rule.Proto).
const (
	ProtoIP  = "ip"
	ProtoARP = "arp"
)

// CTState is a set of conntrack states, as the kernel's NF_CT_STATE_BIT mask.
type CTState uint32

// Conntrack states (only the ones banger matches on).
const (
	CTEstablished CTState = 1 << 1
	CTRelated     CTState = 1 << 2
)

// String renders the set in nft syntax, e.g. "established,related".
func (s CTState) String() string {
	var names []string
	for _, st := range []struct {
		bit  CTState
		name string
	}{{1 << 0, "invalid"}, {CTEstablished, "established"}, {CTRelated, "related"}, {1 << 3, "new"}, {1 << 6, "untracked"}} {
		if s&st.bit != 0 {
			names = append(names, st.name)
			s &^= st.bit
		}
	}
	if s != 0 {
		names = append(names, fmt.Sprintf("%#x", uint32(s)))
	}
	return strings.Join(names, ",")
}

// Rule is one rule of banger's tables, described by what it matches and what
// it does. A zero field matches anything; all set fields must match. Rule is
// comparable, so expected and actual rules compare with ==.
type Rule struct {
	// Chain is the chain holding the rule.
	Chain string
	// InIface matches `iifname == InIface` when set; InPrefix matches
	// `iifname "InPrefix*"` (every interface whose name starts so).
	InIface  string
	InPrefix string
	// OutIface matches `oifname == OutIface`, OutPrefix `oifname
	// "OutPrefix*"` and NotOutIface `oifname != NotOutIface`, when set.
	OutIface    string
	OutPrefix   string
	NotOutIface string
	// EtherSrc matches the Ethernet source address (bridge table), in
	// lowercase colon form; with Proto ProtoARP the ARP sender hardware
	// address must be EtherSrc too.
	EtherSrc string
	// Proto matches the Ethernet type (bridge table): ProtoIP, or ProtoARP
	// for an Ethernet/IPv4 ARP packet (htype 1, ptype ip, hlen 6, plen 4).
	Proto string
	// Source matches `ip saddr == Source`, or with Proto ProtoARP the ARP
	// sender protocol address, when valid.
	Source netip.Addr
	// Dest matches `ip daddr == Dest` when valid; DestNet matches `ip
	// daddr DestNet` (a network, masked) when valid.
	Dest    netip.Addr
	DestNet netip.Prefix
	// L4 ("udp" or "tcp") and DPort match the transport protocol and
	// destination port, when set (L4 alone: any port).
	L4    string
	DPort uint16
	// ToPort is the port a Redirect sends the packet to.
	ToPort uint16
	// CTState matches `ct state & CTState != 0` when non-zero.
	CTState CTState
	// Action is Accept, Drop or Masquerade.
	Action Action
}

// String renders the rule's statement in nft syntax, e.g.
// `iifname "banger0" oifname != "banger0" ip saddr 172.16.0.2 accept`.
func (r Rule) String() string {
	var b strings.Builder
	if r.InIface != "" {
		fmt.Fprintf(&b, "iifname %q ", r.InIface)
	}
	if r.InPrefix != "" {
		fmt.Fprintf(&b, "iifname %q ", r.InPrefix+"*")
	}
	if r.OutIface != "" {
		fmt.Fprintf(&b, "oifname %q ", r.OutIface)
	}
	if r.OutPrefix != "" {
		fmt.Fprintf(&b, "oifname %q ", r.OutPrefix+"*")
	}
	if r.NotOutIface != "" {
		fmt.Fprintf(&b, "oifname != %q ", r.NotOutIface)
	}
	if r.EtherSrc != "" {
		fmt.Fprintf(&b, "ether saddr %s ", r.EtherSrc)
	}
	switch r.Proto {
	case ProtoIP:
		b.WriteString("ether type ip ")
	case ProtoARP:
		b.WriteString("ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 ")
		if r.EtherSrc != "" {
			fmt.Fprintf(&b, "arp saddr ether %s ", r.EtherSrc)
		}
		if r.Source.IsValid() {
			fmt.Fprintf(&b, "arp saddr ip %s ", r.Source)
		}
	}
	if r.Source.IsValid() && r.Proto != ProtoARP {
		fmt.Fprintf(&b, "ip saddr %s ", r.Source)
	}
	if r.Dest.IsValid() {
		fmt.Fprintf(&b, "ip daddr %s ", r.Dest)
	}
	if r.DestNet.IsValid() {
		fmt.Fprintf(&b, "ip daddr %s ", r.DestNet)
	}
	switch {
	case r.L4 != "" && r.DPort != 0:
		fmt.Fprintf(&b, "%s dport %d ", r.L4, r.DPort)
	case r.L4 != "":
		fmt.Fprintf(&b, "meta l4proto %s ", r.L4)
	}
	if r.CTState != 0 {
		fmt.Fprintf(&b, "ct state %s ", r.CTState)
	}
	b.WriteString(string(r.Action))
	if r.Action == Redirect {
		fmt.Fprintf(&b, " to :%d", r.ToPort)
	}
	return b.String()
}

// comment is the nftables comment banger puts on the rule: it marks the rule
// as banger's, and reading it back tells banger's rules from rules that
// merely look alike.
func (r Rule) comment() string {
	return "banger: " + strings.ReplaceAll(r.String(), `"`, "")
}

// Chain is a base chain of one of banger's tables.
type Chain struct {
	Name     string
	Type     string // "nat" or "filter"
	Hook     string // "postrouting", "forward", "input" or "prerouting"
	Priority int32  // 100 (srcnat), -100 (dstnat), 0 (filter) or -200 (bridge filter)
	Policy   Action // always Accept: banger only drops guests' traffic
}

// Table is one of banger's nftables tables: its family, its chains sorted by
// name, and its rules, grouped by chain in that order and in evaluation order
// within a chain. Two Tables describe the same ruleset exactly when they are
// reflect.DeepEqual.
type Table struct {
	Family string // FamilyIP or FamilyBridge
	Name   string
	Chains []Chain
	Rules  []Rule
}

// String renders the table in the syntax of `nft list table`.
func (t Table) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", t.Family, t.Name)
	for _, c := range t.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype %s hook %s priority %d; policy %s;\n", c.Name, c.Type, c.Hook, c.Priority, c.Policy)
		for _, r := range t.Rules {
			if r.Chain == c.Name {
				fmt.Fprintf(&b, "\t\t%s\n", r)
			}
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// NATGuests returns the sources of the table's masquerade rules, sorted.
func (t Table) NATGuests() []netip.Addr {
	var guests []netip.Addr
	for _, r := range t.Rules {
		if r.Chain == ChainPostrouting && r.Action == Masquerade && r.Source.IsValid() {
			guests = append(guests, r.Source)
		}
	}
	slices.SortFunc(guests, netip.Addr.Compare)
	return slices.Compact(guests)
}

// Bindings returns the tap bindings of a bridge table: the taps with an
// accept rule for their IPv4 traffic, by tap name.
func (t Table) Bindings() map[string]Binding {
	out := map[string]Binding{}
	for _, r := range t.Rules {
		if r.Chain == ChainPrerouting && r.Action == Accept && r.Proto == ProtoIP && r.InIface != "" {
			out[r.InIface] = Binding{MAC: r.EtherSrc, IP: r.Source}
		}
	}
	return out
}

// Binding is what one tap may send: Ethernet frames from MAC only, and of
// those only IPv4 from IP and ARP for IP at MAC. Everything else from the
// tap is dropped at the bridge.
type Binding struct {
	// MAC is the guest's MAC address (unicast), in any form net.ParseMAC
	// reads; it is normalised to lowercase colon form.
	MAC string `json:"mac"`
	// IP is the guest's IPv4 address, a guest address of the subnet.
	IP netip.Addr `json:"ip"`
}

// normalise checks b against cfg's subnet and returns it in canonical form.
func (b Binding) normalise(sub subnet) (Binding, error) {
	hw, err := net.ParseMAC(b.MAC)
	if err != nil || len(hw) != 6 {
		return Binding{}, fmt.Errorf("binding: mac %q is not an Ethernet address", b.MAC)
	}
	if hw[0]&1 != 0 || slices.Equal(hw, make(net.HardwareAddr, 6)) {
		return Binding{}, fmt.Errorf("binding: mac %s is not a unicast address", hw)
	}
	if !sub.isGuest(b.IP) {
		return Binding{}, fmt.Errorf("binding: %s is not a guest address of %s", b.IP, sub.prefix)
	}
	return Binding{MAC: hw.String(), IP: b.IP.Unmap()}, nil
}

// dnsPort is where guests reach the bridge's DNS server.
const dnsPort = 53

// Ruleset returns banger's ip table for cfg (defaults applied) with NAT for
// exactly natGuests (order and duplicates do not matter):
//
//	table ip banger {
//		chain forward {
//			type filter hook forward priority 0; policy accept;
//			iifname "banger0" oifname "banger0" drop                       (with IsolateGuests only)
//			ct state established,related accept
//			iifname "banger0" oifname != "banger0" ip saddr GUEST accept   (one per NAT guest)
//			iifname "banger0" oifname != "banger0" drop
//		}
//		chain input {
//			type filter hook input priority 0; policy accept;
//			iifname "banger0" ct state established,related accept
//			iifname "banger0" ip daddr BRIDGE udp dport 53 accept
//			iifname "banger0" ip daddr BRIDGE tcp dport 53 accept
//			iifname "banger0" drop
//		}
//		chain postrouting {
//			type nat hook postrouting priority 100; policy accept;
//			oifname != "banger0" ip saddr GUEST masquerade                 (one per NAT guest)
//		}
//	}
//
// The chains accept by default: the table only ever drops traffic coming
// from the bridge, and never traffic that other software on the host routes.
// Guests reach the host only on the bridge's DNS server (and answers to
// connections the host opened: ssh, port forwards); with IsolateGuests they
// cannot reach each other through the host either. The source addresses the
// NAT rules trust are enforced per tap by the bridge table (BridgeRuleset).
// Every guest must be a guest address of cfg's subnet.
func Ruleset(cfg Config, natGuests []netip.Addr) (Table, error) {
	return EgressRuleset(cfg, natGuests, Egress{})
}

// Egress is the filtered egress of the guests under an allow policy: each
// one's TCP 80 and 443 go to the egress proxy on the bridge address, port
// ProxyPort (transparently: nftables redirect), and everything else only
// to its Allow networks.
type Egress struct {
	ProxyPort uint16        `json:"proxy_port"`
	Guests    []GuestEgress `json:"guests,omitempty"`
}

// GuestEgress is one filtered guest: its address and the networks (with
// protocol and port) it may reach by address.
type GuestEgress struct {
	IP    netip.Addr `json:"ip"`
	Allow []NetAllow `json:"allow,omitempty"`
}

// NetAllow is one network a filtered guest may reach: Proto "tcp", "udp"
// or "" (both), Port 0 for every port.
type NetAllow struct {
	Net   netip.Prefix `json:"net"`
	Proto string       `json:"proto,omitempty"`
	Port  uint16       `json:"port,omitempty"`
}

// maxEgressRules bounds the rules one guest's egress adds.
const maxEgressRules = 1024

// EgressRuleset is Ruleset with the filtered guests of eg added: for each
// guest G (besides NAT guests, and in addition to the rules above)
//
//	chain egress_prerouting { type nat hook prerouting priority -100;
//		iifname "banger0" ip saddr G tcp dport 80 redirect to :PROXY
//		iifname "banger0" ip saddr G tcp dport 443 redirect to :PROXY }
//	chain forward { ...
//		iifname "banger0" oifname != "banger0" ip saddr G ip daddr NET [meta l4proto P | P dport N] accept
//		... (before the drop) }
//	chain input { ...
//		iifname "banger0" ip saddr G ip daddr BRIDGE tcp dport PROXY accept   (before the drop) }
//	chain egress_postrouting { type nat hook postrouting priority 100;
//		oifname != "banger0" ip saddr G masquerade }
//
// The masquerade only ever sees what the forward chain let through: the
// guest's Allow networks. Without filtered guests the table is exactly
// Ruleset's.
func EgressRuleset(cfg Config, natGuests []netip.Addr, eg Egress) (Table, error) {
	cfg = cfg.WithDefaults()
	sub, err := newSubnet(cfg.CIDR)
	if err != nil {
		return Table{}, fmt.Errorf("ruleset: %w", err)
	}
	guests := make([]netip.Addr, 0, len(natGuests))
	for _, g := range natGuests {
		if !sub.isGuest(g) {
			return Table{}, fmt.Errorf("ruleset: nat guest %s is not a guest address of %s", g, sub.prefix)
		}
		guests = append(guests, g.Unmap())
	}
	slices.SortFunc(guests, netip.Addr.Compare)
	guests = slices.Compact(guests)

	var filtered []GuestEgress
	seen := map[netip.Addr]bool{}
	for _, g := range guests {
		seen[g] = true
	}
	for _, ge := range eg.Guests {
		ip := ge.IP.Unmap()
		if !sub.isGuest(ip) {
			return Table{}, fmt.Errorf("ruleset: filtered guest %s is not a guest address of %s", ge.IP, sub.prefix)
		}
		if seen[ip] {
			return Table{}, fmt.Errorf("ruleset: guest %s is listed twice (nat or filtered)", ip)
		}
		seen[ip] = true
		if len(ge.Allow) > maxEgressRules {
			return Table{}, fmt.Errorf("ruleset: guest %s: too many allow rules", ip)
		}
		for _, a := range ge.Allow {
			if !a.Net.IsValid() || !a.Net.Addr().Is4() || a.Net.Masked() != a.Net {
				return Table{}, fmt.Errorf("ruleset: guest %s: %s is not an IPv4 network address", ip, a.Net)
			}
			if a.Proto != "" && a.Proto != "tcp" && a.Proto != "udp" {
				return Table{}, fmt.Errorf("ruleset: guest %s: protocol %q", ip, a.Proto)
			}
			if a.Port != 0 && a.Proto == "" {
				return Table{}, fmt.Errorf("ruleset: guest %s: a port needs a protocol", ip)
			}
		}
		filtered = append(filtered, GuestEgress{IP: ip, Allow: ge.Allow})
	}
	if len(filtered) > 0 && eg.ProxyPort == 0 {
		return Table{}, fmt.Errorf("ruleset: filtered guests need the proxy port")
	}
	slices.SortFunc(filtered, func(a, b GuestEgress) int { return a.IP.Compare(b.IP) })

	br, gw := cfg.Bridge, sub.gateway
	t := Table{
		Family: FamilyIP,
		Name:   cfg.Table,
		Chains: []Chain{
			{Name: ChainForward, Type: "filter", Hook: "forward", Priority: 0, Policy: Accept},
			{Name: ChainInput, Type: "filter", Hook: "input", Priority: 0, Policy: Accept},
			{Name: ChainPostrouting, Type: "nat", Hook: "postrouting", Priority: 100, Policy: Accept},
		},
	}
	if cfg.IsolateGuests {
		t.Rules = append(t.Rules, Rule{Chain: ChainForward, InIface: br, OutIface: br, Action: Drop})
	}
	t.Rules = append(t.Rules, Rule{Chain: ChainForward, CTState: CTEstablished | CTRelated, Action: Accept})
	for _, g := range guests {
		t.Rules = append(t.Rules, Rule{Chain: ChainForward, InIface: br, NotOutIface: br, Source: g, Action: Accept})
	}
	for _, ge := range filtered {
		for _, a := range ge.Allow {
			r := Rule{Chain: ChainForward, InIface: br, NotOutIface: br, Source: ge.IP, L4: a.Proto, DPort: a.Port, Action: Accept}
			if a.Net.Bits() == 32 {
				r.Dest = a.Net.Addr()
			} else if a.Net.Bits() > 0 {
				r.DestNet = a.Net
			}
			t.Rules = append(t.Rules, r)
		}
	}
	t.Rules = append(t.Rules,
		Rule{Chain: ChainForward, InIface: br, NotOutIface: br, Action: Drop},
		Rule{Chain: ChainInput, InIface: br, CTState: CTEstablished | CTRelated, Action: Accept},
		Rule{Chain: ChainInput, InIface: br, Dest: gw, L4: "udp", DPort: dnsPort, Action: Accept},
		Rule{Chain: ChainInput, InIface: br, Dest: gw, L4: "tcp", DPort: dnsPort, Action: Accept},
	)
	for _, ge := range filtered {
		t.Rules = append(t.Rules, Rule{Chain: ChainInput, InIface: br, Source: ge.IP, Dest: gw, L4: "tcp", DPort: eg.ProxyPort, Action: Accept})
	}
	t.Rules = append(t.Rules, Rule{Chain: ChainInput, InIface: br, Action: Drop})
	for _, g := range guests {
		t.Rules = append(t.Rules, Rule{Chain: ChainPostrouting, NotOutIface: br, Source: g, Action: Masquerade})
	}
	if len(filtered) > 0 {
		t.Chains = append([]Chain{
			{Name: ChainEgressPost, Type: "nat", Hook: "postrouting", Priority: 100, Policy: Accept},
			{Name: ChainEgressPre, Type: "nat", Hook: "prerouting", Priority: -100, Policy: Accept},
		}, t.Chains...)
		var pre []Rule
		for _, ge := range filtered {
			pre = append(pre, Rule{Chain: ChainEgressPost, NotOutIface: br, Source: ge.IP, Action: Masquerade})
		}
		for _, ge := range filtered {
			for _, port := range []uint16{80, 443} {
				pre = append(pre, Rule{Chain: ChainEgressPre, InIface: br, Source: ge.IP, L4: "tcp", DPort: port, ToPort: eg.ProxyPort, Action: Redirect})
			}
		}
		// Rules are grouped by chain in the chains' (name) order.
		t.Rules = append(pre, t.Rules...)
	}
	return t, nil
}

// BridgeRuleset returns banger's bridge table for cfg (defaults applied)
// with exactly the tap bindings given:
//
//	table bridge banger {
//		chain forward {
//			type filter hook forward priority -200; policy accept;
//			iifname "bgtap*" oifname "bgtap*" drop                           (with IsolateGuests only)
//		}
//		chain prerouting {
//			type filter hook prerouting priority -200; policy accept;
//			iifname TAP ether saddr MAC ether type ip ip saddr IP accept      (two per bound tap)
//			iifname TAP ether saddr MAC ether type arp ... arp saddr ether MAC arp saddr ip IP accept
//			iifname "bgtap*" drop
//		}
//	}
//
// So a tap sends IPv4 from its guest's address and MAC and ARP for them, and
// nothing else: no other source address, no IPv6, no other Ethernet type;
// a tap without a binding (pooled, or not banger's to bind) sends nothing.
// Taps and addresses must be valid and distinct.
func BridgeRuleset(cfg Config, bindings map[string]Binding) (Table, error) {
	cfg = cfg.WithDefaults()
	sub, err := newSubnet(cfg.CIDR)
	if err != nil {
		return Table{}, fmt.Errorf("bridge ruleset: %w", err)
	}
	taps := make([]string, 0, len(bindings))
	for tap := range bindings {
		if _, ok := tapIndex(cfg.TapPrefix, tap); !ok {
			return Table{}, fmt.Errorf("bridge ruleset: %w: %q", ErrNotTap, tap)
		}
		taps = append(taps, tap)
	}
	sortTaps(cfg.TapPrefix, taps)
	t := Table{
		Family: FamilyBridge,
		Name:   cfg.Table,
		Chains: []Chain{
			{Name: ChainForward, Type: "filter", Hook: "forward", Priority: -200, Policy: Accept},
			{Name: ChainPrerouting, Type: "filter", Hook: "prerouting", Priority: -200, Policy: Accept},
		},
	}
	if cfg.IsolateGuests {
		t.Rules = append(t.Rules, Rule{Chain: ChainForward, InPrefix: cfg.TapPrefix, OutPrefix: cfg.TapPrefix, Action: Drop})
	}
	ips := map[netip.Addr]string{}
	for _, tap := range taps {
		b, err := bindings[tap].normalise(sub)
		if err != nil {
			return Table{}, fmt.Errorf("bridge ruleset: tap %s: %w", tap, err)
		}
		if other, dup := ips[b.IP]; dup {
			return Table{}, fmt.Errorf("bridge ruleset: %s is bound to both %s and %s", b.IP, other, tap)
		}
		ips[b.IP] = tap
		t.Rules = append(t.Rules,
			Rule{Chain: ChainPrerouting, InIface: tap, EtherSrc: b.MAC, Proto: ProtoIP, Source: b.IP, Action: Accept},
			Rule{Chain: ChainPrerouting, InIface: tap, EtherSrc: b.MAC, Proto: ProtoARP, Source: b.IP, Action: Accept},
		)
	}
	t.Rules = append(t.Rules, Rule{Chain: ChainPrerouting, InPrefix: cfg.TapPrefix, Action: Drop})
	return t, nil
}

// changedEgress lists the guests whose filtered egress differs between
// old and new (added, removed or changed).
func changedEgress(old, new Egress) []netip.Addr {
	byIP := func(e Egress) map[netip.Addr][]NetAllow {
		m := map[netip.Addr][]NetAllow{}
		for _, g := range e.Guests {
			m[g.IP.Unmap()] = g.Allow
		}
		return m
	}
	o, n := byIP(old), byIP(new)
	var out []netip.Addr
	for ip, a := range o {
		if b, ok := n[ip]; !ok || !slices.Equal(a, b) {
			out = append(out, ip)
		}
	}
	for ip := range n {
		if _, ok := o[ip]; !ok {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
