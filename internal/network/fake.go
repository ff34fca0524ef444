package network

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// Fake is an in-memory Host for other packages' unit tests. It records every
// call, simulates the tap pool (refilled synchronously, names allocated like
// the real Host's), validates arguments like the real Host, and reports a
// State consistent with the calls so far. Errors can be injected with Fail.
// It is safe for concurrent use.
type Fake struct {
	mu         sync.Mutex
	cfg        Config
	calls      []string
	fail       map[string]error
	bridge     bool
	forwarding bool
	table      bool
	pool       []string
	inUse      map[string]bool
	bindings   map[string]Binding
	nat        []netip.Addr
	egress     Egress
}

var _ Host = (*Fake)(nil)

// NewFake returns a Fake for cfg (defaults applied). It panics on an invalid
// configuration, which is a bug in the test.
func NewFake(cfg Config) *Fake {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("network.NewFake: %v", err))
	}
	return &Fake{cfg: cfg, fail: map[string]error{}, inUse: map[string]bool{}, bindings: map[string]Binding{}}
}

// Calls returns the calls so far, one string each, e.g. "EnsureBridge",
// "AcquireTap = bgtap0", "ReleaseTap bgtap0", "SetNAT [172.16.0.2]", "State",
// "Teardown"; a failed call ends with " error: " and the error.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Fail makes the next call of method (e.g. "AcquireTap") fail with err,
// without any effect. A nil err cancels the injection.
func (f *Fake) Fail(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, method)
		return
	}
	f.fail[method] = err
}

// begin records a call and returns the injected or context error, if any.
// f.mu must be held.
func (f *Fake) begin(ctx context.Context, method string) error {
	if err := f.fail[method]; err != nil {
		delete(f.fail, method)
		return err
	}
	return ctx.Err()
}

// record appends a call line. f.mu must be held.
func (f *Fake) record(line string, err error) {
	if err != nil {
		line += " error: " + err.Error()
	}
	f.calls = append(f.calls, line)
}

// EnsureBridge implements Host.
func (f *Fake) EnsureBridge(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(ctx, "EnsureBridge")
	if err == nil {
		f.bridge, f.forwarding, f.table = true, true, true
		f.refill()
	}
	f.record("EnsureBridge", err)
	return err
}

// AcquireTap implements Host.
func (f *Fake) AcquireTap(ctx context.Context, b Binding) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name, err := "", f.begin(ctx, "AcquireTap")
	if err == nil {
		sub, _ := newSubnet(f.cfg.CIDR) // checked by NewFake
		if b, err = b.normalise(sub); err != nil {
			err = fmt.Errorf("acquire tap: %w", err)
		}
	}
	switch {
	case err != nil:
	case !f.bridge:
		err = fmt.Errorf("acquire tap: %w: %q", ErrNoBridge, f.cfg.Bridge)
	case len(f.inUse) >= maxPendingTaps:
		// The Fake's taps are never opened: every one in use is pending.
		err = fmt.Errorf("acquire tap: %w: %d taps handed out", ErrTapLimit, len(f.inUse))
	case len(f.pool) > 0:
		name, f.pool = f.pool[0], f.pool[1:]
	default:
		name = f.newTap()
	}
	if err == nil {
		f.inUse[name] = true
		for t, o := range f.bindings {
			if o.IP == b.IP {
				delete(f.bindings, t)
			}
		}
		f.bindings[name] = b
		f.refill()
	}
	f.record("AcquireTap = "+name, err)
	return name, err
}

// ReleaseTap implements Host.
func (f *Fake) ReleaseTap(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(ctx, "ReleaseTap")
	if _, ok := tapIndex(f.cfg.TapPrefix, name); err == nil && !ok {
		err = fmt.Errorf("release tap %q: %w", name, ErrNotTap)
	}
	if err == nil {
		delete(f.bindings, name)
	}
	if err == nil && f.inUse[name] {
		delete(f.inUse, name)
		if len(f.pool) < f.cfg.TapPoolSize && f.bridge {
			f.pool = append(f.pool, name)
		}
	}
	f.record("ReleaseTap "+name, err)
	return err
}

// SetNAT implements Host.
func (f *Fake) SetNAT(ctx context.Context, guests []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(ctx, "SetNAT")
	var t Table
	if err == nil {
		t, err = EgressRuleset(f.cfg, guests, f.egress)
		if err != nil {
			err = fmt.Errorf("set nat: %w", err)
		}
	}
	if err == nil {
		f.nat, f.table = t.NATGuests(), true
	}
	f.record(fmt.Sprintf("SetNAT %v", guests), err)
	return err
}

// SetEgress implements Host.
func (f *Fake) SetEgress(ctx context.Context, nat []netip.Addr, eg Egress) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(ctx, "SetEgress")
	var t Table
	if err == nil {
		t, err = EgressRuleset(f.cfg, nat, eg)
		if err != nil {
			err = fmt.Errorf("set egress: %w", err)
		}
	}
	if err == nil {
		f.nat, f.egress, f.table = t.NATGuests(), eg, true
	}
	var filtered []string
	for _, g := range eg.Guests {
		filtered = append(filtered, g.IP.String())
	}
	f.record(fmt.Sprintf("SetEgress %v %v", nat, filtered), err)
	return err
}

// Egress returns the filtered egress last set.
func (f *Fake) Egress() Egress {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.egress
}

// State implements Host.
func (f *Fake) State(ctx context.Context) (State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(ctx, "State")
	f.record("State", err)
	if err != nil {
		return State{}, err
	}
	st := State{
		Bridge:       f.cfg.Bridge,
		BridgeExists: f.bridge,
		BridgeUp:     f.bridge,
		Forwarding:   f.forwarding,
		Pool:         slices.Clone(f.pool),
		Table:        f.table,
		NATGuests:    slices.Clone(f.nat),
		RulesInSync:  f.table,
	}
	if len(f.bindings) > 0 {
		st.Bindings = maps.Clone(f.bindings)
	}
	if f.bridge {
		st.BridgeAddrs = []netip.Prefix{f.cfg.CIDR}
	}
	for name := range f.inUse {
		st.InUse = append(st.InUse, name)
	}
	sortTaps(f.cfg.TapPrefix, st.Pool)
	sortTaps(f.cfg.TapPrefix, st.InUse)
	return st, nil
}

// Teardown implements Host.
func (f *Fake) Teardown(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.begin(ctx, "Teardown")
	if err == nil {
		f.bridge, f.table = false, false
		f.pool, f.nat = nil, nil
		clear(f.inUse)
		clear(f.bindings)
	}
	f.record("Teardown", err)
	return err
}

// refill tops the pool up. f.mu must be held.
func (f *Fake) refill() {
	for f.bridge && len(f.pool) < f.cfg.TapPoolSize {
		f.pool = append(f.pool, f.newTap())
	}
}

// newTap returns the lowest tap name not pooled nor in use. f.mu must be held.
func (f *Fake) newTap() string {
	for i := 0; ; i++ {
		name := tapName(f.cfg.TapPrefix, i)
		if !f.inUse[name] && !slices.Contains(f.pool, name) {
			return name
		}
	}
}
