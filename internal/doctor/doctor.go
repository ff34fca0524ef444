// Package doctor checks that a host can run banger VMs and says how to fix
// what is missing. It reads the store directly, so it works without a
// daemon, and never starts one: it runs inside the bangerd binary
// (`bangerd doctor`, which links what the checks read), and `banger
// doctor` runs that and prints its report (package report). It only
// reads the host network (links, banger's nftables table, the privileged
// helper's state): it never creates the bridge, a tap or a rule.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/config"
	"banger/internal/doctor/report"
	"banger/internal/engine"
	"banger/internal/engine/builtin"
	"banger/internal/engine/qemu"
	"banger/internal/hosttools"
	"banger/internal/model"
	"banger/internal/paths"
	"banger/internal/privhelper"
	"banger/internal/store"
)

// Status of one check.
type Status = report.Status

// Statuses.
const (
	Pass = report.Pass
	Warn = report.Warn
	Fail = report.Fail
	Skip = report.Skip
)

// Check is one line of the report.
type Check = report.Check

// Options tune Run.
type Options struct {
	// Probe boots a throwaway guest under KVM (up to qemu.ProbeTimeout,
	// about 15 s) to learn whether KVM works, even when the daemon has a
	// cached verdict. Without it the accel check only reads the daemon's
	// cached verdict and reports "not probed yet" when there is none.
	Probe bool
}

// Timeouts that keep a doctor run within a few seconds.
const (
	// helperTimeout bounds each call to the privileged helper.
	helperTimeout = time.Second
	// dnsTimeout bounds the DNS query to the daemon's resolver.
	dnsTimeout = time.Second
	// daemonDialTimeout bounds the check that the daemon's socket answers.
	daemonDialTimeout = 500 * time.Millisecond
	// toolTimeout bounds `qemu --version` and `qemu -machine help`.
	toolTimeout = 10 * time.Second
)

// host is what Run learns from the machine; tests replace parts of it.
type host struct {
	euid          int
	statfs        statfsFunc
	openKVM       func() error
	probeKVM      func(ctx context.Context, qemuBinary, vmlinux string) (bool, string, error)
	openTun       func() error
	linkType      func(name string) (string, error)
	newHelper     func(socket string) helperClient
	daemonRunning func(socket string) bool
	// lookPath finds a host tool as the daemon does (hosttools.Path).
	lookPath func(file string) (string, error)
}

func realHost() host {
	return host{
		euid:          os.Geteuid(),
		statfs:        statfs,
		openKVM:       func() error { return openRW("/dev/kvm") },
		probeKVM:      qemu.ProbeKVM,
		openTun:       func() error { return openRW("/dev/net/tun") },
		linkType:      linkType,
		newHelper:     func(socket string) helperClient { return privhelper.NewClient(socket) },
		daemonRunning: daemonRunning,
		lookPath:      hosttools.Path,
	}
}

// Run performs every check.
func Run(ctx context.Context, l paths.Layout, opts Options) []Check {
	return run(ctx, l, opts, realHost())
}

func run(ctx context.Context, l paths.Layout, opts Options, h host) []Check {
	var out []Check
	add := func(name string, s Status, detail, fix string) {
		out = append(out, Check{Name: name, Status: s, Detail: detail, Fix: fix})
	}
	cfg, err := config.Load(l.ConfigFile())
	if err != nil {
		add("config", Fail, err.Error(), "fix "+l.ConfigFile())
		cfg = config.Default()
	} else {
		add("config", Pass, fmt.Sprintf("%s: accel=%s network=%s engine=%s", l.ConfigFile(), cfg.Accel, cfg.Network, cfg.Engine), "")
	}

	// Tools.
	qemuPath, err := h.lookPath(cfg.QEMU)
	if err != nil {
		add("qemu", Fail, err.Error(), "apt-get install qemu-system-x86 (or set qemu_bin in "+l.ConfigFile()+")")
	} else {
		tctx, cancel := context.WithTimeout(ctx, toolTimeout)
		v, verr := qemu.Version(tctx, qemuPath)
		micro, merr := qemu.SupportsMicrovm(tctx, qemuPath)
		cancel()
		switch {
		case verr != nil:
			add("qemu", Fail, verr.Error(), "reinstall qemu-system-x86")
		case merr != nil || !micro:
			add("qemu", Fail, fmt.Sprintf("%s (version %s) lacks the microvm machine", qemuPath, v), "install QEMU 5.0 or newer")
		default:
			add("qemu", Pass, fmt.Sprintf("%s, version %s, microvm supported", qemuPath, v), "")
		}
	}
	out = append(out,
		checkTool(h.lookPath, "qemu-img", hosttools.QEMUImg, Fail),
		checkTool(h.lookPath, "e2fsprogs", hosttools.MkfsExt4, Fail),
		checkTool(h.lookPath, "debugfs", hosttools.Debugfs, Warn),
	)

	// State directory and the space on its filesystem.
	if err := os.MkdirAll(l.State, 0o700); err != nil {
		add("state dir", Fail, err.Error(), "make "+l.State+" writable")
	} else if f, err := os.CreateTemp(l.State, ".doctor-*"); err != nil {
		add("state dir", Fail, err.Error(), "make "+l.State+" writable")
	} else {
		f.Close()
		os.Remove(f.Name())
		add("state dir", Pass, l.State+" is writable", "")
	}
	out = append(out, checkDisk(l.State, h.statfs))

	// Store, kernels, images. The store stays open for the stale-resource
	// finder, which lists the VMs last.
	var (
		kernels, images []string
		vmlinuxes       []string
		missingKernels  []string
		storeOK         bool
		st              *store.Store
	)
	if _, err := os.Stat(l.DB()); errors.Is(err, fs.ErrNotExist) {
		add("store", Pass, "no store yet; it will be created on first daemon start", "")
		storeOK = true
	} else if err := store.CheckMigrations(ctx, l.DB()); err != nil {
		add("store", Fail, err.Error(), "restore "+l.DB()+" or move it aside")
	} else if st, err = store.Open(ctx, l.DB()); err != nil {
		add("store", Fail, err.Error(), "check permissions of "+l.DB())
	} else {
		defer st.Close()
		ks, kerr := st.ListKernels(ctx)
		imgs, ierr := st.ListImages(ctx)
		if err := errors.Join(kerr, ierr); err != nil {
			add("store", Fail, err.Error(), "check permissions of "+l.DB())
		} else {
			add("store", Pass, l.DB()+" readable, migrations current", "")
			storeOK = true
			for _, k := range ks {
				kernels = append(kernels, k.Name)
				if _, err := os.Stat(k.Vmlinux); err == nil {
					vmlinuxes = append(vmlinuxes, k.Vmlinux)
				} else {
					missingKernels = append(missingKernels, k.Name)
				}
			}
			for _, img := range imgs {
				images = append(images, img.Name)
			}
		}
	}
	if storeOK {
		out = append(out, checkKernels(kernels, missingKernels), checkImages(images))
	}

	// Accelerator.
	var probe func(ctx context.Context, qemuBinary, vmlinux string) (bool, string, error)
	if opts.Probe {
		probe = h.probeKVM
	}
	out = append(out, checkKVM(ctx, kvmInput{
		accel: cfg.Accel, qemu: cfg.QEMU, kernels: vmlinuxes, lookPath: h.lookPath,
		cacheFile: filepath.Join(l.State, kvmCacheFile), configFile: l.ConfigFile(),
		openDev: h.openKVM, probe: probe,
	}))

	// Network: the helper is asked once, by the network check and the
	// stale-resource finder alike.
	var helper *helperView
	if (bridgeWanted(cfg.Network) && h.euid != 0) || exists(cfg.HelperSocket) {
		hv := askHelper(ctx, h.newHelper(cfg.HelperSocket), cfg.HelperSocket, helperTimeout)
		helper = &hv
	}
	netCheck, bridged := checkNetwork(netInput{
		mode: cfg.Network, euid: h.euid, bridge: cfg.BridgeName, configFile: l.ConfigFile(),
		helper: helper, linkType: h.linkType,
	})
	out = append(out, netCheck, checkTun(h.openTun, bridged, h.euid))
	out = append(out, checkDNS(ctx, cfg.DNSListen, h.daemonRunning(l.Socket()), l.ConfigFile(), dnsTimeout))
	out = append(out, checkSSHKey(cfg.SSHKeyPath(l)))

	// Firecracker is optional: a FAIL only when it is the configured engine.
	fc := builtin.Firecracker(cfg, l)
	if path, ver, err := fc.Check(ctx); err != nil {
		s := Warn
		if cfg.Engine == engine.Firecracker {
			s = Fail
		}
		add("firecracker", s, "not usable: "+strings.ReplaceAll(err.Error(), "\n", "; "), "install firecracker (and a KVM that boots guests) to use --engine firecracker; QEMU is used otherwise")
	} else {
		add("firecracker", Pass, fmt.Sprintf("%s, version %s (use --engine firecracker; needs a KVM that boots guests)", path, ver), "")
	}

	// Leftovers of VMs that are gone.
	var vms VMLister = storeVMs{st}
	if !storeOK {
		vms = failingVMs{errors.New("the store is unreadable")}
	}
	src := realStaleSources(cfg, l, h.euid, helper, vms)
	out = append(out, staleChecks(FindStale(ctx, src), l.DB(), h.euid)...)
	return out
}

// checkTool looks for a host tool of hosttools' table the way the daemon
// does (lookPath is hosttools.Path: PATH, then the sbin directories), so
// a tool doctor passes is one the daemon finds.
func checkTool(lookPath func(string) (string, error), name, file string, missing Status) Check {
	tool, _ := hosttools.Lookup(file)
	p, err := lookPath(file)
	if err == nil {
		return Check{Name: name, Status: Pass, Detail: p}
	}
	c := Check{Name: name, Status: missing, Detail: fmt.Sprintf("%v; banger needs it: it %s", err, tool.Purpose)}
	if tool.Package != "" {
		c.Fix = "apt-get install " + tool.Package
	} else {
		c.Fix = tool.Install()
	}
	return c
}

func checkKernels(names, missing []string) Check {
	switch {
	case len(names) == 0:
		return Check{Name: "kernels", Status: Warn, Detail: "no kernel imported: no VM can boot yet",
			Fix: "banger kernel pull debian-bookworm (or banger kernel import NAME --from linux-image-*.deb)"}
	case len(missing) > 0:
		return Check{Name: "kernels", Status: Warn,
			Detail: fmt.Sprintf("%d imported, but the files of %s are missing", len(names), strings.Join(missing, ", ")),
			Fix:    fmt.Sprintf("banger kernel rm %s, then pull or import it again", missing[0])}
	}
	return Check{Name: "kernels", Status: Pass, Detail: fmt.Sprintf("%d imported (%s)", len(names), strings.Join(names, ", "))}
}

func checkImages(names []string) Check {
	if len(names) == 0 {
		return Check{Name: "images", Status: Warn, Detail: "no image: no VM can be created yet",
			Fix: "banger image pull docker.io/library/debian:bookworm (any OCI reference; or banger image build NAME --debootstrap bookworm)"}
	}
	return Check{Name: "images", Status: Pass, Detail: fmt.Sprintf("%d available (%s)", len(names), strings.Join(names, ", "))}
}

// openRW opens a device read-write and closes it again: what QEMU needs,
// with no side effect.
func openRW(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// storeVMs lists the store's VMs for the stale-resource finder.
type storeVMs struct{ st *store.Store }

func (s storeVMs) VMs(ctx context.Context) ([]VMRef, error) {
	if s.st == nil {
		return nil, nil // no store yet: no VM
	}
	vms, err := s.st.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	return vmRefs(vms), nil
}

func vmRefs(vms []*model.VM) []VMRef {
	out := make([]VMRef, 0, len(vms))
	for _, v := range vms {
		out = append(out, VMRef{ID: v.ID, Name: v.Name, IP: v.IP})
	}
	return out
}

type failingVMs struct{ err error }

func (f failingVMs) VMs(context.Context) ([]VMRef, error) { return nil, f.err }

// Failed reports whether any check failed.
func Failed(cs []Check) bool { return report.Failed(cs) }
