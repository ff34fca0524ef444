package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"time"

	"banger/internal/engine/qemu"
)

// The daemon's cache of KVM probe verdicts (qemu.KVMCacheFile under the
// state dir): the daemon probes once per kernel file and QEMU binary, and
// "auto" falls back to TCG when the verdict is not ok.
type kvmVerdict = qemu.KVMVerdict

const kvmCacheFile = qemu.KVMCacheFile

var kvmCacheKey = qemu.KVMCacheKey

// kvmInput is what the accel check looks at.
type kvmInput struct {
	accel      string   // auto, kvm or tcg (config accel, env BANGER_ACCEL)
	qemu       string   // config qemu_bin
	kernels    []string // vmlinux files of the imported kernels that exist
	lookPath   func(string) (string, error)
	cacheFile  string
	configFile string
	// openDev opens /dev/kvm read-write.
	openDev func() error
	// probe, when set, boots a probe guest instead of reading the cache.
	probe func(ctx context.Context, qemuBinary, vmlinux string) (bool, string, error)
}

// checkKVM reports which accelerator VMs will get, the way the daemon
// decides it: accel=tcg never probes; otherwise KVM counts only when a
// probe boot under KVM succeeded, and "auto" falls back to TCG.
func checkKVM(ctx context.Context, in kvmInput) Check {
	c := Check{Name: "accel"}
	if in.accel == "tcg" {
		c.Status, c.Detail = Pass, "accel = tcg (config or BANGER_ACCEL): VMs run under TCG software emulation; KVM is not used"
		return c
	}
	strict := in.accel == "kvm"
	fallback := func(reason, fix string) Check {
		if strict {
			c.Status = Fail
			c.Detail = "accel = kvm, but " + reason + ": VMs cannot start"
			c.Fix = fix + `; or set accel = "auto" (falls back to TCG) in ` + in.configFile
		} else {
			c.Status = Warn
			c.Detail = "TCG fallback in effect: " + reason + "; VMs run under TCG (slower)"
			c.Fix = fix
		}
		return c
	}

	if err := in.openDev(); err != nil {
		err = unwrapPath(err)
		fix := "enable virtualisation (VT-x/AMD-V) in the firmware and load KVM: sudo modprobe kvm_intel (or kvm_amd)"
		if errors.Is(err, fs.ErrPermission) {
			fix = "give yourself access to /dev/kvm: sudo usermod -aG kvm $USER, then log in again"
		}
		return fallback(fmt.Sprintf("/dev/kvm is not usable (%v)", err), fix)
	}

	var (
		v      kvmVerdict
		source string
	)
	if in.probe != nil {
		if len(in.kernels) == 0 {
			c.Status = Warn
			c.Detail = "/dev/kvm opens, but there is no kernel to probe KVM with"
			c.Fix = "banger kernel pull debian-bookworm, then banger doctor --probe"
			return c
		}
		pctx, cancel := context.WithTimeout(ctx, qemu.ProbeTimeout+10*time.Second)
		ok, detail, err := in.probe(pctx, in.qemu, in.kernels[0])
		cancel()
		if err != nil {
			c.Status = Warn
			c.Detail = "could not run the KVM probe: " + err.Error()
			c.Fix = "check the qemu line above"
			return c
		}
		v, source = kvmVerdict{OK: ok, Detail: detail}, "probe boot just now"
	} else {
		found, stale, err := cachedVerdict(in)
		switch {
		case err != nil:
			c.Status = Warn
			c.Detail = fmt.Sprintf("/dev/kvm opens, but the cached KVM verdict is unreadable (%v)", err)
			c.Fix = "banger doctor --probe (boots a throwaway guest, up to 15 s); the daemon probes again on the next VM start"
			return c
		case found == nil:
			c.Status = Warn
			c.Detail = "/dev/kvm opens, but whether KVM can boot a guest is not probed yet"
			if stale {
				c.Detail += " for the current kernels and QEMU (older verdicts exist)"
			}
			c.Fix = "banger doctor --probe (boots a throwaway guest, up to 15 s); the daemon also probes on the first VM start"
			if len(in.kernels) == 0 {
				c.Fix = "banger kernel pull debian-bookworm first: the probe boots a kernel"
			}
			return c
		}
		v, source = *found, "cached verdict in "+in.cacheFile
	}
	if v.OK {
		c.Status, c.Detail = Pass, fmt.Sprintf("KVM usable: %s (%s)", v.Detail, source)
		return c
	}
	fix := "nothing to do if TCG speed is acceptable (accel = \"tcg\" in " + in.configFile + " skips the probe); otherwise fix the host's KVM (e.g. nested virtualisation) and run banger doctor --probe"
	if in.probe == nil {
		// The daemon keeps its verdict (in memory too) until the kernel
		// or QEMU changes, even one from before /dev/kvm became usable.
		fix += "; to make the daemon probe again, rm " + in.cacheFile + " and restart it (banger daemon stop)"
	}
	return fallback(fmt.Sprintf("/dev/kvm exists but a probe boot under KVM failed (%s; %s)", v.Detail, source), fix)
}

// cachedVerdict looks up the daemon's verdicts for the imported kernels. A
// failed verdict wins over a good one: VMs of that kernel run under TCG.
// stale reports that the cache holds verdicts, none for the current
// kernels and QEMU.
func cachedVerdict(in kvmInput) (found *kvmVerdict, stale bool, err error) {
	b, err := os.ReadFile(in.cacheFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	cache := map[string]kvmVerdict{}
	if err := json.Unmarshal(b, &cache); err != nil {
		return nil, false, fmt.Errorf("parse %s: %w", in.cacheFile, err)
	}
	var hits []kvmVerdict
	for _, k := range in.kernels {
		if v, ok := cache[kvmCacheKey(k, in.qemu, in.lookPath)]; ok {
			hits = append(hits, v)
		}
	}
	if len(hits) == 0 {
		return nil, len(cache) > 0, nil
	}
	sort.SliceStable(hits, func(i, j int) bool { return !hits[i].OK && hits[j].OK })
	return &hits[0], false, nil
}
