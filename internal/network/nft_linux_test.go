package network

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// ifn is an interface name as a 16-byte comparison operand.
func ifn(name string) []byte {
	b := make([]byte, 16)
	copy(b, name)
	return b
}

// The expressions each kind of rule compiles to, spelled out: the same ones
// `nft` produces for the rule's text.
func TestRuleExprs(t *testing.T) {
	iif := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifn("banger0")},
	}
	oifNot := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifn("banger0")},
	}
	saddrA := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{172, 16, 0, 2}},
	}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	for _, tc := range []struct {
		rule Rule
		want []expr.Any
	}{
		{ruleEstablished, []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}},
		{ruleFwdA, cat(iif, oifNot, saddrA, []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}})},
		{ruleDropOut, cat(iif, oifNot, []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}})},
		{ruleMasqA, cat(oifNot, saddrA, []expr.Any{&expr.Masq{}})},
	} {
		if got := tc.rule.exprs(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: exprs =\n%s\nwant\n%s", tc.rule, dumpExprs(got), dumpExprs(tc.want))
		}
	}
}

// A kernel rule matches a Rule only with the same chain, the same
// expressions and banger's comment for it: a foreign rule that looks alike
// leaves the table out of sync.
func TestKernelRuleMatchesOnlyExactRules(t *testing.T) {
	tab := mustRuleset(t, Config{}, guestA, guestB)
	for _, r := range tab.Rules {
		if k := (kernelRule{r.Chain, r.exprs(), r.comment()}); !k.matches(r) {
			t.Errorf("rule %v does not match its own expressions", r)
		}
	}
	base := ruleFwdA.exprs()
	for name, k := range map[string]kernelRule{
		"no comment":     {"forward", base, ""},
		"other comment":  {"forward", base, "hello"},
		"other chain":    {"input", base, ruleFwdA.comment()},
		"extra counter":  {"forward", append(append([]expr.Any{}, base[:6]...), &expr.Counter{}, base[6]), ruleFwdA.comment()},
		"jump":           {"forward", append(append([]expr.Any{}, base[:6]...), &expr.Verdict{Kind: expr.VerdictJump, Chain: "x"}), ruleFwdA.comment()},
		"no verdict":     {"forward", base[:6], ruleFwdA.comment()},
		"iifname neq":    {"forward", append([]expr.Any{base[0], &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifn("banger0")}}, base[2:]...), ruleFwdA.comment()},
		"iifname prefix": {"forward", append([]expr.Any{base[0], &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("banger")}}, base[2:]...), ruleFwdA.comment()},
		"other source":   {"forward", append(append([]expr.Any{}, base[:5]...), &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{172, 16, 0, 9}}, base[6]), ruleFwdA.comment()},
	} {
		if k.matches(ruleFwdA) {
			t.Errorf("%s: matched %v", name, ruleFwdA)
		}
		kt := kernelTable{exists: true, chains: tab.Chains, rules: []kernelRule{k}}
		if kt.inSync(Table{Chains: tab.Chains, Rules: []Rule{ruleFwdA}}) {
			t.Errorf("%s: table in sync", name)
		}
	}
}

// The bridge rules compile to what nft makes of their text: Ethernet source,
// Ethernet type, ARP header and sender fields, IPv4 source.
func TestBridgeRuleExprs(t *testing.T) {
	mac := []byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	iif := []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifn("bgtap3")}}
	src := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mac}}
	ipRule := Rule{Chain: "prerouting", InIface: "bgtap3", EtherSrc: "02:aa:bb:cc:dd:ee", Proto: ProtoIP, Source: guestA, Action: Accept}
	want := append(append(append([]expr.Any{}, iif...), src...),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{8, 0}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{172, 16, 0, 2}},
		&expr.Verdict{Kind: expr.VerdictAccept})
	if got := ipRule.exprs(); !reflect.DeepEqual(got, want) {
		t.Errorf("%v: exprs =\n%s\nwant\n%s", ipRule, dumpExprs(got), dumpExprs(want))
	}
	arpRule := ipRule
	arpRule.Proto = ProtoARP
	want = append(append(append([]expr.Any{}, iif...), src...),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{8, 6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 6}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 1, 8, 0, 6, 4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 6}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mac},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 14, Len: 4}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{172, 16, 0, 2}},
		&expr.Verdict{Kind: expr.VerdictAccept})
	if got := arpRule.exprs(); !reflect.DeepEqual(got, want) {
		t.Errorf("%v: exprs =\n%s\nwant\n%s", arpRule, dumpExprs(got), dumpExprs(want))
	}
	drop := Rule{Chain: "prerouting", InPrefix: "bgtap", Action: Drop}
	want = []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("bgtap")}, &expr.Verdict{Kind: expr.VerdictDrop}}
	if got := drop.exprs(); !reflect.DeepEqual(got, want) {
		t.Errorf("%v: exprs =\n%s\nwant\n%s", drop, dumpExprs(got), dumpExprs(want))
	}
	// The bindings read back from such rules are the ones written.
	tab, err := BridgeRuleset(Config{}, map[string]Binding{"bgtap3": {MAC: "02:AA:BB:CC:DD:EE", IP: guestA}})
	if err != nil {
		t.Fatal(err)
	}
	var k kernelTable
	for _, r := range tab.Rules {
		k.rules = append(k.rules, kernelRule{r.Chain, r.exprs(), r.comment()})
	}
	if got := k.bindings(); !reflect.DeepEqual(got, map[string]Binding{"bgtap3": {MAC: "02:aa:bb:cc:dd:ee", IP: guestA}}) {
		t.Errorf("bindings = %v", got)
	}
}

// The input chain's DNS rule: destination address, transport protocol and
// port.
func TestInputRuleExprs(t *testing.T) {
	r := Rule{Chain: "input", InIface: "banger0", Dest: netip.MustParseAddr("172.16.0.1"), L4: "udp", DPort: 53, Action: Accept}
	want := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifn("banger0")},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{172, 16, 0, 1}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{17}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 53}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
	if got := r.exprs(); !reflect.DeepEqual(got, want) {
		t.Errorf("%v: exprs =\n%s\nwant\n%s", r, dumpExprs(got), dumpExprs(want))
	}
}

func dumpExprs(es []expr.Any) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "\t%T %+v\n", e, e)
	}
	return b.String()
}

// sourceRules finds every rule of banger's ruleset that matches a guest's
// source address, and no other.
func TestSourceRules(t *testing.T) {
	tab := mustRuleset(t, Config{}, guestA, guestB)
	var k kernelTable
	want := map[netip.Addr]int{}
	for i, r := range tab.Rules {
		k.rules = append(k.rules, kernelRule{r.Chain, r.exprs(), r.comment()})
		k.handles = append(k.handles, uint64(100+i))
		if r.Source.IsValid() {
			want[r.Source]++
		}
	}
	got := map[netip.Addr]int{}
	for _, sr := range k.sourceRules() {
		got[sr.Source]++
		if sr.Handle < 100 || sr.Chain == "" {
			t.Errorf("rule %+v lacks its handle or chain", sr)
		}
	}
	if len(want) != 2 || !maps.Equal(got, want) {
		t.Errorf("source rules %v, want %v", got, want)
	}
}
