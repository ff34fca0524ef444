package firecracker

import (
	"fmt"
	"strings"

	"banger/internal/engine"
)

// BootParams are the kernel parameters BootArgs adds for a Firecracker
// guest, in order, each only when the caller's command line does not set
// that parameter already:
//
//   - console=ttyS0: Firecracker emulates one 16550 UART, which is the
//     guest's ttyS0; its output goes to Spec.SerialLog (PUT /serial) or
//     else to Firecracker's stdout, the VMM log.
//   - reboot=k: reboot through the keyboard controller. Firecracker has no
//     guest reboot: it traps the i8042 reset command and exits, so a guest
//     "reboot" ends the VMM and shows up as Done. (A guest "poweroff" is
//     not guaranteed to: without a power-off device the kernel only halts
//     the vCPUs. A clean stop therefore syncs and reboots.)
//   - panic=1: a panicked kernel reboots after one second (time for the
//     message to leave the UART), which with reboot=k ends the VMM, instead
//     of a VM that hangs forever.
//   - pci=off: Firecracker's devices are virtio-mmio, described on the
//     command line it appends (virtio_mmio.device=...); there is no PCI
//     bus, and probing for one only costs boot time.
//   - i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd: Firecracker's
//     i8042 is a minimal keyboard controller (no aux port, no mux, no PnP
//     description, no command responses beyond reset); these skip the
//     probes that would otherwise time out at boot (tens of ms) while
//     keeping the keyboard driver that SendCtrlAltDel needs.
//
// Firecracker's own default command line also has "nomodule" and
// "8250.nr_uarts=0"; both are left out on purpose: banger's initramfs loads
// the virtio drivers as modules, and the serial console is the boot log.
var BootParams = []string{
	"console=ttyS0",
	"reboot=k",
	"panic=1",
	"pci=off",
	"i8042.noaux",
	"i8042.nomux",
	"i8042.nopnp",
	"i8042.dumbkbd",
}

// maxCmdline is the x86_64 Firecracker command line limit (2048 bytes
// with the NUL). Firecracker appends one "virtio_mmio.device=SIZE@ADDR:IRQ"
// parameter per device; cmdlinePerDevice is the room kept for each.
const (
	maxCmdline       = 2047
	cmdlinePerDevice = 40
)

// BootArgs returns boot_args for spec: the caller's Cmdline followed by
// BootParams (see there), each only if the caller did not set it. A
// parameter counts as set when the command line has "key" or "key=...".
// It is a pure function of spec.
func BootArgs(spec engine.Spec) string {
	parts := strings.Fields(spec.Cmdline)
	has := func(key string) bool {
		for _, p := range parts {
			if p == key || strings.HasPrefix(p, key+"=") {
				return true
			}
		}
		return false
	}
	var extra []string
	for _, p := range BootParams {
		key, _, _ := strings.Cut(p, "=")
		if !has(key) {
			extra = append(extra, p)
		}
	}
	return strings.Join(append(parts, extra...), " ")
}

// checkBootArgs fails if args plus the parameters Firecracker appends for
// spec's devices may not fit the kernel's command line.
func checkBootArgs(args string, spec engine.Spec) error {
	devices := len(spec.NICs)
	for _, p := range []string{spec.RootDisk, spec.WorkDisk, spec.VsockSocket} {
		if p != "" {
			devices++
		}
	}
	limit := maxCmdline - devices*cmdlinePerDevice
	if len(args) > limit {
		return fmt.Errorf("kernel command line is %d bytes long; with %d devices the limit is %d", len(args), devices, limit)
	}
	return nil
}
