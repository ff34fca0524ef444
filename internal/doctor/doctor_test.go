package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/hosttools"
	"banger/internal/paths"
	"banger/internal/testenv"
)

func find(cs []Check, name string) Check {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return Check{}
}

// freshLayout isolates a whole banger installation (and the variables that
// override its config) in temp dirs.
func freshLayout(t *testing.T) paths.Layout {
	t.Helper()
	d := testenv.Isolate(t)
	t.Setenv("BANGER_HELPER_SOCKET", filepath.Join(d.Home, "helper", "helper.sock"))
	l, err := paths.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// writeConfig writes config.toml with a dns_listen nothing uses.
func writeConfig(t *testing.T, l paths.Layout, extra string) {
	t.Helper()
	if err := os.MkdirAll(l.Config, 0o700); err != nil {
		t.Fatal(err)
	}
	body := "dns_listen = \"" + freeAddr(t) + "\"\n" + extra
	if err := os.WriteFile(l.ConfigFile(), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback address whose port is free for TCP and UDP.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// A fresh install has no store yet: that is fine, but without kernels and
// images nothing can boot, and the report must say how to get them.
func TestFreshInstall(t *testing.T) {
	l := freshLayout(t)
	writeConfig(t, l, "")
	t.Setenv("BANGER_ACCEL", "tcg")
	cs := Run(context.Background(), l, Options{})
	if c := find(cs, "store"); c.Status != Pass {
		t.Errorf("missing store should pass on a fresh install: %+v", c)
	}
	if c := find(cs, "state dir"); c.Status != Pass {
		t.Errorf("state dir: %+v", c)
	}
	if c := find(cs, "accel"); c.Status != Pass {
		t.Errorf("accel forced to tcg: %+v", c)
	}
	if c := find(cs, "kernels"); c.Status != Warn || !strings.Contains(c.Fix, "banger kernel pull debian-bookworm") {
		t.Errorf("kernels: want WARN with a pull hint, got %+v", c)
	}
	if c := find(cs, "images"); c.Status != Warn || !strings.Contains(c.Fix, "banger image pull") {
		t.Errorf("images: want WARN with a pull hint, got %+v", c)
	}
	if c := find(cs, "dns"); c.Status != Pass {
		t.Errorf("dns on a free port without a daemon: %+v", c)
	}
	if c := find(cs, "ssh key"); c.Status != Warn {
		t.Errorf("missing ssh key: %+v", c)
	}
}

// The whole doctor on a fresh layout: every FAIL says how to fix it, it
// stays within a few seconds, the JSON shape is unchanged, and it creates
// nothing but the state dir (as before): no store, no runtime dir, no
// daemon, no bridge, no tap.
func TestRunFreshLayoutCreatesNothing(t *testing.T) {
	l := freshLayout(t)
	writeConfig(t, l, "")
	links := func() []string {
		ifs, err := net.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		slices.Sort(names)
		return names
	}
	before := links()

	start := time.Now()
	cs := Run(context.Background(), l, Options{})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("doctor took %s", d)
	}
	seen := map[string]bool{}
	for _, c := range cs {
		t.Logf("%s %-11s %s | fix: %s", c.Status, c.Name, c.Detail, c.Fix)
		if c.Status == Fail && c.Fix == "" {
			t.Errorf("FAIL without a fix: %+v", c)
		}
		if c.Status != Pass && c.Status != Warn && c.Status != Fail {
			t.Errorf("unknown status: %+v", c)
		}
		if seen[c.Name] {
			t.Errorf("check %q reported twice", c.Name)
		}
		seen[c.Name] = true
	}
	for _, name := range []string{"config", "qemu", "qemu-img", "e2fsprogs", "debugfs", "state dir", "disk space", "store",
		"kernels", "images", "accel", "network", "tun", "dns", "ssh key", "firecracker",
		"stale taps", "stale nat", "stale dirs", "stale vmms"} {
		if !seen[name] {
			t.Errorf("no %q check", name)
		}
	}
	if c := find(cs, "accel"); c.Status == Pass && strings.Contains(c.Detail, "probe boot just now") {
		t.Errorf("doctor probed KVM without Options.Probe: %+v", c)
	}

	// JSON keeps its shape.
	b, err := json.Marshal(cs)
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, m := range raw {
		for k := range m {
			if k != "name" && k != "status" && k != "detail" && k != "fix" {
				t.Errorf("unexpected JSON key %q", k)
			}
		}
	}

	// Only the (empty) state dir is new.
	ents, err := os.ReadDir(l.State)
	if err != nil {
		t.Fatalf("state dir: %v", err)
	}
	if len(ents) != 0 {
		t.Errorf("state dir holds %v", ents)
	}
	if _, err := os.Stat(l.Runtime); !os.IsNotExist(err) {
		t.Errorf("runtime dir created: %v", err)
	}
	if ents, _ := os.ReadDir(l.Config); len(ents) != 1 {
		t.Errorf("config dir holds %v", ents)
	}
	if after := links(); !slices.Equal(before, after) {
		t.Errorf("network links changed: %v -> %v", before, after)
	}
	cfg, _ := config.Load(l.ConfigFile())
	if _, err := os.Stat(cfg.HelperSocket); !os.IsNotExist(err) {
		t.Errorf("helper socket dir touched: %v", err)
	}
}

func TestCheckTool(t *testing.T) {
	// Debian's PATH for ordinary users: no sbin directory. The tools are
	// in a directory searched after PATH, as /usr/sbin is.
	t.Setenv("PATH", t.TempDir())
	sbin := t.TempDir()
	mkfs := filepath.Join(sbin, "mkfs.ext4")
	if err := os.WriteFile(mkfs, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	find := hosttools.Finder{Extra: []string{sbin}}.Path
	if c := checkTool(find, "e2fsprogs", "mkfs.ext4", Fail); c.Status != Pass || c.Detail != mkfs {
		t.Errorf("tool off PATH but in sbin: %+v", c)
	}
	c := checkTool(find, "qemu-img", "qemu-img", Fail)
	if c.Status != Fail || c.Fix != "apt-get install qemu-utils" ||
		!strings.Contains(c.Detail, "qemu-img not found (install Debian package qemu-utils)") {
		t.Errorf("missing tool: %+v", c)
	}
	if c := checkTool(find, "debugfs", "debugfs", Warn); c.Status != Warn || c.Fix != "apt-get install e2fsprogs" {
		t.Errorf("debugfs missing: %+v", c)
	}
}

// The whole doctor as a non-root user without a helper (whoever runs the
// tests): user-mode networking, rules skipped, the accel verdict from the
// device alone.
func TestRunAsUserWithoutHelper(t *testing.T) {
	l := freshLayout(t)
	writeConfig(t, l, "")
	h := realHost()
	h.euid = 1000
	h.newHelper = func(string) helperClient { return fakeHelper{err: errors.New("dial: connection refused")} }
	h.openKVM = func() error { return syscall.EACCES }
	h.probeKVM = func(context.Context, string, string) (bool, string, error) {
		t.Error("probed without Options.Probe")
		return false, "", nil
	}
	cs := run(context.Background(), l, Options{}, h)
	if c := find(cs, "network"); c.Status != Warn || !strings.Contains(c.Fix, "sudo banger system install") {
		t.Errorf("network: %+v", c)
	}
	if c := find(cs, "tun"); c.Status != Pass {
		t.Errorf("tun is not needed for user-mode networking: %+v", c)
	}
	if c := find(cs, "stale nat"); c.Status != Skip || c.Detail != "not checked: needs root or the helper" {
		t.Errorf("stale nat: %+v", c)
	}
	if c := find(cs, "accel"); c.Status != Warn || !strings.HasPrefix(c.Detail, "TCG fallback in effect") {
		t.Errorf("accel: %+v", c)
	}
	for _, c := range cs {
		if c.Status == Fail && c.Fix == "" {
			t.Errorf("FAIL without a fix: %+v", c)
		}
	}
}
