package network

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Layout constants of the expressions banger emits.
const (
	nftReg        = 1  // NFT_REG_1, the only data register banger uses
	ipSaddrOffset = 12 // offset of the source address in the IPv4 header
	ipDaddrOffset = 16 // offset of the destination address in the IPv4 header
	etherSrcOff   = 6  // offset of the source address in the Ethernet header
	etherTypeOff  = 12 // offset of the Ethernet type
	arpShaOffset  = 8  // ARP sender hardware address (Ethernet/IPv4 ARP)
	arpSpaOffset  = 14 // ARP sender protocol address
	ifnamsiz      = unix.IFNAMSIZ
)

// arpEthIPv4 is the start of an Ethernet/IPv4 ARP header: htype 1, ptype
// 0x0800, hlen 6, plen 4.
var arpEthIPv4 = []byte{0, 1, 8, 0, 6, 4}

// ifnameData is an interface name as `meta iifname/oifname` loads it: padded
// with NULs to IFNAMSIZ, so that comparing all 16 bytes is an exact match.
func ifnameData(name string) []byte {
	b := make([]byte, ifnamsiz)
	copy(b, name)
	return b
}

func load(base expr.PayloadBase, off, n uint32) *expr.Payload {
	return &expr.Payload{DestRegister: nftReg, Base: base, Offset: off, Len: n}
}

func cmpEq(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: nftReg, Data: data} }

// exprs compiles the rule to nftables expressions, in the same shape as the
// nft command line tool produces for the rule's String.
func (r Rule) exprs() []expr.Any {
	var e []expr.Any
	iface := func(key expr.MetaKey, op expr.CmpOp, data []byte) {
		e = append(e, &expr.Meta{Key: key, Register: nftReg}, &expr.Cmp{Op: op, Register: nftReg, Data: data})
	}
	if r.InIface != "" {
		iface(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifnameData(r.InIface))
	}
	if r.InPrefix != "" {
		iface(expr.MetaKeyIIFNAME, expr.CmpOpEq, []byte(r.InPrefix))
	}
	if r.OutIface != "" {
		iface(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifnameData(r.OutIface))
	}
	if r.OutPrefix != "" {
		iface(expr.MetaKeyOIFNAME, expr.CmpOpEq, []byte(r.OutPrefix))
	}
	if r.NotOutIface != "" {
		iface(expr.MetaKeyOIFNAME, expr.CmpOpNeq, ifnameData(r.NotOutIface))
	}
	var mac []byte
	if r.EtherSrc != "" {
		hw, _ := net.ParseMAC(r.EtherSrc) // checked by BridgeRuleset
		mac = []byte(hw)
		e = append(e, load(expr.PayloadBaseLLHeader, etherSrcOff, 6), cmpEq(mac))
	}
	switch r.Proto {
	case ProtoIP:
		e = append(e, load(expr.PayloadBaseLLHeader, etherTypeOff, 2), cmpEq(binaryutil.BigEndian.PutUint16(unix.ETH_P_IP)))
	case ProtoARP:
		e = append(e, load(expr.PayloadBaseLLHeader, etherTypeOff, 2), cmpEq(binaryutil.BigEndian.PutUint16(unix.ETH_P_ARP)),
			load(expr.PayloadBaseNetworkHeader, 0, 6), cmpEq(slices.Clone(arpEthIPv4)))
		if mac != nil {
			e = append(e, load(expr.PayloadBaseNetworkHeader, arpShaOffset, 6), cmpEq(slices.Clone(mac)))
		}
		if r.Source.IsValid() {
			e = append(e, load(expr.PayloadBaseNetworkHeader, arpSpaOffset, 4), cmpEq(r.Source.AsSlice()))
		}
	}
	if r.Source.IsValid() && r.Proto != ProtoARP {
		e = append(e, load(expr.PayloadBaseNetworkHeader, ipSaddrOffset, 4), cmpEq(r.Source.AsSlice()))
	}
	if r.Dest.IsValid() {
		e = append(e, load(expr.PayloadBaseNetworkHeader, ipDaddrOffset, 4), cmpEq(r.Dest.AsSlice()))
	}
	if r.DestNet.IsValid() {
		mask := net.CIDRMask(r.DestNet.Bits(), 32)
		e = append(e, load(expr.PayloadBaseNetworkHeader, ipDaddrOffset, 4),
			&expr.Bitwise{SourceRegister: nftReg, DestRegister: nftReg, Len: 4, Mask: []byte(mask), Xor: make([]byte, 4)},
			cmpEq(r.DestNet.Masked().Addr().AsSlice()))
	}
	if r.L4 != "" && r.DPort == 0 {
		proto := byte(unix.IPPROTO_UDP)
		if r.L4 == "tcp" {
			proto = unix.IPPROTO_TCP
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: nftReg}, cmpEq([]byte{proto}))
	}
	if r.L4 != "" && r.DPort != 0 {
		proto := byte(unix.IPPROTO_UDP)
		if r.L4 == "tcp" {
			proto = unix.IPPROTO_TCP
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: nftReg}, cmpEq([]byte{proto}),
			load(expr.PayloadBaseTransportHeader, 2, 2), cmpEq(binaryutil.BigEndian.PutUint16(r.DPort)))
	}
	if r.CTState != 0 {
		e = append(e,
			&expr.Ct{Register: nftReg, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: nftReg, DestRegister: nftReg, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(uint32(r.CTState)), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: nftReg, Data: make([]byte, 4)})
	}
	switch r.Action {
	case Accept:
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case Drop:
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	case Masquerade:
		e = append(e, &expr.Masq{})
	case Redirect:
		// As the kernel dumps `redirect to :PORT` back: both registers.
		e = append(e, &expr.Immediate{Register: nftReg, Data: binaryutil.BigEndian.PutUint16(r.ToPort)},
			&expr.Redir{RegisterProtoMin: nftReg, RegisterProtoMax: nftReg, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED})
	}
	return e
}

// kernelRule is a rule as read from the kernel: its chain, expressions and
// comment, undecoded.
type kernelRule struct {
	chain   string
	exprs   []expr.Any
	comment string
}

// matches reports whether the kernel rule is exactly r: same chain, same
// expressions, and banger's comment for r.
func (k kernelRule) matches(r Rule) bool {
	return k.chain == r.Chain && k.comment == r.comment() && reflect.DeepEqual(k.exprs, r.exprs())
}

// findLoad returns the data compared for equality right after a payload
// load of (base, offset, size), if the rule has one.
func (k kernelRule) findLoad(base expr.PayloadBase, off, size uint32) ([]byte, bool) {
	for i := 0; i+1 < len(k.exprs); i++ {
		p, ok := k.exprs[i].(*expr.Payload)
		if !ok || p.Base != base || p.Offset != off || p.Len != size {
			continue
		}
		if c, ok := k.exprs[i+1].(*expr.Cmp); ok && c.Op == expr.CmpOpEq && len(c.Data) == int(size) {
			return c.Data, true
		}
	}
	return nil, false
}

// findIIF returns the exact input interface name the rule matches, if any.
func (k kernelRule) findIIF() (string, bool) {
	for i := 0; i+1 < len(k.exprs); i++ {
		if m, ok := k.exprs[i].(*expr.Meta); ok && m.Key == expr.MetaKeyIIFNAME {
			if c, ok := k.exprs[i+1].(*expr.Cmp); ok && c.Op == expr.CmpOpEq && len(c.Data) == ifnamsiz {
				name, _, _ := strings.Cut(string(c.Data), "\x00")
				return name, name != ""
			}
		}
	}
	return "", false
}

func (k kernelRule) last() expr.Any {
	if len(k.exprs) == 0 {
		return nil
	}
	return k.exprs[len(k.exprs)-1]
}

// kernelTable is one of banger's tables as read from the kernel.
type kernelTable struct {
	exists bool
	chains []Chain
	rules  []kernelRule
	// handles are the rules' nftables handles, when read from the kernel.
	handles []uint64
}

// inSync reports whether the kernel holds exactly want.
func (k kernelTable) inSync(want Table) bool {
	if !k.exists || !slices.Equal(k.chains, want.Chains) || len(k.rules) != len(want.Rules) {
		return false
	}
	for i, r := range want.Rules {
		if !k.rules[i].matches(r) {
			return false
		}
	}
	return true
}

// natGuests returns the sources of the table's masquerade rules, sorted:
// what the kernel NATs, whoever wrote the rule.
func (k kernelTable) natGuests() []netip.Addr {
	var out []netip.Addr
	for _, r := range k.rules {
		if _, masq := r.last().(*expr.Masq); !masq || r.chain != ChainPostrouting {
			continue
		}
		if d, ok := r.findLoad(expr.PayloadBaseNetworkHeader, ipSaddrOffset, 4); ok {
			out = append(out, netip.AddrFrom4([4]byte(d)))
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// sourceRules returns the rules that match an IPv4 source address.
func (k kernelTable) sourceRules() []SourceRule {
	var out []SourceRule
	for i, r := range k.rules {
		if d, ok := r.findLoad(expr.PayloadBaseNetworkHeader, ipSaddrOffset, 4); ok {
			sr := SourceRule{Chain: r.chain, Source: netip.AddrFrom4([4]byte(d))}
			if i < len(k.handles) {
				sr.Handle = k.handles[i]
			}
			out = append(out, sr)
		}
	}
	return out
}

// ReadSourceRules reads banger's ip-family table named table from the
// kernel, in the calling thread's network namespace (it needs
// CAP_NET_ADMIN), and returns its rules that match an IPv4 source
// address (`ip saddr ADDR`), by chain name then rule order. It only
// reads: nothing is created or changed. A missing table has no rules.
// Errors wrap the kernel's (EPERM without the capability,
// EPROTONOSUPPORT without nftables).
func ReadSourceRules(table string) ([]SourceRule, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("read rules of table %q: open nftables: %w", table, err)
	}
	k, err := readTable(conn, FamilyIP, table)
	if err != nil {
		return nil, fmt.Errorf("read rules of table %q: %w", table, err)
	}
	return k.sourceRules(), nil
}

// bindings returns the taps the bridge table lets send IPv4 (an accept rule
// matching the tap, an Ethernet source and an IPv4 source).
func (k kernelTable) bindings() map[string]Binding {
	out := map[string]Binding{}
	for _, r := range k.rules {
		v, ok := r.last().(*expr.Verdict)
		if !ok || v.Kind != expr.VerdictAccept || r.chain != ChainPrerouting {
			continue
		}
		tap, ok1 := r.findIIF()
		et, ok2 := r.findLoad(expr.PayloadBaseLLHeader, etherTypeOff, 2)
		mac, ok3 := r.findLoad(expr.PayloadBaseLLHeader, etherSrcOff, 6)
		ip, ok4 := r.findLoad(expr.PayloadBaseNetworkHeader, ipSaddrOffset, 4)
		if ok1 && ok2 && ok3 && ok4 && binary.BigEndian.Uint16(et) == unix.ETH_P_IP {
			out[tap] = Binding{MAC: net.HardwareAddr(mac).String(), IP: netip.AddrFrom4([4]byte(ip))}
		}
	}
	return out
}

// hookName names the hooks of the chains banger uses ("" for others). The
// bridge family uses the same numbers as inet (NF_BR_PRE_ROUTING = 0,
// NF_BR_FORWARD = 2).
func hookName(h nftables.ChainHook) string {
	switch h {
	case unix.NF_INET_PRE_ROUTING:
		return "prerouting"
	case unix.NF_INET_LOCAL_IN:
		return "input"
	case unix.NF_INET_FORWARD:
		return "forward"
	case unix.NF_INET_POST_ROUTING:
		return "postrouting"
	}
	return ""
}

// hookByName is the inverse of hookName.
func hookByName(name string) (*nftables.ChainHook, error) {
	for _, h := range []nftables.ChainHook{unix.NF_INET_PRE_ROUTING, unix.NF_INET_LOCAL_IN, unix.NF_INET_FORWARD, unix.NF_INET_POST_ROUTING} {
		if hookName(h) == name {
			return nftables.ChainHookRef(h), nil
		}
	}
	return nil, fmt.Errorf("unknown hook %q", name)
}

func nftFamily(family string) nftables.TableFamily {
	if family == FamilyBridge {
		return nftables.TableFamilyBridge
	}
	return nftables.TableFamilyIPv4
}

// readTable reads one of banger's tables through conn.
func readTable(conn *nftables.Conn, family, name string) (kernelTable, error) {
	var k kernelTable
	fam := nftFamily(family)
	tables, err := conn.ListTablesOfFamily(fam)
	if err != nil {
		return k, fmt.Errorf("list nftables tables: %w", err)
	}
	var t *nftables.Table
	for _, tt := range tables {
		if tt.Name == name {
			t = tt
		}
	}
	if t == nil {
		return k, nil
	}
	k.exists = true
	chains, err := conn.ListChainsOfTableFamily(fam)
	if err != nil {
		return k, fmt.Errorf("list chains of table %s %q: %w", family, name, err)
	}
	var mine []*nftables.Chain
	for _, c := range chains {
		if c.Table != nil && c.Table.Name == name {
			mine = append(mine, c)
		}
	}
	slices.SortFunc(mine, func(a, b *nftables.Chain) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range mine {
		ch := Chain{Name: c.Name, Type: string(c.Type)}
		if c.Hooknum != nil && c.Priority != nil {
			ch.Hook = hookName(*c.Hooknum)
			if ch.Hook == "" {
				ch.Hook = fmt.Sprintf("hook%d", *c.Hooknum)
			}
			ch.Priority = int32(*c.Priority)
		}
		if c.Policy != nil {
			ch.Policy = Drop
			if *c.Policy == nftables.ChainPolicyAccept {
				ch.Policy = Accept
			}
		}
		k.chains = append(k.chains, ch)
		rules, err := conn.GetRules(t, c)
		if err != nil {
			return k, fmt.Errorf("list rules of chain %q: %w", c.Name, err)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			k.rules = append(k.rules, kernelRule{chain: c.Name, exprs: r.Exprs, comment: comment})
			k.handles = append(k.handles, r.Handle)
		}
	}
	return k, nil
}

// queueTable queues the replacement of one of banger's tables with want on
// conn: add the table (so the delete cannot fail), delete it with everything
// in it, and create it again with want's chains and rules. The caller
// flushes; the kernel applies the batch atomically, and nothing outside the
// table is touched.
func queueTable(conn *nftables.Conn, want Table) error {
	t := &nftables.Table{Name: want.Name, Family: nftFamily(want.Family)}
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	chains := map[string]*nftables.Chain{}
	for _, c := range want.Chains {
		hook, err := hookByName(c.Hook)
		if err != nil {
			return fmt.Errorf("chain %q: %w", c.Name, err)
		}
		policy := nftables.ChainPolicyAccept
		if c.Policy == Drop {
			policy = nftables.ChainPolicyDrop
		}
		chains[c.Name] = conn.AddChain(&nftables.Chain{
			Name:     c.Name,
			Table:    t,
			Type:     nftables.ChainType(c.Type),
			Hooknum:  hook,
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(c.Priority)),
			Policy:   &policy,
		})
	}
	for _, r := range want.Rules {
		ch := chains[r.Chain]
		if ch == nil {
			return fmt.Errorf("rule %q: no chain %q", r, r.Chain)
		}
		conn.AddRule(&nftables.Rule{
			Table:    t,
			Chain:    ch,
			Exprs:    r.exprs(),
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment()),
		})
	}
	return nil
}

// applyTables replaces each of the given tables in one nftables transaction.
func applyTables(conn *nftables.Conn, want ...Table) error {
	for _, t := range want {
		if err := queueTable(conn, t); err != nil {
			return err
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("apply nftables tables %q: %w", want[0].Name, err)
	}
	return nil
}

// deleteTables removes banger's tables if they exist (add then delete in
// one batch, so a missing table is not an error).
func deleteTables(conn *nftables.Conn, name string) error {
	for _, fam := range []string{FamilyIP, FamilyBridge} {
		t := &nftables.Table{Name: name, Family: nftFamily(fam)}
		conn.AddTable(t)
		conn.DelTable(t)
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("delete nftables tables %q: %w", name, err)
	}
	return nil
}
