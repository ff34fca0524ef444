package vm

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"banger/internal/api"
	"banger/internal/egress/policy"
	"banger/internal/model"
	"banger/internal/network"
)

// Bad egress input is refused before anything is made: no row, no files,
// no tap.
func TestCreateRefusesBadEgressAndLeavesNothing(t *testing.T) {
	f := newFixture(t)
	fake := network.NewFake(network.Config{}.WithDefaults())
	f.m = f.newManager(WithNetworking(&Networking{Host: fake, Config: network.Config{}.WithDefaults()}))
	ctx := context.Background()
	cases := []api.VMCreateParams{
		{Name: "ok", Network: "bridge", Egress: &policy.Spec{Allow: []string{"exa mple.com"}}},
		{Name: "ok", Network: "bridge", Egress: &policy.Spec{Allow: []string{"*.*.example.com"}}},
		{Name: "ok", Network: "bridge", Egress: &policy.Spec{Allow: []string{"10.1.2.3/8"}}},
		{Name: "ok", Network: "bridge", Egress: &policy.Spec{Egress: "some"}},
		{Name: "ok", Network: "bridge", Egress: &policy.Spec{Egress: "none", Allow: []string{"example.com"}}},
		{Name: "ok", Network: "bridge", Egress: &policy.Spec{Egress: "all", Allow: []string{"example.com"}}},
		{Name: "ok", Network: "bridge", NAT: true, Egress: &policy.Spec{Egress: "allow", Allow: []string{"example.com"}}},
		{Name: "ok", Network: "bridge", Egress: &policy.Spec{Secrets: []policy.SecretSpec{{Name: "K"}}}},
		{Name: "ok", Network: "bridge", Egress: &policy.Spec{Secrets: []policy.SecretSpec{{Name: "../k", Hosts: []string{"a.test"}}}}},
		{Name: "ok", Network: "none", Egress: &policy.Spec{Egress: "all"}},
		{Name: "ok", Network: "user", Egress: &policy.Spec{Allow: []string{"example.com"}}},
	}
	for _, p := range cases {
		if _, err := f.create(ctx, p, nil); apiCode(err) != api.CodeBadRequest {
			t.Errorf("%+v (%+v): %v", p, p.Egress, err)
		}
	}
	if vms, _ := f.st.ListVMs(ctx); len(vms) != 0 {
		t.Errorf("rows left behind: %v", vms)
	}
	if entries, _ := os.ReadDir(filepath.Join(f.layout.State, "vms")); len(entries) != 0 {
		t.Errorf("files left behind: %v", entries)
	}
	for _, c := range fake.Calls() {
		if strings.HasPrefix(c, "AcquireTap") {
			t.Errorf("tap taken for a refused create: %v", fake.Calls())
		}
	}
}

// The policy is stored with the VM (mode made explicit, placeholders
// kept), --nat is egress all, and vm set changes it on a running VM:
// all <-> allow <-> none moves the VM in and out of the NAT set at once.
func TestEgressStoredAndChangedWhileRunning(t *testing.T) {
	f := newFixture(t)
	fake := network.NewFake(network.Config{}.WithDefaults())
	enf := &fakeEnforcer{}
	f.m = f.newManager(WithNetworking(&Networking{Host: fake, Config: network.Config{}.WithDefaults(), Egress: enf}))
	ctx := context.Background()

	nat, err := f.create(ctx, api.VMCreateParams{Name: "natbox", Network: "bridge", NAT: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if nat.Egress == nil || nat.Egress.Egress != "all" || !nat.NAT {
		t.Fatalf("--nat stored as %+v nat=%v", nat.Egress, nat.NAT)
	}
	spec := &policy.Spec{Allow: []string{"api.example.com:443", "*.example.org"},
		Secrets: []policy.SecretSpec{{Name: "MY_KEY", Hosts: []string{"api.example.com"}}}}
	vm, err := f.create(ctx, api.VMCreateParams{Name: "box", Network: "bridge", Egress: spec}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := f.m.Get(ctx, "box")
	if got.Egress == nil || got.Egress.Egress != "allow" || !slices.Equal(got.Egress.Allow, spec.Allow) || got.NAT {
		t.Fatalf("stored policy %+v nat=%v", got.Egress, got.NAT)
	}
	ph := got.EgressPlaceholders["MY_KEY"]
	if !strings.HasPrefix(ph, "banger-secret-") {
		t.Fatalf("placeholder %q", ph)
	}
	natGuests := func() []string {
		st, err := fake.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, g := range st.NATGuests {
			out = append(out, g.String())
		}
		return out
	}
	if g := natGuests(); !slices.Equal(g, []string{nat.IP}) {
		t.Fatalf("nat guests %v, want only %s", g, nat.IP)
	}
	// The allow VM is filtered: in the enforcer (DNS, proxy) and in the
	// firewall, with its address rules (none here: names only).
	if names := enf.names(); !slices.Equal(names, []string{"box"}) {
		t.Fatalf("enforced vms %v", names)
	}
	if e := fake.Egress(); e.ProxyPort != 3129 || len(e.Guests) != 1 || e.Guests[0].IP.String() != vm.IP {
		t.Fatalf("firewall egress %+v", e)
	}

	// allow -> all: NAT at once, no restart.
	if _, err := f.m.Set(ctx, "box", api.VMSetParams{Egress: &policy.Spec{Egress: "all"}}); err != nil {
		t.Fatal(err)
	}
	if g := natGuests(); !slices.Contains(g, vm.IP) {
		t.Errorf("after set --egress all: nat guests %v", g)
	}
	if names := enf.names(); len(names) != 0 || len(fake.Egress().Guests) != 0 {
		t.Errorf("after set --egress all: still filtered %v %+v", names, fake.Egress())
	}
	// all -> allow again: the secret keeps its placeholder (the guest's
	// environment stays valid).
	if _, err := f.m.Set(ctx, "box", api.VMSetParams{Egress: spec}); err != nil {
		t.Fatal(err)
	}
	got, _ = f.m.Get(ctx, "box")
	if g := natGuests(); slices.Contains(g, vm.IP) {
		t.Errorf("after set back to allow: still nat %v", g)
	}
	if got.State != "running" || got.EgressPlaceholders["MY_KEY"] == "" {
		t.Errorf("after set: %+v", got)
	}
	// Bad input on set: refused, nothing changed.
	if _, err := f.m.Set(ctx, "box", api.VMSetParams{Egress: &policy.Spec{Egress: "none", Allow: []string{"x.test"}}}); apiCode(err) != api.CodeBadRequest {
		t.Errorf("bad set: %v", err)
	}
	if again, _ := f.m.Get(ctx, "box"); again.Egress.Egress != "allow" || len(again.Egress.Allow) != 2 {
		t.Errorf("bad set changed the policy: %+v", again.Egress)
	}
	// Resources still need a stopped VM.
	if _, err := f.m.Set(ctx, "box", api.VMSetParams{VCPU: 2, Egress: spec}); apiCode(err) != api.CodeConflict {
		t.Errorf("resources while running: %v", err)
	}
	if _, err := f.m.Set(ctx, "natbox", api.VMSetParams{Egress: &policy.Spec{Egress: "none"}}); err != nil {
		t.Fatal(err)
	}
	if g := natGuests(); len(g) != 0 {
		t.Errorf("after natbox none: nat guests %v", g)
	}
}

type fakeEnforcer struct {
	mu   sync.Mutex
	last []EgressVM
}

func (e *fakeEnforcer) ProxyPort() uint16 { return 3129 }

func (e *fakeEnforcer) CACert() []byte { return nil }

func (e *fakeEnforcer) Apply(ctx context.Context, vms []EgressVM) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.last = vms
	return nil
}

func (e *fakeEnforcer) names() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, v := range e.last {
		out = append(out, v.Name)
	}
	return out
}

func TestNetAllows(t *testing.T) {
	pol, err := policy.Build(policy.Spec{Allow: []string{"10.0.0.0/8", "192.0.2.7:5432", "192.0.2.8:53/udp", "[2001:db8::/32]:443"}})
	if err != nil {
		t.Fatal(err)
	}
	got := netAllows(pol)
	want := []network.NetAllow{
		{Net: netip.MustParsePrefix("10.0.0.0/8")},
		{Net: netip.MustParsePrefix("192.0.2.7/32"), Proto: "tcp", Port: 5432},
		{Net: netip.MustParsePrefix("192.0.2.7/32"), Proto: "udp", Port: 5432},
		{Net: netip.MustParsePrefix("192.0.2.8/32"), Proto: "udp", Port: 53},
	}
	if !slices.Equal(got, want) {
		t.Errorf("netAllows = %v, want %v", got, want)
	}
	if _, err := network.EgressRuleset(network.Config{}, nil, network.Egress{ProxyPort: 1,
		Guests: []network.GuestEgress{{IP: netip.MustParseAddr("172.16.0.2"), Allow: got}}}); err != nil {
		t.Errorf("firewall refuses them: %v", err)
	}
}

// A VM's secrets reach the guest's commands as placeholders only.
func TestEgressEnvIsPlaceholders(t *testing.T) {
	vm := &model.VM{Network: NetBridge}
	if _, err := setEgress(vm, &policy.Spec{Secrets: []policy.SecretSpec{
		{Name: "MY_KEY", Hosts: []string{"api.test"}}, {Name: "other", Env: "OTHER_TOKEN", Hosts: []string{"*.x.test"}}}}, false); err != nil {
		t.Fatal(err)
	}
	env := egressEnv(vm)
	if len(env) != 6 || !strings.HasPrefix(env[1], "MY_KEY=banger-secret-") || !strings.HasPrefix(env[3], "OTHER_TOKEN=banger-secret-") {
		t.Fatalf("env %v", env)
	}
	if again := egressEnv(vm); !slices.Equal(env, again) {
		t.Errorf("placeholders not stable: %v vs %v", env, again)
	}
}
