package network

import (
	"bytes"
	"fmt"
	"net/netip"
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
	ifnamsiz      = unix.IFNAMSIZ
)

// ifnameData is an interface name as `meta iifname/oifname` loads it: padded
// with NULs to IFNAMSIZ, so that comparing all 16 bytes is an exact match.
func ifnameData(name string) []byte {
	b := make([]byte, ifnamsiz)
	copy(b, name)
	return b
}

// exprs compiles the rule to nftables expressions, in the same shape as the
// nft command line tool produces for the rule's String.
func (r Rule) exprs() []expr.Any {
	var e []expr.Any
	if r.InIface != "" {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: nftReg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: nftReg, Data: ifnameData(r.InIface)})
	}
	if r.NotOutIface != "" {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: nftReg},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: nftReg, Data: ifnameData(r.NotOutIface)})
	}
	if r.Source.IsValid() {
		e = append(e,
			&expr.Payload{DestRegister: nftReg, Base: expr.PayloadBaseNetworkHeader, Offset: ipSaddrOffset, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: nftReg, Data: r.Source.AsSlice()})
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
	}
	return e
}

// decodeRule is the inverse of Rule.exprs: it accepts exactly the expression
// shapes exprs produces and fails on anything else, so a rule that banger did
// not write is never mistaken for one of its own.
func decodeRule(chain string, exprs []expr.Any, udata []byte) (Rule, error) {
	r := Rule{Chain: chain}
	cmp := func(i int, op expr.CmpOp, size int) ([]byte, error) {
		if i >= len(exprs) {
			return nil, fmt.Errorf("expression %d: missing comparison", i)
		}
		c, ok := exprs[i].(*expr.Cmp)
		if !ok || c.Op != op || c.Register != nftReg || len(c.Data) != size {
			return nil, fmt.Errorf("expression %d: unexpected %T %+v", i, exprs[i], exprs[i])
		}
		return c.Data, nil
	}
	seen := map[string]bool{}
	once := func(what string) error {
		if seen[what] {
			return fmt.Errorf("%s matched twice", what)
		}
		seen[what] = true
		return nil
	}
	for i := 0; i < len(exprs); i++ {
		last := i == len(exprs)-1
		switch e := exprs[i].(type) {
		case *expr.Meta:
			if e.Register != nftReg || e.SourceRegister {
				return Rule{}, fmt.Errorf("expression %d: unexpected meta %+v", i, e)
			}
			var (
				op   expr.CmpOp
				dest *string
			)
			switch e.Key {
			case expr.MetaKeyIIFNAME:
				op, dest = expr.CmpOpEq, &r.InIface
			case expr.MetaKeyOIFNAME:
				op, dest = expr.CmpOpNeq, &r.NotOutIface
			default:
				return Rule{}, fmt.Errorf("expression %d: unexpected meta key %d", i, e.Key)
			}
			if err := once(fmt.Sprint("meta", e.Key)); err != nil {
				return Rule{}, err
			}
			data, err := cmp(i+1, op, ifnamsiz)
			if err != nil {
				return Rule{}, err
			}
			name, _, _ := bytes.Cut(data, []byte{0})
			if len(name) == 0 || !bytes.Equal(data, ifnameData(string(name))) {
				return Rule{}, fmt.Errorf("expression %d: malformed interface name %q", i+1, data)
			}
			*dest = string(name)
			i++
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad || e.DestRegister != nftReg || e.Base != expr.PayloadBaseNetworkHeader ||
				e.Offset != ipSaddrOffset || e.Len != 4 || e.CsumType != 0 || e.CsumOffset != 0 || e.CsumFlags != 0 {
				return Rule{}, fmt.Errorf("expression %d: unexpected payload %+v", i, e)
			}
			if err := once("saddr"); err != nil {
				return Rule{}, err
			}
			data, err := cmp(i+1, expr.CmpOpEq, 4)
			if err != nil {
				return Rule{}, err
			}
			r.Source = netip.AddrFrom4([4]byte(data))
			i++
		case *expr.Ct:
			if e.Key != expr.CtKeySTATE || e.Register != nftReg || e.SourceRegister {
				return Rule{}, fmt.Errorf("expression %d: unexpected ct %+v", i, e)
			}
			if err := once("ct"); err != nil {
				return Rule{}, err
			}
			if i+1 >= len(exprs) {
				return Rule{}, fmt.Errorf("expression %d: ct state without mask", i)
			}
			bw, ok := exprs[i+1].(*expr.Bitwise)
			if !ok || bw.SourceRegister != nftReg || bw.DestRegister != nftReg || bw.Len != 4 ||
				len(bw.Mask) != 4 || !bytes.Equal(bw.Xor, make([]byte, 4)) {
				return Rule{}, fmt.Errorf("expression %d: unexpected %T %+v", i+1, exprs[i+1], exprs[i+1])
			}
			data, err := cmp(i+2, expr.CmpOpNeq, 4)
			if err != nil {
				return Rule{}, err
			}
			if !bytes.Equal(data, make([]byte, 4)) {
				return Rule{}, fmt.Errorf("expression %d: ct state compared with %x", i+2, data)
			}
			r.CTState = CTState(binaryutil.NativeEndian.Uint32(bw.Mask))
			if r.CTState == 0 {
				return Rule{}, fmt.Errorf("expression %d: empty ct state mask", i+1)
			}
			i += 2
		case *expr.Verdict:
			switch {
			case !last:
				return Rule{}, fmt.Errorf("expression %d: verdict before the end", i)
			case e.Kind == expr.VerdictAccept && e.Chain == "":
				r.Action = Accept
			case e.Kind == expr.VerdictDrop && e.Chain == "":
				r.Action = Drop
			default:
				return Rule{}, fmt.Errorf("expression %d: unexpected verdict %+v", i, e)
			}
		case *expr.Masq:
			if !last || *e != (expr.Masq{}) {
				return Rule{}, fmt.Errorf("expression %d: unexpected masquerade %+v", i, e)
			}
			r.Action = Masquerade
		default:
			return Rule{}, fmt.Errorf("expression %d: unexpected %T", i, e)
		}
	}
	if r.Action == "" {
		return Rule{}, fmt.Errorf("rule without a verdict")
	}
	if c, _ := userdata.GetString(udata, userdata.TypeComment); c != r.comment() {
		return Rule{}, fmt.Errorf("rule %q carries comment %q, want %q", r, c, r.comment())
	}
	return r, nil
}

// hookName names the hooks of the chains banger uses ("" for others).
func hookName(h nftables.ChainHook) string {
	switch h {
	case unix.NF_INET_FORWARD:
		return "forward"
	case unix.NF_INET_POST_ROUTING:
		return "postrouting"
	}
	return ""
}

// hookByName is the inverse of hookName.
func hookByName(name string) (*nftables.ChainHook, error) {
	switch name {
	case "forward":
		return nftables.ChainHookRef(unix.NF_INET_FORWARD), nil
	case "postrouting":
		return nftables.ChainHookRef(unix.NF_INET_POST_ROUTING), nil
	}
	return nil, fmt.Errorf("unknown hook %q", name)
}

// kernelTable is banger's table as read from the kernel.
type kernelTable struct {
	exists bool
	table  Table // decoded chains and rules (rules that do not decode are left out)
	bad    []string
}

// inSync reports whether the kernel holds exactly want.
func (k kernelTable) inSync(want Table) bool {
	return k.exists && len(k.bad) == 0 && tablesEqual(k.table, want)
}

func tablesEqual(a, b Table) bool {
	return a.Name == b.Name && slices.Equal(a.Chains, b.Chains) && slices.Equal(a.Rules, b.Rules)
}

// readTable reads banger's table (family ip) through conn.
func readTable(conn *nftables.Conn, name string) (kernelTable, error) {
	k := kernelTable{table: Table{Name: name}}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
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
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return k, fmt.Errorf("list chains of table %q: %w", name, err)
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
		k.table.Chains = append(k.table.Chains, ch)
		rules, err := conn.GetRules(t, c)
		if err != nil {
			return k, fmt.Errorf("list rules of chain %q: %w", c.Name, err)
		}
		for _, r := range rules {
			dr, err := decodeRule(c.Name, r.Exprs, r.UserData)
			if err != nil {
				k.bad = append(k.bad, fmt.Sprintf("chain %s handle %d: %v", c.Name, r.Handle, err))
				continue
			}
			k.table.Rules = append(k.table.Rules, dr)
		}
	}
	return k, nil
}

// applyTable replaces banger's table with want in one nftables transaction:
// add the table (so the delete cannot fail), delete it with everything in it,
// and create it again with want's chains and rules. The kernel applies the
// batch atomically; nothing outside the table is touched.
func applyTable(conn *nftables.Conn, want Table) error {
	t := &nftables.Table{Name: want.Name, Family: nftables.TableFamilyIPv4}
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
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("apply nftables table %q: %w", want.Name, err)
	}
	return nil
}

// deleteTable removes banger's table if it exists (add then delete in one
// batch, so a missing table is not an error).
func deleteTable(conn *nftables.Conn, name string) error {
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyIPv4}
	conn.AddTable(t)
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("delete nftables table %q: %w", name, err)
	}
	return nil
}
