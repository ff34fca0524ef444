package network

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/vishvananda/netlink"
)

// AcquireTap cannot be made to create taps without bound: at most
// maxPendingTaps handed out and not opened by anyone, at most MaxTaps in
// all; a refused call creates nothing.
func TestTapLimits(t *testing.T) {
	enterTestNetNS(t)
	h := newTestHost(t, Config{TapPoolSize: -1})
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 0; i < maxPendingTaps; i++ {
		name, err := h.AcquireTap(bg, tb())
		if err != nil {
			t.Fatalf("AcquireTap %d: %v", i, err)
		}
		got = append(got, name)
	}
	if name, err := h.AcquireTap(bg, tb()); !errors.Is(err, ErrTapLimit) {
		t.Fatalf("AcquireTap beyond %d pending taps = %q, %v; want ErrTapLimit", maxPendingTaps, name, err)
	}
	if n := len(taps(t)); n != maxPendingTaps {
		t.Fatalf("%d taps exist after the refusal, want %d", n, maxPendingTaps)
	}
	// A VMM opening one of them makes room for one more.
	f := openTap(t, got[0])
	defer f.Close()
	waitFor(t, "carrier", func() bool {
		l, err := netlink.LinkByName(got[0])
		return err == nil && hasCarrier(l)
	})
	if _, err := h.AcquireTap(bg, tb()); err != nil {
		t.Fatalf("AcquireTap after a VMM opened a tap: %v", err)
	}

	// The hard maximum counts every tap of banger's, pooled ones too.
	enterTestNetNS(t)
	h = newTestHost(t, Config{TapPoolSize: -1, MaxTaps: 3})
	if err := h.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := h.AcquireTap(bg, tb()); err != nil {
			t.Fatalf("AcquireTap %d: %v", i, err)
		}
	}
	if name, err := h.AcquireTap(bg, tb()); !errors.Is(err, ErrTapLimit) {
		t.Fatalf("AcquireTap beyond MaxTaps = %q, %v; want ErrTapLimit", name, err)
	}
	if n := len(taps(t)); n != 3 {
		t.Fatalf("%d taps exist, want 3", n)
	}
}

// EnsureBridge records ip_forward before turning it on; Teardown restores
// it and removes the record. A value of 1 before stays 1.
func TestForwardingRestored(t *testing.T) {
	for _, before := range []string{"0", "1"} {
		enterTestNetNS(t)
		if err := writeSysctlIfExists("net/ipv4/ip_forward", before); err != nil {
			t.Fatal(err)
		}
		rec := filepath.Join(t.TempDir(), "run", "ip_forward")
		h := newTestHost(t, Config{TapPoolSize: -1, ForwardRecord: rec})
		if err := h.EnsureBridge(bg); err != nil {
			t.Fatal(err)
		}
		if v := readSys(t, "net/ipv4/ip_forward"); v != "1" {
			t.Fatalf("ip_forward = %s after EnsureBridge", v)
		}
		if b, err := os.ReadFile(rec); err != nil || string(b) != before+"\n" {
			t.Fatalf("record = %q, %v; want %q", b, err, before)
		}
		// A second EnsureBridge keeps the first record.
		if err := h.EnsureBridge(bg); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(rec); string(b) != before+"\n" {
			t.Fatalf("record = %q after a second EnsureBridge", b)
		}
		// Teardown from another Host (as `system uninstall` does).
		if err := newTestHost(t, Config{ForwardRecord: rec}).Teardown(bg); err != nil {
			t.Fatal(err)
		}
		if v := readSys(t, "net/ipv4/ip_forward"); v != before {
			t.Errorf("ip_forward = %s after Teardown, want %s", v, before)
		}
		if _, err := os.Stat(rec); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("record left after Teardown: %v", err)
		}
	}
}

// A restarted helper (a new Host) keeps the bindings of the taps running
// VMs hold: it reads them back from the kernel instead of muting the taps,
// and releasing such a tap removes its binding.
func TestBindingsSurviveANewHost(t *testing.T) {
	enterTestNetNS(t)
	cfg := Config{TapPoolSize: -1}
	h1 := newTestHost(t, cfg)
	if err := h1.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	a := Binding{MAC: "02:00:00:00:00:0a", IP: guestA}
	tapA, err := h1.AcquireTap(bg, a)
	if err != nil {
		t.Fatal(err)
	}
	h2 := newTestHost(t, cfg)
	if err := h2.EnsureBridge(bg); err != nil {
		t.Fatal(err)
	}
	b := Binding{MAC: "02:00:00:00:00:0b", IP: guestB}
	tapB, err := h2.AcquireTap(bg, b)
	if err != nil {
		t.Fatal(err)
	}
	st, err := h2.State(bg)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]Binding{tapA: a, tapB: b}; !reflect.DeepEqual(st.Bindings, want) || !st.RulesInSync {
		t.Fatalf("State after a new Host = %+v, want bindings %v in sync", st, want)
	}
	if err := h2.ReleaseTap(bg, tapA); err != nil {
		t.Fatal(err)
	}
	if st, _ := h2.State(bg); !reflect.DeepEqual(st.Bindings, map[string]Binding{tapB: b}) || !st.RulesInSync {
		t.Fatalf("State after releasing %s = %+v", tapA, st)
	}
}
