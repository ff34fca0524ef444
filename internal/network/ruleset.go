package network

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Names of the chains in banger's table.
const (
	ChainForward     = "forward"
	ChainPostrouting = "postrouting"
)

// Action is what a rule does with a matching packet, or a chain's policy.
type Action string

// Actions used in banger's table.
const (
	Accept     Action = "accept"
	Drop       Action = "drop"
	Masquerade Action = "masquerade"
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

// Rule is one rule of banger's table, described by what it matches and what
// it does. A zero field matches anything; all set fields must match. Rule is
// comparable, so expected and actual rules compare with ==.
type Rule struct {
	// Chain is the chain holding the rule (ChainForward or ChainPostrouting).
	Chain string
	// InIface matches `iifname == InIface` when set.
	InIface string
	// NotOutIface matches `oifname != NotOutIface` when set.
	NotOutIface string
	// Source matches `ip saddr == Source` (one /32) when valid.
	Source netip.Addr
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
	if r.NotOutIface != "" {
		fmt.Fprintf(&b, "oifname != %q ", r.NotOutIface)
	}
	if r.Source.IsValid() {
		fmt.Fprintf(&b, "ip saddr %s ", r.Source)
	}
	if r.CTState != 0 {
		fmt.Fprintf(&b, "ct state %s ", r.CTState)
	}
	b.WriteString(string(r.Action))
	return b.String()
}

// comment is the nftables comment banger puts on the rule: it marks the rule
// as banger's, and reading it back guards against expressions that the
// nftables library cannot decode (it skips those silently).
func (r Rule) comment() string {
	return "banger: " + strings.ReplaceAll(r.String(), `"`, "")
}

// Chain is a base chain of banger's table.
type Chain struct {
	Name     string
	Type     string // "nat" or "filter"
	Hook     string // "postrouting" or "forward"
	Priority int32  // 100 (srcnat) or 0 (filter)
	Policy   Action // always Accept: banger only drops its own traffic
}

// Table is banger's nftables table (family ip): its chains, sorted by name,
// and its rules, grouped by chain in that order and in evaluation order
// within a chain. Two Tables describe the same ruleset exactly when they are
// reflect.DeepEqual.
type Table struct {
	Name   string
	Chains []Chain
	Rules  []Rule
}

// String renders the table in the syntax of `nft list table`.
func (t Table) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", t.Name)
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

// Ruleset returns banger's complete nftables table for cfg (defaults applied)
// with NAT for exactly natGuests (order and duplicates do not matter):
//
//	table ip banger {
//		chain forward {
//			type filter hook forward priority 0; policy accept;
//			ct state established,related accept
//			iifname "banger0" oifname != "banger0" ip saddr GUEST accept   (one per NAT guest)
//			iifname "banger0" oifname != "banger0" drop
//		}
//		chain postrouting {
//			type nat hook postrouting priority 100; policy accept;
//			oifname != "banger0" ip saddr GUEST masquerade                 (one per NAT guest)
//		}
//	}
//
// Both chains accept by default: the table only ever drops traffic coming
// from the bridge, and never traffic that other software on the host routes.
// Guest-to-guest traffic (bridge to bridge) is not routed and not affected.
// Every guest must be a guest address of cfg's subnet.
func Ruleset(cfg Config, natGuests []netip.Addr) (Table, error) {
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

	br := cfg.Bridge
	t := Table{
		Name: cfg.Table,
		Chains: []Chain{
			{Name: ChainForward, Type: "filter", Hook: "forward", Priority: 0, Policy: Accept},
			{Name: ChainPostrouting, Type: "nat", Hook: "postrouting", Priority: 100, Policy: Accept},
		},
	}
	t.Rules = append(t.Rules, Rule{Chain: ChainForward, CTState: CTEstablished | CTRelated, Action: Accept})
	for _, g := range guests {
		t.Rules = append(t.Rules, Rule{Chain: ChainForward, InIface: br, NotOutIface: br, Source: g, Action: Accept})
	}
	t.Rules = append(t.Rules, Rule{Chain: ChainForward, InIface: br, NotOutIface: br, Action: Drop})
	for _, g := range guests {
		t.Rules = append(t.Rules, Rule{Chain: ChainPostrouting, NotOutIface: br, Source: g, Action: Masquerade})
	}
	return t, nil
}
