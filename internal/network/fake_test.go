package network

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func TestFake(t *testing.T) {
	ctx := context.Background()
	f := NewFake(Config{TapPoolSize: 1})

	if _, err := f.AcquireTap(ctx, tb()); !errors.Is(err, ErrNoBridge) {
		t.Fatalf("AcquireTap before EnsureBridge: %v, want ErrNoBridge", err)
	}
	if err := f.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	a, _ := f.AcquireTap(ctx, tb()) // from the pool (bgtap0), pool refilled with bgtap1
	bindB := Binding{MAC: "02:00:00:00:00:0B", IP: guestB}
	b, _ := f.AcquireTap(ctx, bindB) // bgtap1, pool refilled with bgtap2
	if _, err := f.AcquireTap(ctx, Binding{MAC: "01:00:00:00:00:01", IP: guestA}); err == nil {
		t.Fatal("AcquireTap accepted a multicast MAC")
	}
	if a != "bgtap0" || b != "bgtap1" {
		t.Fatalf("acquired %q, %q; want bgtap0, bgtap1", a, b)
	}
	if err := f.SetNAT(ctx, []netip.Addr{guestB, guestA}); err != nil {
		t.Fatal(err)
	}
	if err := f.SetNAT(ctx, []netip.Addr{netip.MustParseAddr("10.0.0.2")}); err == nil {
		t.Fatal("SetNAT accepted an address outside the subnet")
	}
	if err := f.ReleaseTap(ctx, "banger0"); !errors.Is(err, ErrNotTap) {
		t.Fatalf("ReleaseTap(banger0): %v, want ErrNotTap", err)
	}
	if err := f.ReleaseTap(ctx, a); err != nil { // pool is full: deleted
		t.Fatal(err)
	}
	st, err := f.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := State{Bridge: "banger0", BridgeExists: true, BridgeUp: true, BridgeAddrs: []netip.Prefix{netip.MustParsePrefix(DefaultCIDR)},
		Forwarding: true, Pool: []string{"bgtap2"}, InUse: []string{"bgtap1"}, Table: true,
		Bindings:  map[string]Binding{"bgtap1": {MAC: "02:00:00:00:00:0b", IP: guestB}},
		NATGuests: []netip.Addr{guestA, guestB}, RulesInSync: true}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("State = %+v\nwant    %+v", st, want)
	}

	boom := errors.New("boom")
	f.Fail("Teardown", boom)
	if err := f.Teardown(ctx); !errors.Is(err, boom) {
		t.Fatalf("Teardown with injected error: %v", err)
	}
	if err := f.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.State(ctx); st.BridgeExists || len(st.Pool)+len(st.InUse)+len(st.NATGuests) != 0 {
		t.Fatalf("State after Teardown = %+v", st)
	}
	wantCalls := []string{
		`AcquireTap =  error: acquire tap: bridge does not exist: "banger0"`,
		"EnsureBridge",
		"AcquireTap = bgtap0",
		"AcquireTap = bgtap1",
		"AcquireTap =  error: acquire tap: binding: mac 01:00:00:00:00:01 is not a unicast address",
		"SetNAT [172.16.0.3 172.16.0.2]",
		"SetNAT [10.0.0.2] error: set nat: ruleset: nat guest 10.0.0.2 is not a guest address of 172.16.0.0/24",
		`ReleaseTap banger0 error: release tap "banger0": not a banger tap`,
		"ReleaseTap bgtap0",
		"State",
		"Teardown error: boom",
		"Teardown",
		"State",
	}
	if got := f.Calls(); !reflect.DeepEqual(got, wantCalls) {
		t.Fatalf("Calls =\n%q\nwant\n%q", got, wantCalls)
	}
}
