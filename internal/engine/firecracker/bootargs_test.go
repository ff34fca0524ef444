package firecracker

import (
	"strings"
	"testing"

	"banger/internal/engine"
)

func TestBootArgs(t *testing.T) {
	all := strings.Join(BootParams, " ")
	cases := []struct {
		name, cmdline, want string
	}{
		{"empty", "", all},
		{"caller first", "quiet banger.name=dev", "quiet banger.name=dev " + all},
		{"caller's console wins", "console=hvc0 quiet", "console=hvc0 quiet reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"},
		{"caller's panic wins", "panic=-1", "panic=-1 console=ttyS0 reboot=k pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"},
		{"flag already there", "i8042.noaux reboot=t", "i8042.noaux reboot=t console=ttyS0 panic=1 pci=off i8042.nomux i8042.nopnp i8042.dumbkbd"},
		{"prefix is not the key", "consoleblank=0 pci=on", "consoleblank=0 pci=on console=ttyS0 reboot=k panic=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"},
		{"whitespace normalised", "  a \t b  ", "a b " + all},
	}
	for _, c := range cases {
		if got := BootArgs(engine.Spec{Cmdline: c.cmdline}); got != c.want {
			t.Errorf("%s: BootArgs(%q) =\n %q\nwant\n %q", c.name, c.cmdline, got, c.want)
		}
	}
}

func TestCheckBootArgs(t *testing.T) {
	spec := engine.Spec{RootDisk: "/r", WorkDisk: "/w", VsockSocket: "/v", NICs: []engine.NIC{{Tap: "t0"}}}
	limit := maxCmdline - 4*cmdlinePerDevice
	if err := checkBootArgs(strings.Repeat("x", limit), spec); err != nil {
		t.Errorf("at the limit: %v", err)
	}
	err := checkBootArgs(strings.Repeat("x", limit+1), spec)
	if err == nil || !strings.Contains(err.Error(), "with 4 devices") {
		t.Errorf("over the limit: %v", err)
	}
}
