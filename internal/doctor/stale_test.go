package doctor

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/config"
	"banger/internal/network"
	"banger/internal/paths"
)

type fakeLinks struct {
	taps []Tap
	err  error
	log  *[]string
}

func (f fakeLinks) ListTaps(context.Context) ([]Tap, error) {
	*f.log = append(*f.log, "links")
	return f.taps, f.err
}

type fakeRules struct {
	rules []NATRule
	err   error
	log   *[]string
}

func (f fakeRules) ListNATRules(context.Context) ([]NATRule, error) {
	*f.log = append(*f.log, "rules")
	return f.rules, f.err
}

type fakeDirs struct {
	dirs []VMDir
	err  error
	log  *[]string
}

func (f fakeDirs) ListVMDirs(context.Context) ([]VMDir, error) {
	*f.log = append(*f.log, "dirs")
	return f.dirs, f.err
}

type fakeVMs struct {
	vms []VMRef
	err error
	log *[]string
}

func (f fakeVMs) VMs(context.Context) ([]VMRef, error) {
	if f.log != nil {
		*f.log = append(*f.log, "vms")
	}
	return f.vms, f.err
}

func configWithPool(n int) config.Config {
	c := config.Default()
	c.TapPoolSize = n
	return c
}

func layoutIn(t *testing.T) paths.Layout {
	d := t.TempDir()
	return paths.Layout{State: filepath.Join(d, "state"), Config: filepath.Join(d, "config"), Runtime: filepath.Join(d, "run")}
}

func names(taps []Tap) []string {
	var out []string
	for _, t := range taps {
		out = append(out, t.Name)
	}
	return out
}

// staleWorld: vm1 (running, tap bgtap0, 172.16.0.2) and vm2 (stopped,
// 172.16.0.3) are in the store; VM "gone" was deleted but left its run dir
// (tap bgtap1, a live QEMU) and VM "gone2" its disks.
func staleWorld(log *[]string, poolSize int) StaleSources {
	return StaleSources{
		Links: fakeLinks{log: log, taps: []Tap{
			{Name: "bgtap0", Carrier: true}, // vm1's
			{Name: "bgtap1", Carrier: true}, // recorded by the deleted VM
			{Name: "bgtap2"},                // idle
			{Name: "bgtap3"},                // idle
			{Name: "bgtap4", Carrier: true}, // held by something unknown
			{Name: "bgtap5", Pooled: true},  // the helper's pool
			{Name: "bgtap6", InUse: true},   // handed out by the helper
		}},
		Rules: fakeRules{log: log, rules: []NATRule{
			{Table: "banger", Chain: "forward", Handle: 4, Addr: netip.MustParseAddr("172.16.0.2")},
			{Table: "banger", Chain: "postrouting", Handle: 6, Addr: netip.MustParseAddr("172.16.0.2")},
			{Table: "banger", Chain: "forward", Handle: 5, Addr: netip.MustParseAddr("172.16.0.9")},
			{Table: "banger", Chain: "postrouting", Handle: 7, Addr: netip.MustParseAddr("172.16.0.9")},
		}},
		Dirs: fakeDirs{log: log, dirs: []VMDir{
			{ID: "vm1", Path: "/run/banger/vms/vm1", Runtime: true, Tap: "bgtap0", VMMs: []VMM{{PID: 100, PIDFile: "/run/banger/vms/vm1/qemu.pid"}}},
			{ID: "vm1", Path: "/state/banger/vms/vm1", Bytes: 1 << 30},
			{ID: "vm2", Path: "/state/banger/vms/vm2"},
			{ID: "gone", Path: "/run/banger/vms/gone", Runtime: true, Tap: "bgtap1", VMMs: []VMM{{PID: 4242, PIDFile: "/run/banger/vms/gone/qemu.pid"}}},
			{ID: "gone2", Path: "/state/banger/vms/gone2", Bytes: 3 << 30},
		}},
		VMs: fakeVMs{log: log, vms: []VMRef{
			{ID: "vm1", Name: "otter", IP: "172.16.0.2"},
			{ID: "vm2", Name: "lynx", IP: "172.16.0.3"},
		}},
		PoolSize: poolSize,
	}
}

func TestFindStale(t *testing.T) {
	ctx := context.Background()
	var log []string
	s := FindStale(ctx, staleWorld(&log, 1))
	if i := slices.Index(log, "vms"); i != len(log)-1 {
		t.Errorf("the store must be read last (a VM created meanwhile would look orphaned): %v", log)
	}
	if got := names(s.Taps); !slices.Equal(got, []string{"bgtap1", "bgtap2", "bgtap3"}) {
		t.Errorf("stale taps %v, want the deleted VM's and the idle ones beyond the pool", got)
	}
	var addrs []string
	for _, r := range s.Rules {
		addrs = append(addrs, r.Addr.String())
	}
	if !slices.Equal(addrs, []string{"172.16.0.9", "172.16.0.9"}) {
		t.Errorf("stale rules %v", addrs)
	}
	var dirs []string
	for _, d := range s.Dirs {
		dirs = append(dirs, d.Path)
	}
	if !slices.Equal(dirs, []string{"/run/banger/vms/gone", "/state/banger/vms/gone2"}) {
		t.Errorf("stale dirs %v", dirs)
	}
	if len(s.VMMs) != 1 || s.VMMs[0].PID != 4242 {
		t.Errorf("stale vmms %+v", s.VMMs)
	}

	cs := staleChecks(s, "/state/banger.db", 1000)
	want := map[string][]string{
		"stale taps": {"sudo ip link del bgtap1", "sudo ip link del bgtap2", "sudo ip link del bgtap3"},
		"stale nat":  {"sudo nft delete rule ip banger forward handle 5", "sudo nft delete rule ip banger postrouting handle 7"},
		"stale dirs": {"kill 4242", "rm -r /run/banger/vms/gone /state/banger/vms/gone2"},
		"stale vmms": {"kill 4242"},
	}
	for name, cmds := range want {
		c := find(cs, name)
		if c.Status != Warn {
			t.Errorf("%s: %+v", name, c)
		}
		for _, cmd := range cmds {
			if !strings.Contains(c.Fix, cmd) {
				t.Errorf("%s: fix %q lacks %q", name, c.Fix, cmd)
			}
		}
	}
	for _, live := range []string{"bgtap0", "bgtap4", "bgtap5", "bgtap6", "172.16.0.2", "vm1", "vm2", "kill 100"} {
		for _, c := range cs {
			if strings.Contains(c.Fix, live) {
				t.Errorf("%s: fix %q touches %s, which is in use", c.Name, c.Fix, live)
			}
		}
	}
	if c := find(cs, "stale dirs"); !strings.Contains(c.Detail, "3.0 GiB") {
		t.Errorf("stale dirs should say the space: %q", c.Detail)
	}

	// Within the pool size, idle taps are the daemon's warm pool.
	log = nil
	s = FindStale(ctx, staleWorld(&log, 2))
	if got := names(s.Taps); !slices.Equal(got, []string{"bgtap1"}) || !slices.Equal(s.Idle, []string{"bgtap2", "bgtap3"}) {
		t.Errorf("pool-size idle taps: stale %v idle %v", got, s.Idle)
	}
}

func TestFindStaleNothing(t *testing.T) {
	var log []string
	src := StaleSources{
		Links: fakeLinks{log: &log, taps: []Tap{{Name: "bgtap0", Carrier: true}}},
		Rules: fakeRules{log: &log, rules: []NATRule{{Table: "banger", Chain: "postrouting", Handle: 3, Addr: netip.MustParseAddr("172.16.0.2")}}},
		Dirs:  fakeDirs{log: &log, dirs: []VMDir{{ID: "vm1", Path: "/run/vms/vm1", Runtime: true, Tap: "bgtap0"}}},
		VMs:   fakeVMs{log: &log, vms: []VMRef{{ID: "vm1", IP: "172.16.0.2"}}},
	}
	for _, c := range staleChecks(FindStale(context.Background(), src), "DB", 0) {
		if c.Status != Pass || c.Fix != "" {
			t.Errorf("nothing stale: %+v", c)
		}
	}
}

// Without root or the helper the rules are skipped, not failed; an
// unreadable store judges nothing.
func TestFindStaleSkipped(t *testing.T) {
	ctx := context.Background()
	var log []string
	src := staleWorld(&log, 0)
	src.Rules = fakeRules{log: &log, err: ErrNeedsPrivilege}
	cs := staleChecks(FindStale(ctx, src), "DB", 1000)
	if c := find(cs, "stale nat"); c.Status != Skip || c.Detail != "not checked: needs root or the helper" {
		t.Errorf("rules without privilege: %+v", c)
	}
	if c := find(cs, "stale taps"); c.Status != Warn {
		t.Errorf("taps are still listed: %+v", c)
	}

	src = staleWorld(&log, 0)
	src.VMs = fakeVMs{err: errors.New("database is locked")}
	for _, c := range staleChecks(FindStale(ctx, src), "DB", 1000) {
		if c.Status != Warn || c.Fix != "" || !strings.Contains(c.Detail, "database is locked") {
			t.Errorf("unreadable store must judge nothing: %+v", c)
		}
	}

	// Unreadable dirs: taps cannot be judged either.
	src = staleWorld(&log, 0)
	src.Dirs = fakeDirs{log: &log, err: os.ErrPermission}
	s := FindStale(ctx, src)
	if len(s.Taps) != 0 || s.TapsErr == nil {
		t.Errorf("taps judged without the run dirs: %+v", s)
	}
}

// Rules read through the helper have no handle: the fix says how to find
// them.
func TestStaleRulesWithoutHandles(t *testing.T) {
	s := Stale{Rules: []NATRule{{Table: "banger", Addr: netip.MustParseAddr("172.16.0.7")}}}
	c := find(staleChecks(s, "DB", 1000), "stale nat")
	if c.Status != Warn || !strings.Contains(c.Fix, "sudo nft -a list table ip banger") || !strings.Contains(c.Fix, "172.16.0.7") {
		t.Errorf("helper rules: %+v", c)
	}
}

// The real directory lister: run dirs with their tap and live VMM, state
// dirs with their size.
func TestFSDirs(t *testing.T) {
	l := layoutIn(t)
	run := l.VMRunDir("gone")
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(run, "tap"), []byte("bgtap7\n"), 0o600)
	// This test process stands in for a VMM: its pid file is in the run
	// dir, but its command line does not name the dir, so it is not one.
	os.WriteFile(filepath.Join(run, "qemu.pid"), []byte("1\n"), 0o600)
	state := l.VMDir("gone2")
	os.MkdirAll(state, 0o700)
	os.WriteFile(filepath.Join(state, "root.qcow2"), make([]byte, 64<<10), 0o600)

	dirs, err := fsDirs{l}.ListVMDirs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 {
		t.Fatalf("dirs %+v", dirs)
	}
	if d := dirs[0]; d.ID != "gone" || !d.Runtime || d.Tap != "bgtap7" || len(d.VMMs) != 0 {
		t.Errorf("run dir %+v", d)
	}
	if d := dirs[1]; d.ID != "gone2" || d.Runtime || d.Bytes < 64<<10 {
		t.Errorf("state dir %+v", d)
	}

	// No vms dirs at all: nothing, no error.
	if dirs, err := (fsDirs{layoutIn(t)}).ListVMDirs(context.Background()); err != nil || len(dirs) != 0 {
		t.Errorf("empty layout: %v %v", dirs, err)
	}
}

func TestIsTapName(t *testing.T) {
	for name, want := range map[string]bool{"bgtap0": true, "bgtap12": true, "bgtap": false, "bgtap01": false, "bgtapx": false, "banger0": false} {
		if network.IsTapName("bgtap", name) != want {
			t.Errorf("IsTapName(%q) != %v", name, want)
		}
	}
}
