package engine

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
)

type stubDriver struct{ name string }

func (d stubDriver) Name() string               { return d.name }
func (d stubDriver) Traits() Traits             { return Traits{} }
func (d stubDriver) Layout(s Spec, _ Dirs) Spec { return s }
func (d stubDriver) DialAgent(context.Context, Spec) (net.Conn, error) {
	return nil, errors.New("no agent")
}
func (d stubDriver) PrepareRootDisk(context.Context, string, Dirs) (string, error) {
	return "", nil
}
func (d stubDriver) Start(context.Context, Spec) (Instance, error) { return nil, ErrNotRunning }
func (d stubDriver) Adopt(context.Context, Spec) (Instance, error) { return nil, ErrNotRunning }

type cleaningDriver struct{ stubDriver }

func (cleaningDriver) Cleanup(Spec) error { return nil }

func TestRegistry(t *testing.T) {
	r, err := NewRegistry(stubDriver{"a"}, cleaningDriver{stubDriver{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("names %v", got)
	}
	for _, name := range []string{"", Auto, "a"} {
		if e, err := r.Lookup(name); err != nil || e.Name() != "a" || e != r.Default() {
			t.Errorf("lookup %q: %v %v", name, e, err)
		}
	}
	b, err := r.Lookup("b")
	if err != nil || b.Cleaner == nil || b.CtrlAltDel != nil || b.Checker != nil {
		t.Errorf("capabilities of b: %+v %v", b, err)
	}
	if a, _ := r.Lookup("a"); a.Cleaner != nil {
		t.Errorf("a has a cleaner")
	}
	if _, err := r.Lookup("c"); !errors.Is(err, ErrUnknown) {
		t.Errorf("unknown engine: %v", err)
	}
	for _, bad := range [][]Driver{nil, {stubDriver{"a"}, stubDriver{"a"}}, {stubDriver{""}}, {stubDriver{Auto}}} {
		if _, err := NewRegistry(bad...); err == nil {
			t.Errorf("registry of %v accepted", bad)
		}
	}
}

func TestChoices(t *testing.T) {
	for _, ok := range []string{Auto, QEMU, Firecracker} {
		if err := ValidChoice(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	if ValidChoice("") == nil {
		t.Error("empty choice accepted")
	}
	err := ValidChoice("xen")
	if err == nil || err.Error() != `must be auto, qemu or firecracker, got "xen"` {
		t.Errorf("xen: %v", err)
	}
	if h := Help(); h != "auto (qemu), qemu or firecracker" {
		t.Errorf("help %q", h)
	}
}
