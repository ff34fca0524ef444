package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestResolveAccel(t *testing.T) {
	works := func(context.Context) (bool, string, error) { return true, "booted in 0.4s", nil }
	broken := func(context.Context) (bool, string, error) {
		return false, "qemu under kvm: KVM internal error. Suberror: 1\nemulation failure", nil
	}
	failing := func(context.Context) (bool, string, error) { return false, "", errors.New("exec: qemu not found") }

	cases := []struct {
		name        string
		want        string
		probe       KVMProbe
		accel       string
		warnContain string // "" means no warning expected
		errContain  string // "" means success expected
	}{
		{"tcg never probes", "tcg", nil, "tcg", "", ""},
		{"kvm usable", "kvm", works, "kvm", "", ""},
		{"kvm unusable", "kvm", broken, "", "", "cannot boot a guest here: qemu under kvm: KVM internal error. Suberror: 1 emulation failure"},
		{"kvm probe error", "kvm", failing, "", "", "probing it failed: exec: qemu not found"},
		{"auto usable", "auto", works, "kvm", "", ""},
		{"empty means auto", "", works, "kvm", "", ""},
		{"auto falls back", "auto", broken, "tcg", "KVM is not usable (qemu under kvm: KVM internal error. Suberror: 1 emulation failure); falling back to TCG", ""},
		{"auto falls back on probe error", "auto", failing, "tcg", "probe failed: exec: qemu not found", ""},
		{"auto without probe", "auto", nil, "", "", "no kvm probe"},
		{"unknown", "hvf", works, "", "", `unknown accelerator "hvf"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			probed := false
			probe := c.probe
			if probe != nil {
				inner := probe
				probe = func(ctx context.Context) (bool, string, error) { probed = true; return inner(ctx) }
			}
			accel, warn, err := ResolveAccel(context.Background(), c.want, probe)
			if c.errContain != "" {
				if err == nil || !strings.Contains(err.Error(), c.errContain) {
					t.Fatalf("err = %v, want it to contain %q", err, c.errContain)
				}
				if accel != "" {
					t.Errorf("accel = %q on error", accel)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if accel != c.accel {
				t.Errorf("accel = %q, want %q", accel, c.accel)
			}
			if c.warnContain == "" && warn != "" {
				t.Errorf("unexpected warning %q", warn)
			}
			if c.warnContain != "" && !strings.Contains(warn, c.warnContain) {
				t.Errorf("warning = %q, want it to contain %q", warn, c.warnContain)
			}
			if strings.Contains(warn, "\n") {
				t.Errorf("warning spans lines: %q", warn)
			}
			if c.want == "tcg" && probed {
				t.Error("tcg probed kvm")
			}
		})
	}
}

func TestResolveAccelCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	probe := func(ctx context.Context) (bool, string, error) {
		cancel()
		return false, "", ctx.Err()
	}
	if _, _, err := ResolveAccel(ctx, "auto", probe); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled (a cancelled probe must not fall back)", err)
	}
}
