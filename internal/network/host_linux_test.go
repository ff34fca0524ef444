package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var bg = context.Background()

// links returns the names of the links in the test's namespace, but lo.
func links(t *testing.T) []string {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		if l.Attrs().Name != "lo" {
			names = append(names, l.Attrs().Name)
		}
	}
	slices.Sort(names)
	return names
}

// taps returns the tap devices in the test's namespace.
func taps(t *testing.T) map[string]*netlink.Tuntap {
	t.Helper()
	ls, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*netlink.Tuntap{}
	for _, l := range ls {
		if tt, ok := l.(*netlink.Tuntap); ok {
			out[tt.Name] = tt
		}
	}
	return out
}

func readSys(t *testing.T, name string) string {
	t.Helper()
	v, err := readSysctl(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// kernelRules reads banger's ip table back with google/nftables.
func kernelRules(t *testing.T, name string) kernelTable {
	t.Helper()
	return kernelTableOf(t, FamilyIP, name)
}

func kernelTableOf(t *testing.T, family, name string) kernelTable {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	k, err := readTable(conn, family, name)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// rawRules returns the kernel's rules of banger's table, chain by chain.
func rawRules(t *testing.T, table string) map[string][]*nftables.Rule {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*nftables.Rule{}
	tab := &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}
	for _, chain := range []string{ChainForward, ChainInput, ChainPostrouting} {
		rules, err := conn.GetRules(tab, &nftables.Chain{Name: chain, Table: tab})
		if err != nil {
			t.Fatalf("get rules of %s: %v", chain, err)
		}
		out[chain] = rules
	}
	return out
}

func handles(rules map[string][]*nftables.Rule) []uint64 {
	var hs []uint64
	for _, c := range []string{ChainForward, ChainInput, ChainPostrouting} {
		for _, r := range rules[c] {
			hs = append(hs, r.Handle)
		}
	}
	return hs
}

// assertKernelRuleset checks that banger's table in the kernel is exactly
// Ruleset(cfg, guests), both decoded and expression by expression.
func assertKernelRuleset(t *testing.T, cfg Config, guests ...netip.Addr) {
	t.Helper()
	want := mustRuleset(t, cfg, guests...)
	got := kernelRules(t, want.Name)
	if !got.exists || !got.inSync(want) {
		t.Fatalf("kernel table %+v\nwant\n%v", got, want)
	}
	raw := rawRules(t, want.Name)
	for _, c := range want.Chains {
		var wantRules []Rule
		for _, r := range want.Rules {
			if r.Chain == c.Name {
				wantRules = append(wantRules, r)
			}
		}
		if len(raw[c.Name]) != len(wantRules) {
			t.Fatalf("chain %s has %d rules, want %d", c.Name, len(raw[c.Name]), len(wantRules))
		}
		for i, r := range wantRules {
			if !reflect.DeepEqual(raw[c.Name][i].Exprs, r.exprs()) {
				t.Errorf("chain %s rule %d: kernel expressions\n%s\nwant (%v)\n%s", c.Name, i, dumpExprs(raw[c.Name][i].Exprs), r, dumpExprs(r.exprs()))
			}
		}
	}
}

func TestEnsureBridgeIdempotent(t *testing.T) {
	enterTestNetNS(t)
	cfg := Config{TapPoolSize: -1}
	h := newTestHost(t, cfg)

	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	before := rawRules(t, "banger")
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatalf("second EnsureBridge: %v", err)
	}
	if got := links(t); !reflect.DeepEqual(got, []string{"banger0"}) {
		t.Fatalf("links = %v, want just the bridge", got)
	}
	br, err := netlink.LinkByName("banger0")
	if err != nil {
		t.Fatal(err)
	}
	if br.Type() != "bridge" || br.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("banger0 is a %s with flags %v, want an up bridge", br.Type(), br.Attrs().Flags)
	}
	if got, want := br.Attrs().HardwareAddr.String(), MACFor("bridge/banger0"); got != want {
		t.Errorf("bridge MAC = %s, want the fixed %s", got, want)
	}
	addrs, err := netlink.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "172.16.0.1/24" {
		t.Errorf("bridge addresses = %v, want exactly 172.16.0.1/24", addrs)
	}
	if v := readSys(t, "net/ipv4/ip_forward"); v != "1" {
		t.Errorf("ip_forward = %s, want 1", v)
	}
	if v := readSys(t, "net/ipv6/conf/banger0/disable_ipv6"); v != "1" {
		t.Errorf("disable_ipv6 on the bridge = %s, want 1", v)
	}
	assertKernelRuleset(t, cfg)
	if after := rawRules(t, "banger"); !reflect.DeepEqual(handles(before), handles(after)) {
		t.Errorf("second EnsureBridge rewrote the rules: handles %v -> %v", handles(before), handles(after))
	}
	st, err := h.State(bg)
	if err != nil {
		t.Fatal(err)
	}
	want := State{Bridge: "banger0", BridgeExists: true, BridgeUp: true, BridgeAddrs: []netip.Prefix{netip.MustParsePrefix(DefaultCIDR)},
		Forwarding: true, Table: true, RulesInSync: true}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("State = %+v\nwant    %+v", st, want)
	}
}

func TestEnsureBridgeRepairs(t *testing.T) {
	enterTestNetNS(t)
	cfg := Config{TapPoolSize: -1}
	h := newTestHost(t, cfg)
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	if err := h.SetNAT(bg, []netip.Addr{guestA}); err != nil {
		t.Fatal(err)
	}
	// Damage: a stray address, another MAC, the bridge down, a rule deleted
	// and a foreign rule added in banger's table.
	br, _ := netlink.LinkByName("banger0")
	stray, _ := netlink.ParseAddr("10.1.2.3/8")
	if err := netlink.AddrAdd(br, stray); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetHardwareAddr(br, net.HardwareAddr{0x02, 0, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetDown(br); err != nil {
		t.Fatal(err)
	}
	conn, _ := nftables.New()
	tab := &nftables.Table{Name: "banger", Family: nftables.TableFamilyIPv4}
	fwd := &nftables.Chain{Name: ChainForward, Table: tab}
	raw := rawRules(t, "banger")
	if err := conn.DelRule(raw[ChainForward][2]); err != nil { // the drop rule
		t.Fatal(err)
	}
	conn.AddRule(&nftables.Rule{Table: tab, Chain: fwd, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.State(bg); st.RulesInSync || st.BridgeUp {
		t.Fatalf("State after damage = %+v, want rules out of sync and bridge down", st)
	}

	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	st, err := h.State(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !st.BridgeUp || !reflect.DeepEqual(st.BridgeAddrs, []netip.Prefix{netip.MustParsePrefix(DefaultCIDR)}) || !st.RulesInSync ||
		!reflect.DeepEqual(st.NATGuests, []netip.Addr{guestA}) {
		t.Fatalf("State after repair = %+v", st)
	}
	br, _ = netlink.LinkByName("banger0")
	if got, want := br.Attrs().HardwareAddr.String(), MACFor("bridge/banger0"); got != want {
		t.Errorf("bridge MAC = %s, want %s", got, want)
	}
	assertKernelRuleset(t, cfg, guestA) // NAT guests survive EnsureBridge
}

func TestEnsureBridgeRefusesNonBridge(t *testing.T) {
	enterTestNetNS(t)
	h := newTestHost(t, Config{Bridge: "vethx", TapPoolSize: -1})
	la := netlink.NewLinkAttrs()
	la.Name = "vethx"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "vethy"}); err != nil {
		t.Fatal(err)
	}
	if err := h.EnsureBridge(bg); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Fatalf("EnsureBridge over a veth: %v, want a 'not a bridge' error", err)
	}
	if err := h.Teardown(bg); err != nil {
		t.Fatal(err)
	}
	if got := links(t); !reflect.DeepEqual(got, []string{"vethx", "vethy"}) {
		t.Fatalf("links after Teardown = %v: Teardown must only delete a bridge", got)
	}
}

// openTap attaches to an existing tap the way QEMU does, giving it carrier.
func openTap(t *testing.T, name string) *os.File {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, _ := unix.NewIfreq(name)
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		t.Fatalf("attach to %s: %v", name, err)
	}
	return os.NewFile(uintptr(fd), name)
}

func TestAcquireTapWithoutBridge(t *testing.T) {
	enterTestNetNS(t)
	h := newTestHost(t, Config{})
	if name, err := h.AcquireTap(bg, tb()); !errors.Is(err, ErrNoBridge) {
		t.Fatalf("AcquireTap = %q, %v; want ErrNoBridge", name, err)
	}
	if got := links(t); len(got) != 0 {
		t.Fatalf("links = %v, want none", got)
	}
}

func TestTapPool(t *testing.T) {
	enterTestNetNS(t)
	h := newTestHost(t, Config{TapPoolSize: 2, TapOwner: 4242})
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	state := func() State {
		st, err := h.State(bg)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor(t, "the pool to fill", func() bool { return len(state().Pool) == 2 })
	if st := state(); !reflect.DeepEqual(st.Pool, []string{"bgtap0", "bgtap1"}) || len(st.InUse)+len(st.Unknown) != 0 {
		t.Fatalf("State after EnsureBridge = %+v", st)
	}

	br, _ := netlink.LinkByName("banger0")
	var got []string
	for range 3 {
		name, err := h.AcquireTap(bg, tb())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, name)
	}
	if u := slices.Compact(slices.Sorted(slices.Values(got))); len(u) != 3 {
		t.Fatalf("acquired %v, want 3 distinct taps", got)
	}
	all := taps(t)
	for _, name := range got {
		tt := all[name]
		switch {
		case tt == nil:
			t.Fatalf("acquired tap %s does not exist", name)
		case tt.MasterIndex != br.Attrs().Index:
			t.Errorf("%s is not attached to the bridge", name)
		case tt.Attrs().Flags&net.FlagUp == 0:
			t.Errorf("%s is not up", name)
		case tt.Mode != netlink.TUNTAP_MODE_TAP || tt.NonPersist:
			t.Errorf("%s: mode %v, non-persistent %v; want a persistent tap", name, tt.Mode, tt.NonPersist)
		case tt.Owner != 4242:
			t.Errorf("%s: owner %d, want 4242", name, tt.Owner)
		}
	}
	waitFor(t, "the pool to refill", func() bool { return len(state().Pool) == 2 })
	if st := state(); len(st.InUse) != 3 || len(taps(t)) != 5 {
		t.Fatalf("State = %+v with %d taps, want 3 in use + 2 pooled", st, len(taps(t)))
	}
	// The bridge keeps its MAC whatever ports join.
	br, _ = netlink.LinkByName("banger0")
	if br.Attrs().HardwareAddr.String() != MACFor("bridge/banger0") {
		t.Errorf("bridge MAC changed to %s when taps joined", br.Attrs().HardwareAddr)
	}

	// The pool is full: released taps are deleted, none beyond the pool stays.
	for _, name := range got {
		if err := h.ReleaseTap(bg, name); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(taps(t)); n != 2 {
		t.Fatalf("%d taps after releasing everything, want the 2 pooled", n)
	}
	if st := state(); len(st.Pool) != 2 || len(st.InUse)+len(st.Unknown)+len(st.Missing) != 0 {
		t.Fatalf("State after releases = %+v", st)
	}

	if err := h.Teardown(bg); err != nil {
		t.Fatal(err)
	}
	if got := links(t); len(got) != 0 {
		t.Fatalf("links after Teardown = %v, want none", got)
	}
	if st := state(); st.BridgeExists || st.Table || len(st.Pool)+len(st.InUse)+len(st.Unknown)+len(st.Missing) != 0 {
		t.Fatalf("State after Teardown = %+v", st)
	}
	if err := h.Teardown(bg); err != nil {
		t.Fatalf("second Teardown: %v", err)
	}
}

func TestReleaseTapBackToPool(t *testing.T) {
	enterTestNetNS(t)
	h := newTestHost(t, Config{TapPoolSize: 2, TapOwner: -1})
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	pauseRefill(h) // the pool holds whatever the refill made so far
	a, err := h.AcquireTap(bg, tb())
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.AcquireTap(bg, tb())
	if err != nil {
		t.Fatal(err)
	}
	c, err := h.AcquireTap(bg, tb())
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := h.State(bg); len(st.Pool) != 0 || len(st.InUse) != 3 {
		t.Fatalf("State = %+v, want an empty pool (refill paused) and 3 in use", st)
	}
	if tt := taps(t)[a]; tt.Owner != 0 {
		t.Errorf("tap with TapOwner -1 has owner %d, want none", tt.Owner)
	}

	// A tap that a VM left in a different state comes back clean.
	link, _ := netlink.LinkByName(a)
	addr, _ := netlink.ParseAddr("192.0.2.1/24")
	if err := netlink.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNoMaster(link); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		t.Fatal(err)
	}
	if err := h.ReleaseTap(bg, a); err != nil {
		t.Fatal(err)
	}
	link, _ = netlink.LinkByName(a)
	br, _ := netlink.LinkByName("banger0")
	v4, _ := netlink.AddrList(link, netlink.FAMILY_V4)
	if link.Attrs().MasterIndex != br.Attrs().Index || link.Attrs().Flags&net.FlagUp == 0 || len(v4) != 0 {
		t.Errorf("pooled tap not reset: master %d (bridge %d), flags %v, addresses %v", link.Attrs().MasterIndex, br.Attrs().Index, link.Attrs().Flags, v4)
	}

	// A tap still held open by a process is never pooled.
	f := openTap(t, b)
	defer f.Close()
	if link, _ := netlink.LinkByName(b); !hasCarrier(link) {
		t.Fatalf("%s has no carrier while open: the carrier test is wrong", b)
	}
	if err := h.ReleaseTap(bg, b); err != nil {
		t.Fatal(err)
	}
	if _, ok := taps(t)[b]; ok {
		t.Errorf("%s, still open, was kept", b)
	}

	if err := h.ReleaseTap(bg, c); err != nil {
		t.Fatal(err)
	}
	st, _ := h.State(bg)
	if !reflect.DeepEqual(st.Pool, []string{a, c}) || len(st.InUse) != 0 {
		t.Fatalf("State = %+v, want pool [%s %s]", st, a, c)
	}
	// Oldest first.
	if got, err := h.AcquireTap(bg, tb()); err != nil || got != a {
		t.Fatalf("AcquireTap = %q, %v; want the pooled %s", got, err, a)
	}
	// Releasing twice, or a tap that no longer exists, is fine.
	if err := h.ReleaseTap(bg, a); err != nil {
		t.Fatal(err)
	}
	if err := h.ReleaseTap(bg, a); err != nil {
		t.Fatal(err)
	}
	if err := h.ReleaseTap(bg, "bgtap77"); err != nil {
		t.Fatal(err)
	}
}

func TestReleaseTapRefusesOtherLinks(t *testing.T) {
	enterTestNetNS(t)
	h := newTestHost(t, Config{TapPoolSize: -1})
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = "bgtap5" // a tap's name on a veth
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "peer5"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"banger0", "lo", "peer5", "bgtap5", "bgtap05", "../x"} {
		if err := h.ReleaseTap(bg, name); !errors.Is(err, ErrNotTap) {
			t.Errorf("ReleaseTap(%q) = %v, want ErrNotTap", name, err)
		}
	}
	if got := links(t); !reflect.DeepEqual(got, []string{"banger0", "bgtap5", "peer5"}) {
		t.Fatalf("links = %v: ReleaseTap deleted something", got)
	}
	// Teardown deletes taps by prefix, but only taps.
	if err := h.Teardown(bg); err != nil {
		t.Fatal(err)
	}
	if got := links(t); !reflect.DeepEqual(got, []string{"bgtap5", "peer5"}) {
		t.Fatalf("links after Teardown = %v", got)
	}
}

func TestUnknownTapsReportedAndTornDown(t *testing.T) {
	enterTestNetNS(t)
	h := newTestHost(t, Config{TapPoolSize: -1})
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	// A tap left behind by an earlier process.
	if err := createTapDevice("bgtap9", -1); err != nil {
		t.Fatal(err)
	}
	a, err := h.AcquireTap(bg, tb())
	if err != nil {
		t.Fatal(err)
	}
	st, _ := h.State(bg)
	if !reflect.DeepEqual(st.Unknown, []string{"bgtap9"}) || !reflect.DeepEqual(st.InUse, []string{a}) {
		t.Fatalf("State = %+v, want bgtap9 unknown and %s in use", st, a)
	}
	// A tap deleted behind the Host's back is reported missing, and its
	// name is not handed out again while the Host still tracks it.
	link, _ := netlink.LinkByName(a)
	if err := netlink.LinkDel(link); err != nil {
		t.Fatal(err)
	}
	if st, _ := h.State(bg); !reflect.DeepEqual(st.Missing, []string{a}) {
		t.Fatalf("State = %+v, want %s missing", st, a)
	}
	if b, err := h.AcquireTap(bg, tb()); err != nil || b == a {
		t.Fatalf("AcquireTap = %q, %v; want a new name", b, err)
	}
	if err := h.Teardown(bg); err != nil {
		t.Fatal(err)
	}
	if got := links(t); len(got) != 0 {
		t.Fatalf("links after Teardown = %v", got)
	}
}

// foreignTables creates rules that are not banger's: a table "filter" with a
// base chain and a rule, and an inet table that is also called "banger".
// It returns a snapshot to compare with later.
func foreignTables(t *testing.T) func() string {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	filter := conn.AddTable(&nftables.Table{Name: "filter", Family: nftables.TableFamilyIPv4})
	in := conn.AddChain(&nftables.Chain{Name: "input", Table: filter, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	conn.AddRule(&nftables.Rule{Table: filter, Chain: in, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 22}},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}})
	inet := conn.AddTable(&nftables.Table{Name: "banger", Family: nftables.TableFamilyINet})
	other := conn.AddChain(&nftables.Chain{Name: "forward", Table: inet})
	conn.AddRule(&nftables.Rule{Table: inet, Chain: other, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		var b strings.Builder
		for _, tab := range []*nftables.Table{filter, inet} {
			for _, ch := range []*nftables.Chain{in, other} {
				if ch.Table != tab {
					continue
				}
				rules, err := conn.GetRules(tab, ch)
				if err != nil {
					return "error: " + err.Error()
				}
				for _, r := range rules {
					b.WriteString(tab.Name + "/" + ch.Name + ": " + dumpExprs(r.Exprs))
				}
			}
		}
		return b.String()
	}
	return snapshot
}

func TestSetNAT(t *testing.T) {
	enterTestNetNS(t)
	cfg := Config{TapPoolSize: -1}
	h := newTestHost(t, cfg)
	snapshot := foreignTables(t)
	before := snapshot()
	if !strings.Contains(before, "filter/input") || !strings.Contains(before, "banger/forward") {
		t.Fatalf("foreign rules not created: %s", before)
	}
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}

	if err := h.SetNAT(bg, []netip.Addr{guestA, guestB}); err != nil {
		t.Fatal(err)
	}
	assertKernelRuleset(t, cfg, guestA, guestB)

	if err := h.SetNAT(bg, []netip.Addr{guestA}); err != nil {
		t.Fatal(err)
	}
	assertKernelRuleset(t, cfg, guestA) // b's rules gone, nothing duplicated
	first := handles(rawRules(t, "banger"))
	if err := h.SetNAT(bg, []netip.Addr{guestA, guestA}); err != nil {
		t.Fatal(err)
	}
	assertKernelRuleset(t, cfg, guestA)
	if again := handles(rawRules(t, "banger")); !reflect.DeepEqual(first, again) {
		t.Errorf("SetNAT with the same set changed the rules: handles %v -> %v", first, again)
	}
	st, err := h.State(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Table || !st.RulesInSync || !reflect.DeepEqual(st.NATGuests, []netip.Addr{guestA}) {
		t.Errorf("State = %+v, want nat guests [a], rules in sync", st)
	}

	// Invalid input changes nothing.
	if err := h.SetNAT(bg, []netip.Addr{netip.MustParseAddr("10.0.0.5")}); err == nil {
		t.Error("SetNAT accepted an address outside the subnet")
	}
	assertKernelRuleset(t, cfg, guestA)

	if err := h.SetNAT(bg, nil); err != nil {
		t.Fatal(err)
	}
	assertKernelRuleset(t, cfg) // base chains and base rules only
	if k := kernelRules(t, "banger"); len(k.natGuests()) != 0 {
		t.Errorf("NAT guests left: %v", k.natGuests())
	}

	if err := h.Teardown(bg); err != nil {
		t.Fatal(err)
	}
	if k := kernelRules(t, "banger"); k.exists {
		t.Error("banger's table survived Teardown")
	}
	if after := snapshot(); after != before {
		t.Errorf("rules outside banger's table changed:\nbefore\n%s\nafter\n%s", before, after)
	}
}

// SetNAT without EnsureBridge creates the table by itself, and calls from
// goroutines on other threads (in the original namespace) still land in
// the Host's namespace.
func TestSetNATFromOtherGoroutines(t *testing.T) {
	enterTestNetNS(t)
	cfg := Config{TapPoolSize: -1}
	h := newTestHost(t, cfg)
	errc := make(chan error, 4)
	for _, g := range []netip.Addr{guestA, guestB, guestA, guestB} {
		go func() { errc <- h.SetNAT(bg, []netip.Addr{guestA, guestB, g}) }()
	}
	for range 4 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	assertKernelRuleset(t, cfg, guestA, guestB)
}

// ReadSourceRules describes banger's table as SetNAT left it, with the
// kernel's handles, and changes nothing.
func TestReadSourceRules(t *testing.T) {
	enterTestNetNS(t)
	cfg := Config{TapPoolSize: -1}.WithDefaults()
	if rules, err := ReadSourceRules(cfg.Table); err != nil || len(rules) != 0 {
		t.Fatalf("no table: %v, %v", rules, err)
	}
	h := newTestHost(t, cfg)
	if err := h.SetNAT(bg, []netip.Addr{guestA, guestB}); err != nil {
		t.Fatal(err)
	}
	before := handles(rawRules(t, cfg.Table))
	rules, err := ReadSourceRules(cfg.Table)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]bool{}
	for _, r := range rules {
		seen[r.Source] = true
		if !slices.Contains(before, r.Handle) || r.Chain == "" {
			t.Errorf("rule %+v: handle not in the kernel's %v, or no chain", r, before)
		}
	}
	if len(seen) != 2 || !seen[guestA] || !seen[guestB] {
		t.Errorf("sources %v, want a and b", seen)
	}
	if after := handles(rawRules(t, cfg.Table)); !reflect.DeepEqual(before, after) {
		t.Errorf("reading changed the rules: %v -> %v", before, after)
	}
}
