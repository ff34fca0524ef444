package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// KVMProbe reports whether hardware acceleration can actually boot a guest on
// this host. ok=false with a detail means "checked, not usable"; a non-nil
// error means the check itself could not be made. qemu.ProbeKVM, bound to a
// binary and a kernel, is the real one.
type KVMProbe func(ctx context.Context) (ok bool, detail string, err error)

// ResolveAccel turns the configured accelerator (AccelAuto, AccelKVM or
// AccelTCG; "" means auto) into the one a Spec carries.
//
//   - "tcg" never probes.
//   - "kvm" probes and fails unless KVM is usable: asking for KVM explicitly
//     and silently getting software emulation would be a surprise.
//   - "auto" probes and falls back to "tcg" when KVM is unusable or the probe
//     fails, with a one-line warning for the user; warning is "" otherwise.
func ResolveAccel(ctx context.Context, want string, probe KVMProbe) (accel, warning string, err error) {
	switch want {
	case AccelTCG:
		return AccelTCG, "", nil
	case AccelKVM, AccelAuto, "":
	default:
		return "", "", fmt.Errorf("resolve accelerator: unknown accelerator %q (want auto, kvm or tcg)", want)
	}
	if probe == nil {
		return "", "", errors.New("resolve accelerator: no kvm probe")
	}
	ok, detail, perr := probe(ctx)
	if ok && perr == nil {
		return AccelKVM, "", nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return "", "", fmt.Errorf("resolve accelerator: %w", ctxErr)
	}
	reason := oneLine(detail)
	if perr != nil {
		reason = "probe failed: " + oneLine(perr.Error())
	}
	if reason == "" {
		reason = "no reason given"
	}
	if want == AccelKVM {
		if perr != nil {
			return "", "", fmt.Errorf("resolve accelerator: kvm requested, but probing it failed: %w", perr)
		}
		return "", "", fmt.Errorf("resolve accelerator: kvm requested, but it cannot boot a guest here: %s", reason)
	}
	return AccelTCG, fmt.Sprintf("KVM is not usable (%s); falling back to TCG software emulation, VMs will be much slower", reason), nil
}

// oneLine squeezes s onto a single trimmed line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
