// Package doctor checks that a host can run banger VMs and says how to fix
// what is missing. It reads the store directly, so it works without a
// daemon.
package doctor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"banger/internal/config"
	"banger/internal/engine/firecracker"
	"banger/internal/engine/qemu"
	"banger/internal/paths"
	"banger/internal/store"
)

// Status of one check.
type Status string

// Statuses.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
)

// Check is one line of the report.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Run performs every check.
func Run(ctx context.Context, l paths.Layout) []Check {
	var out []Check
	add := func(name string, s Status, detail, fix string) {
		out = append(out, Check{Name: name, Status: s, Detail: detail, Fix: fix})
	}
	cfg, err := config.Load(l.ConfigFile())
	if err != nil {
		add("config", Fail, err.Error(), "fix "+l.ConfigFile())
		cfg = config.Default()
	} else {
		add("config", Pass, "accel="+cfg.Accel, "")
	}

	qemuPath, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		add("qemu", Fail, cfg.QEMU+" not found", "apt-get install qemu-system-x86")
	} else {
		v, verr := qemu.Version(ctx, qemuPath)
		micro, merr := qemu.SupportsMicrovm(ctx, qemuPath)
		switch {
		case verr != nil:
			add("qemu", Fail, verr.Error(), "reinstall qemu-system-x86")
		case merr != nil || !micro:
			add("qemu", Fail, fmt.Sprintf("%s (version %s) lacks the microvm machine", qemuPath, v), "install QEMU 5.0 or newer")
		default:
			add("qemu", Pass, fmt.Sprintf("%s, version %s, microvm supported", qemuPath, v), "")
		}
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		add("qemu-img", Fail, "qemu-img not found", "apt-get install qemu-utils")
	} else {
		add("qemu-img", Pass, "found", "")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		add("e2fsprogs", Fail, "mkfs.ext4 not found", "apt-get install e2fsprogs")
	} else {
		add("e2fsprogs", Pass, "mkfs.ext4 found", "")
	}

	// State directory.
	if err := os.MkdirAll(l.State, 0o700); err != nil {
		add("state dir", Fail, err.Error(), "make "+l.State+" writable")
	} else if f, err := os.CreateTemp(l.State, ".doctor-*"); err != nil {
		add("state dir", Fail, err.Error(), "make "+l.State+" writable")
	} else {
		f.Close()
		os.Remove(f.Name())
		add("state dir", Pass, l.State+" is writable", "")
	}

	// Store, kernels, images.
	var vmlinux string
	nKernels, nImages := 0, 0
	if _, err := os.Stat(l.DB()); os.IsNotExist(err) {
		add("store", Pass, "no store yet; it will be created on first daemon start", "")
	} else if err := store.CheckMigrations(ctx, l.DB()); err != nil {
		add("store", Fail, err.Error(), "restore "+l.DB()+" or move it aside")
	} else if st, err := store.Open(ctx, l.DB()); err != nil {
		add("store", Fail, err.Error(), "check permissions of "+l.DB())
	} else {
		ks, kerr := st.ListKernels(ctx)
		imgs, ierr := st.ListImages(ctx)
		st.Close()
		if kerr != nil || ierr != nil {
			add("store", Fail, fmt.Sprint(kerr, ierr), "")
		} else {
			add("store", Pass, l.DB()+" readable, migrations current", "")
			nKernels, nImages = len(ks), len(imgs)
			for _, k := range ks {
				if _, err := os.Stat(k.Vmlinux); err == nil {
					vmlinux = k.Vmlinux
					break
				}
			}
		}
	}

	// Accelerator.
	switch {
	case cfg.Accel == "tcg":
		add("accel", Pass, "TCG (software emulation) chosen in config/BANGER_ACCEL", "")
	case !kvmDevice():
		if cfg.Accel == "kvm" {
			add("accel", Fail, "accel=kvm but /dev/kvm is missing or not accessible", "load kvm modules or set accel = \"tcg\"")
		} else {
			add("accel", Warn, "no usable /dev/kvm: VMs run under TCG (software emulation, much slower)", "enable virtualisation / load the kvm module")
		}
	case vmlinux == "":
		add("accel", Warn, "/dev/kvm exists but no kernel is imported to probe it with", "import a kernel, then run doctor again")
	default:
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ok, detail, err := qemu.ProbeKVM(pctx, qemuPath, vmlinux)
		cancel()
		switch {
		case err != nil:
			add("accel", Warn, "kvm probe failed: "+err.Error(), "")
		case ok:
			add("accel", Pass, "KVM usable ("+detail+")", "")
		case cfg.Accel == "kvm":
			add("accel", Fail, "accel=kvm but KVM cannot boot a guest: "+detail, "set accel = \"auto\" or \"tcg\"")
		default:
			add("accel", Warn, "KVM cannot boot a guest here ("+detail+"); falling back to TCG", "")
		}
	}

	// Taps: QEMU opens them through /dev/net/tun, as the daemon's user.
	if fi, err := os.Stat("/dev/net/tun"); err != nil {
		add("tun", Warn, "/dev/net/tun is missing: bridge networking is unavailable", "modprobe tun")
	} else if os.Geteuid() != 0 && fi.Mode().Perm()&0o006 != 0o006 {
		add("tun", Warn, fmt.Sprintf("/dev/net/tun is %v: QEMU running as this user cannot open its tap", fi.Mode().Perm()), "chmod 0666 /dev/net/tun (the usual mode)")
	} else {
		add("tun", Pass, "/dev/net/tun usable", "")
	}

	// Firecracker is optional: a FAIL only when it is the configured engine.
	fc := firecracker.New(cfg.FirecrackerBin, cfg.JailerBin)
	if cfg.JailerBin != "" {
		fc.ChrootBase = cfg.JailerChrootBase
		if fc.ChrootBase == "" {
			fc.ChrootBase = filepath.Join(l.State, "jailer")
		}
		fc.JailUID, fc.JailGID = cfg.JailerUID, cfg.JailerGID
	}
	if path, ver, err := fc.Check(ctx); err != nil {
		st := Warn
		if cfg.Engine == "firecracker" {
			st = Fail
		}
		add("firecracker", st, "not usable: "+err.Error(), "install firecracker (and a KVM that boots guests) to use --engine firecracker; QEMU is used otherwise")
	} else {
		add("firecracker", Pass, fmt.Sprintf("%s, version %s (use --engine firecracker; needs a KVM that boots guests)", path, ver), "")
	}

	if nKernels == 0 {
		add("kernels", Fail, "no kernel imported", "banger kernel import NAME --from linux-image-*.deb")
	} else {
		add("kernels", Pass, fmt.Sprintf("%d imported", nKernels), "")
	}
	if nImages == 0 {
		add("images", Fail, "no image", "banger image build NAME --debootstrap bookworm (or --from-dir DIR)")
	} else {
		add("images", Pass, fmt.Sprintf("%d available", nImages), "")
	}
	return out
}

func kvmDevice() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Failed reports whether any check failed.
func Failed(cs []Check) bool {
	for _, c := range cs {
		if c.Status == Fail {
			return true
		}
	}
	return false
}
