package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/config"
	"banger/internal/engine/vmmproc"
	"banger/internal/network"
	"banger/internal/paths"
)

// realStaleSources wires FindStale to the host: links through netlink
// (readable by anyone), banger's nftables table through nftables as root or
// the helper's state otherwise, the per-VM directories of layout l, and
// vms. helper is the helper's answer, nil when it was not asked.
func realStaleSources(cfg config.Config, l paths.Layout, euid int, helper *helperView, vms VMLister) StaleSources {
	ncfg := network.Config{TapPoolSize: cfg.TapPoolSize}.WithDefaults()
	helperOK := helper != nil && helper.err == nil
	if helperOK {
		// The helper's names win: its taps and table are the ones that
		// exist.
		h := helper.cfg.WithDefaults()
		ncfg.TapPrefix, ncfg.Table = h.TapPrefix, h.Table
	}
	links := netlinkTaps{prefix: ncfg.TapPrefix}
	if helperOK && helper.stateErr == nil {
		links.helper = &helper.state
	}
	src := StaleSources{Links: links, Dirs: fsDirs{l}, VMs: vms, PoolSize: ncfg.TapPoolSize}
	switch {
	case euid == 0:
		src.Rules = nftRules{table: ncfg.Table}
	case helperOK && helper.stateErr == nil:
		src.Rules = helperRules{table: ncfg.Table, guests: helper.state.NATGuests}
		// The helper tells its pool apart; a non-root daemon has no
		// other.
		src.PoolSize = 0
	default:
		src.Rules = errRules{ErrNeedsPrivilege}
	}
	return src
}

// netlinkTaps lists taps through netlink; helper, when known, marks the
// ones the privileged helper pools or handed out.
type netlinkTaps struct {
	prefix string
	helper *network.State
}

// dumpRetries bounds the retries of a netlink dump the kernel reports as
// interrupted (the list changed while it was read).
const dumpRetries = 5

func (n netlinkTaps) ListTaps(ctx context.Context) ([]Tap, error) {
	var (
		links []netlink.Link
		err   error
	)
	for i := 0; ; i++ {
		links, err = netlink.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			continue
		}
		break
	}
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []Tap
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "tuntap" || !network.IsTapName(n.prefix, a.Name) {
			continue
		}
		t := Tap{Name: a.Name, Carrier: a.RawFlags&unix.IFF_LOWER_UP != 0}
		if n.helper != nil {
			t.Pooled = slices.Contains(n.helper.Pool, a.Name)
			t.InUse = slices.Contains(n.helper.InUse, a.Name)
		}
		out = append(out, t)
	}
	return out, nil
}

// nftRules reads banger's table from the kernel through internal/network
// (needs CAP_NET_ADMIN).
type nftRules struct{ table string }

func (n nftRules) ListNATRules(ctx context.Context) ([]NATRule, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rules, err := network.ReadSourceRules(n.table)
	switch {
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES):
		return nil, ErrNeedsPrivilege
	case errors.Is(err, syscall.EPROTONOSUPPORT) || errors.Is(err, syscall.EAFNOSUPPORT):
		return nil, nil // no nftables in this kernel: no table of banger's
	case err != nil:
		return nil, err
	}
	out := make([]NATRule, 0, len(rules))
	for _, r := range rules {
		out = append(out, NATRule{Table: n.table, Chain: r.Chain, Handle: r.Handle, Addr: r.Source})
	}
	return out, nil
}

// helperRules are the NAT guests the helper reports (without handles).
type helperRules struct {
	table  string
	guests []netip.Addr
}

func (h helperRules) ListNATRules(context.Context) ([]NATRule, error) {
	out := make([]NATRule, 0, len(h.guests))
	for _, g := range h.guests {
		out = append(out, NATRule{Table: h.table, Addr: g})
	}
	return out, nil
}

type errRules struct{ err error }

func (e errRules) ListNATRules(context.Context) ([]NATRule, error) { return nil, e.err }

// fsDirs lists the per-VM directories of a layout.
type fsDirs struct{ l paths.Layout }

func (f fsDirs) ListVMDirs(ctx context.Context) ([]VMDir, error) {
	var out []VMDir
	for _, root := range []struct {
		dir     string
		runtime bool
	}{{filepath.Join(f.l.Runtime, "vms"), true}, {filepath.Join(f.l.State, "vms"), false}} {
		ents, err := os.ReadDir(root.dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			d := VMDir{ID: e.Name(), Path: filepath.Join(root.dir, e.Name()), Runtime: root.runtime}
			if root.runtime {
				if b, err := os.ReadFile(filepath.Join(d.Path, "tap")); err == nil {
					d.Tap = strings.TrimSpace(string(b))
				}
				d.VMMs = liveVMMs(d.Path)
			}
			d.Bytes = diskUsage(d.Path)
			out = append(out, d)
		}
	}
	return out, nil
}

// liveVMMs returns the processes named by dir's pid files (qemu.pid,
// firecracker.pid) that are still alive and are a VMM of that directory:
// their command line names a file in it (-pidfile, the QMP or API socket),
// so a recycled pid is not mistaken for one.
func liveVMMs(dir string) []VMM {
	files, _ := filepath.Glob(filepath.Join(dir, "*.pid"))
	var out []VMM
	for _, pf := range files {
		pid, err := vmmproc.ReadPIDFile(pf)
		if err != nil {
			continue
		}
		for _, arg := range vmmproc.Cmdline(pid) {
			if strings.Contains(arg, dir+"/") {
				out = append(out, VMM{PID: pid, PIDFile: pf})
				break
			}
		}
	}
	return out
}

// diskUsage is the space the files under dir occupy (sparse disks count
// what they use, not their size).
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}
