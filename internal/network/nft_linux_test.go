package network

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
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

func TestDecodeRuleRoundTrip(t *testing.T) {
	tab := mustRuleset(t, Config{}, guestA, guestB)
	for _, r := range tab.Rules {
		got, err := decodeRule(r.Chain, r.exprs(), userdata.AppendString(nil, userdata.TypeComment, r.comment()))
		if err != nil || got != r {
			t.Errorf("decodeRule(exprs(%v)) = %v, %v", r, got, err)
		}
	}
}

func TestDecodeRuleRejectsForeignRules(t *testing.T) {
	comment := userdata.AppendString(nil, userdata.TypeComment, ruleFwdA.comment())
	base := ruleFwdA.exprs()
	for name, tc := range map[string]struct {
		exprs []expr.Any
		udata []byte
	}{
		"no comment":      {base, nil},
		"other comment":   {base, userdata.AppendString(nil, userdata.TypeComment, "hello")},
		"extra counter":   {append(append([]expr.Any{}, base[:6]...), &expr.Counter{}, base[6]), comment},
		"jump":            {append(append([]expr.Any{}, base[:6]...), &expr.Verdict{Kind: expr.VerdictJump, Chain: "x"}), comment},
		"no verdict":      {base[:6], comment},
		"iifname neq":     {append([]expr.Any{base[0], &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifn("banger0")}}, base[2:]...), comment},
		"iifname prefix":  {append([]expr.Any{base[0], &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte("banger")}}, base[2:]...), comment},
		"daddr":           {append(append([]expr.Any{}, base[:4]...), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}, base[5], base[6]), comment},
		"twice iifname":   {append(append([]expr.Any{}, base[:2]...), base...), comment},
		"masq with flags": {append(append([]expr.Any{}, ruleMasqA.exprs()[:4]...), &expr.Masq{Random: true}), userdata.AppendString(nil, userdata.TypeComment, ruleMasqA.comment())},
	} {
		if r, err := decodeRule("forward", tc.exprs, tc.udata); err == nil {
			t.Errorf("%s: decodeRule accepted it as %v", name, r)
		}
	}
}

func dumpExprs(es []expr.Any) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "\t%T %+v\n", e, e)
	}
	return b.String()
}
