package privhelper

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"banger/internal/network"
)

var (
	guestA = netip.MustParseAddr("172.16.0.2")
	guestB = netip.MustParseAddr("172.16.0.3")
)

// TestClientRoundTrip: every Host operation goes through the helper to the
// Fake and back, results and errors included.
func TestClientRoundTrip(t *testing.T) {
	ts, fake := fakeServer(t)
	c := ts.client
	ctx := context.Background()

	if _, err := c.AcquireTap(ctx, tb()); !errors.Is(err, network.ErrNoBridge) {
		t.Fatalf("AcquireTap before EnsureBridge: %v, want ErrNoBridge", err)
	}
	if err := c.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := c.AcquireTap(ctx, tb())
	if err != nil || a != "bgtap0" {
		t.Fatalf("AcquireTap = %q, %v", a, err)
	}
	b, err := c.AcquireTap(ctx, tb())
	if err != nil || b != "bgtap1" {
		t.Fatalf("AcquireTap = %q, %v", b, err)
	}
	if err := c.SetNAT(ctx, []netip.Addr{guestB, guestA}); err != nil {
		t.Fatal(err)
	}
	if err := c.ReleaseTap(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, err := c.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := fake.State(ctx)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("State through the helper =\n%+v\nwant\n%+v", got, want)
	}
	if err := c.SetNAT(ctx, nil); err != nil { // clears NAT: an empty list, not a missing one
		t.Fatal(err)
	}

	// Host errors come back as errors, with their message.
	boom := errors.New("boom: netlink said no")
	fake.Fail("EnsureBridge", boom)
	err = c.EnsureBridge(ctx)
	var he *Error
	if !errors.As(err, &he) || he.Code != CodeFailed || he.Op != OpEnsureBridge || !strings.Contains(err.Error(), "netlink said no") {
		t.Fatalf("EnsureBridge with an injected failure: %v", err)
	}

	wantCalls := []string{
		"AcquireTap =  error: acquire tap: bridge does not exist: \"banger0\"",
		"EnsureBridge",
		"AcquireTap = bgtap0",
		"AcquireTap = bgtap1",
		"SetNAT [172.16.0.3 172.16.0.2]",
		"ReleaseTap bgtap0",
		"State",
		"State", // the test's own
		"SetNAT []",
		"EnsureBridge error: boom: netlink said no",
	}
	if calls := fake.Calls(); !reflect.DeepEqual(calls, wantCalls) {
		t.Fatalf("calls =\n%q\nwant\n%q", calls, wantCalls)
	}
}

// TestClientConfig: the helper reports its network configuration, which
// the daemon adopts.
func TestClientConfig(t *testing.T) {
	cfg := network.Config{Bridge: "br-test", CIDR: netip.MustParsePrefix("10.20.30.1/24"), TapPrefix: "vt", TapPoolSize: -1, TapOwner: 1234, Table: "bt",
		IsolateGuests: true, MaxTaps: 300, ForwardRecord: "/run/banger/ip_forward"}
	ts := startServer(t, "", Options{Host: network.NewFake(cfg), Config: cfg, AllowUID: os.Getuid()})
	got, err := ts.client.Config(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Fatalf("Config = %+v, want %+v", got, cfg)
	}
	if !reflect.DeepEqual(got.WithDefaults(), cfg.WithDefaults()) {
		t.Fatalf("Config with defaults = %+v, want %+v", got.WithDefaults(), cfg.WithDefaults())
	}
}

// TestClientReleaseAfterCancel: ReleaseTap, a cleanup path, is sent even
// with a cancelled context, as network.Host requires.
func TestClientReleaseAfterCancel(t *testing.T) {
	ts, fake := fakeServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ts.client.ReleaseTap(ctx, "bgtap7"); err != nil {
		t.Fatal(err)
	}
	if err := ts.client.EnsureBridge(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("EnsureBridge with a cancelled context: %v", err)
	}
	if calls := fake.Calls(); !reflect.DeepEqual(calls, []string{"ReleaseTap bgtap7"}) {
		t.Fatalf("calls = %v", calls)
	}
}

// TestClientNoHelper: a missing helper is a prompt, explained error.
func TestClientNoHelper(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Config(ctx)
	if err == nil || !strings.Contains(err.Error(), "is banger-helper running?") {
		t.Fatalf("Config without a helper: %v", err)
	}
	if NewClient("").Socket() != DefaultSocket {
		t.Fatal("NewClient(\"\") does not use DefaultSocket")
	}
}

// TestWireStateCarriesEveryField: a State with every field set survives the
// wire; a field added to network.State without its wire twin fails here.
func TestWireStateCarriesEveryField(t *testing.T) {
	st := network.State{
		Bridge: "b", BridgeExists: true, BridgeUp: true, BridgeAddrs: []netip.Prefix{netip.MustParsePrefix("172.16.0.1/24")},
		Forwarding: true, Pool: []string{"bgtap1"}, InUse: []string{"bgtap0"}, Unknown: []string{"bgtap5"}, Missing: []string{"bgtap9"},
		PoolError: "e", Table: true, NATGuests: []netip.Addr{guestA}, RulesInSync: true,
		Bindings: map[string]network.Binding{"bgtap0": {MAC: "02:00:00:00:00:01", IP: guestA}},
	}
	v := reflect.ValueOf(st)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("test data leaves State.%s unset", v.Type().Field(i).Name)
		}
	}
	if got := toWireState(st).state(); !reflect.DeepEqual(got, st) {
		t.Fatalf("round trip = %+v, want %+v", got, st)
	}
	if n, m := reflect.TypeOf(wireState{}).NumField(), v.NumField(); n != m {
		t.Fatalf("wireState has %d fields, network.State %d", n, m)
	}
	if n, m := reflect.TypeOf(wireConfig{}).NumField(), reflect.TypeOf(network.Config{}).NumField(); n != m {
		t.Fatalf("wireConfig has %d fields, network.Config %d", n, m)
	}
}

// TestClientTapLimit: the helper's tap limits reach the daemon as
// network.ErrTapLimit, and a refused acquire_tap creates no tap.
func TestClientTapLimit(t *testing.T) {
	ts, fake := fakeServer(t)
	ctx := context.Background()
	if err := ts.client.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	for ; n < 100; n++ {
		if _, err := ts.client.AcquireTap(ctx, tb()); err != nil {
			if !errors.Is(err, network.ErrTapLimit) {
				t.Fatalf("AcquireTap %d: %v, want ErrTapLimit", n, err)
			}
			break
		}
	}
	if n == 100 {
		t.Fatal("the helper handed out 100 taps that no VMM opened")
	}
	st, err := fake.State(ctx)
	if err != nil || len(st.InUse) != n {
		t.Fatalf("State = %+v, %v; want %d taps in use", st, err, n)
	}
}
