package doctor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrNeedsPrivilege is returned by a lister that cannot read what it lists
// as this user (nftables rules without root or the helper); the finder
// reports the resource as skipped.
var ErrNeedsPrivilege = errors.New("needs root or the helper")

// Tap is a tap device with banger's name prefix.
type Tap struct {
	Name string
	// Carrier reports that a process (a VMM) holds the tap open.
	Carrier bool
	// Pooled and InUse are what the privileged helper knows of the tap:
	// part of its warm pool, or handed out to a daemon.
	Pooled, InUse bool
}

// NATRule is a rule of banger's nftables table that names a guest address.
type NATRule struct {
	Table string // nftables table (family ip)
	Chain string // "" when unknown
	// Handle is the rule's nftables handle; 0 when unknown (rules read
	// through the helper).
	Handle uint64
	Addr   netip.Addr
}

// VMM is a live VMM process named by a pid file in a VM's run dir.
type VMM struct {
	PID     int
	PIDFile string
}

// VMDir is a per-VM directory named by the VM's id: its run dir under the
// runtime dir (sockets, pid files, the name of its tap), or its state dir
// (disks, logs).
type VMDir struct {
	ID      string
	Path    string
	Runtime bool
	// Tap is the tap recorded in a run dir ("" when none).
	Tap string
	// VMMs are the live VMM processes whose pid file is in the run dir.
	VMMs []VMM
	// Bytes is the disk space the directory uses.
	Bytes int64
}

// VMRef is a VM row of the store, as far as the finder cares.
type VMRef struct {
	ID, Name string
	IP       string // bridge address, "" when none
}

// LinkLister lists the taps with banger's prefix.
type LinkLister interface {
	ListTaps(ctx context.Context) ([]Tap, error)
}

// RuleLister lists the rules of banger's nftables table that name a guest.
type RuleLister interface {
	ListNATRules(ctx context.Context) ([]NATRule, error)
}

// DirLister lists the per-VM directories under the runtime and state dirs.
type DirLister interface {
	ListVMDirs(ctx context.Context) ([]VMDir, error)
}

// VMLister lists the VMs in the store.
type VMLister interface {
	VMs(ctx context.Context) ([]VMRef, error)
}

// StaleSources is what FindStale looks at.
type StaleSources struct {
	Links LinkLister
	Rules RuleLister
	Dirs  DirLister
	VMs   VMLister
	// PoolSize is how many idle taps nobody accounts for are taken to be
	// the warm pool of a daemon that manages the network in-process (the
	// helper says which taps it pools; a root daemon cannot be asked).
	PoolSize int
}

// Stale is what FindStale found. Each list comes with the error that kept
// it from being read (ErrNeedsPrivilege: skipped).
type Stale struct {
	Taps     []Tap
	TapsErr  error
	Rules    []NATRule
	RulesErr error
	Dirs     []VMDir
	DirsErr  error
	// VMMs are the live VMM processes of Dirs.
	VMMs []VMM
	// Idle are unaccounted idle taps taken to be the warm pool.
	Idle []string
}

// FindStale lists what VMs that are no longer in the store left behind:
//
//   - taps with banger's prefix that no VM of the store records in its run
//     dir, that no process holds open, that the helper neither pools nor
//     handed out, and that are more than PoolSize (else they are taken to
//     be a root daemon's warm pool); a tap recorded by a run dir of a VM
//     that is gone is stale whatever else holds;
//   - rules of banger's table for addresses no VM of the store has;
//   - run dirs and state dirs of VM ids that are not in the store, with
//     the VMM processes their pid files name.
//
// The store is read last, so that a VM created meanwhile cannot make its
// fresh directories look orphaned. When the store cannot be read nothing
// is judged: every list carries that error.
func FindStale(ctx context.Context, src StaleSources) Stale {
	var s Stale
	taps, tapsErr := src.Links.ListTaps(ctx)
	rules, rulesErr := src.Rules.ListNATRules(ctx)
	dirs, dirsErr := src.Dirs.ListVMDirs(ctx)
	vms, err := src.VMs.VMs(ctx)
	if err != nil {
		err = fmt.Errorf("cannot list the store's VMs: %w", err)
		s.TapsErr, s.RulesErr, s.DirsErr = err, err, err
		return s
	}
	s.TapsErr, s.RulesErr, s.DirsErr = tapsErr, rulesErr, dirsErr

	live := map[string]bool{}
	addrs := map[netip.Addr]bool{}
	for _, v := range vms {
		live[v.ID] = true
		if a, err := netip.ParseAddr(v.IP); err == nil {
			addrs[a.Unmap()] = true
		}
	}

	owned := map[string]bool{}    // taps recorded by live VMs
	orphaned := map[string]bool{} // taps recorded by VMs that are gone
	for _, d := range dirs {
		if live[d.ID] {
			if d.Tap != "" {
				owned[d.Tap] = true
			}
			continue
		}
		s.Dirs = append(s.Dirs, d)
		s.VMMs = append(s.VMMs, d.VMMs...)
		if d.Tap != "" {
			orphaned[d.Tap] = true
		}
	}
	// A tap whose run dir is unreadable cannot be judged.
	if dirsErr == nil {
		var idle []Tap
		for _, t := range taps {
			switch {
			case owned[t.Name]:
			case orphaned[t.Name]:
				s.Taps = append(s.Taps, t)
			case t.Pooled, t.InUse, t.Carrier:
			default:
				idle = append(idle, t)
			}
		}
		if len(idle) <= src.PoolSize {
			for _, t := range idle {
				s.Idle = append(s.Idle, t.Name)
			}
		} else {
			s.Taps = append(s.Taps, idle...)
		}
	} else if s.TapsErr == nil {
		s.TapsErr = dirsErr
	}
	for _, r := range rules {
		if !addrs[r.Addr.Unmap()] {
			s.Rules = append(s.Rules, r)
		}
	}
	return s
}

// staleChecks renders what FindStale found, with the commands that remove
// it. sudo prefixes the commands that need root when not running as root.
func staleChecks(s Stale, db string, euid int) []Check {
	sudo := ""
	if euid != 0 {
		sudo = "sudo "
	}
	skipped := func(name string, err error) (Check, bool) {
		switch {
		case err == nil:
			return Check{}, false
		case errors.Is(err, ErrNeedsPrivilege):
			return Check{Name: name, Status: Skip, Detail: "not checked: needs root or the helper"}, true
		}
		return Check{Name: name, Status: Warn, Detail: "not checked: " + err.Error()}, true
	}
	var out []Check

	// Taps.
	if c, ok := skipped("stale taps", s.TapsErr); ok {
		out = append(out, c)
	} else if len(s.Taps) == 0 {
		d := "no tap left over by a deleted VM"
		if len(s.Idle) > 0 {
			d += fmt.Sprintf(" (idle, taken to be the daemon's warm pool: %s)", strings.Join(s.Idle, ", "))
		}
		out = append(out, Check{Name: "stale taps", Status: Pass, Detail: d})
	} else {
		var names, cmds []string
		for _, t := range s.Taps {
			names = append(names, t.Name)
			cmds = append(cmds, sudo+"ip link del "+t.Name)
		}
		out = append(out, Check{Name: "stale taps", Status: Warn,
			Detail: fmt.Sprintf("taps no VM in %s uses: %s (a daemon refills its warm pool on demand)", db, strings.Join(names, ", ")),
			Fix:    strings.Join(cmds, "; ")})
	}

	// NAT rules.
	if c, ok := skipped("stale nat", s.RulesErr); ok {
		out = append(out, c)
	} else if len(s.Rules) == 0 {
		out = append(out, Check{Name: "stale nat", Status: Pass, Detail: "no nftables rule for an address no VM has"})
	} else {
		var addrs, cmds []string
		var unknown []NATRule
		for _, r := range s.Rules {
			if a := r.Addr.String(); !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
			if r.Handle == 0 || r.Chain == "" {
				unknown = append(unknown, r)
				continue
			}
			cmds = append(cmds, fmt.Sprintf("%snft delete rule ip %s %s handle %d", sudo, r.Table, r.Chain, r.Handle))
		}
		if len(unknown) > 0 {
			cmds = append(cmds, fmt.Sprintf("%snft -a list table ip %s, then %snft delete rule ip %s CHAIN handle N for each rule with ip saddr %s",
				sudo, unknown[0].Table, sudo, unknown[0].Table, joinAddrs(unknown)))
		}
		out = append(out, Check{Name: "stale nat", Status: Warn,
			Detail: fmt.Sprintf("banger's nftables table has NAT rules for addresses no VM in %s has: %s (a new VM given that address would get NAT it did not ask for; the next start or stop of a VM with --nat rewrites the rules)", db, strings.Join(addrs, ", ")),
			Fix:    strings.Join(cmds, "; ")})
	}

	// Directories, and the VMMs still running in them.
	if c, ok := skipped("stale dirs", s.DirsErr); ok {
		out = append(out, c)
		out = append(out, Check{Name: "stale vmms", Status: c.Status, Detail: c.Detail})
		return out
	}
	var kills []string
	for _, p := range s.VMMs {
		kills = append(kills, fmt.Sprintf("kill %d", p.PID))
	}
	if len(s.Dirs) == 0 {
		out = append(out, Check{Name: "stale dirs", Status: Pass, Detail: "no VM directory without a VM"})
	} else {
		var paths []string
		var size int64
		for _, d := range s.Dirs {
			paths = append(paths, d.Path)
			size += d.Bytes
		}
		detail := fmt.Sprintf("directories of VMs not in %s: %s", db, strings.Join(paths, ", "))
		if size > 0 {
			detail += fmt.Sprintf(" (%s of disk)", gib(uint64(size)))
		}
		out = append(out, Check{Name: "stale dirs", Status: Warn, Detail: detail,
			Fix: strings.Join(append(slices.Clone(kills), "rm -r "+strings.Join(paths, " ")), "; ")})
	}
	if len(s.VMMs) == 0 {
		out = append(out, Check{Name: "stale vmms", Status: Pass, Detail: "no VMM process of a deleted VM"})
	} else {
		var pids []string
		for _, p := range s.VMMs {
			pids = append(pids, fmt.Sprintf("%d (%s)", p.PID, p.PIDFile))
		}
		out = append(out, Check{Name: "stale vmms", Status: Warn,
			Detail: "VMM processes of VMs no longer in the store still run: pid " + strings.Join(pids, ", "),
			Fix:    strings.Join(kills, "; ")})
	}
	return out
}

func joinAddrs(rs []NATRule) string {
	var out []string
	for _, r := range rs {
		if a := r.Addr.String(); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return strings.Join(out, ", ")
}
