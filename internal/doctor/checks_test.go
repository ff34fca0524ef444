package doctor

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"golang.org/x/crypto/ssh"

	"banger/internal/network"
	"banger/internal/privhelper"
)

func TestDiskThresholds(t *testing.T) {
	const gb = 1 << 30
	for _, tc := range []struct {
		avail uint64
		want  Status
	}{
		{50 * gb, Pass},
		{10 * gb, Pass},
		{10*gb - 1, Warn},
		{3 * gb, Warn},
		{2 * gb, Warn},
		{2*gb - 1, Fail},
		{0, Fail},
	} {
		c := checkDisk(t.TempDir(), func(string) (uint64, uint64, error) { return tc.avail, 100 * gb, nil })
		if c.Status != tc.want {
			t.Errorf("%d bytes free: got %+v, want %s", tc.avail, c, tc.want)
		}
		if c.Status != Pass && c.Fix == "" {
			t.Errorf("%d bytes free: no fix: %+v", tc.avail, c)
		}
		if !strings.Contains(c.Detail, "GiB free of 100.0 GiB") {
			t.Errorf("detail lacks the numbers: %q", c.Detail)
		}
	}

	// A state dir that does not exist yet: its nearest existing parent.
	base := t.TempDir()
	var asked string
	checkDisk(filepath.Join(base, "a", "b"), func(p string) (uint64, uint64, error) {
		asked = p
		return 20 * gb, 100 * gb, nil
	})
	if asked != base {
		t.Errorf("statfs asked about %q, want %q", asked, base)
	}
	if c := checkDisk(base, func(string) (uint64, uint64, error) { return 0, 0, syscall.EIO }); c.Status != Warn {
		t.Errorf("statfs error: %+v", c)
	}
}

func writeKey(t *testing.T, path string, mode os.FileMode, passphrase string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var block *pem.Block
	if passphrase != "" {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "test", []byte(passphrase))
	} else {
		block, err = ssh.MarshalPrivateKey(priv, "test")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, mode)
}

func TestSSHKey(t *testing.T) {
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing")
	if c := checkSSHKey(missing); c.Status != Warn || !strings.Contains(c.Detail, "created on first use") {
		t.Errorf("missing key: %+v", c)
	}

	good := filepath.Join(dir, "good")
	writeKey(t, good, 0o600, "")
	if c := checkSSHKey(good); c.Status != Pass || !strings.Contains(c.Detail, "ssh-ed25519") {
		t.Errorf("good key: %+v", c)
	}

	open := filepath.Join(dir, "open")
	writeKey(t, open, 0o644, "")
	if c := checkSSHKey(open); c.Status != Fail || c.Fix != "chmod 600 "+open {
		t.Errorf("0644 key: %+v", c)
	}

	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("not a key\n"), 0o600)
	if c := checkSSHKey(garbage); c.Status != Fail || c.Fix == "" || strings.Contains(c.Fix, "chmod") {
		t.Errorf("garbage key: %+v", c)
	}

	locked := filepath.Join(dir, "locked")
	writeKey(t, locked, 0o600, "secret")
	if c := checkSSHKey(locked); c.Status != Fail || !strings.Contains(c.Detail, "passphrase") {
		t.Errorf("passphrase key: %+v", c)
	}

	if c := checkSSHKey(dir); c.Status != Fail || c.Fix == "" {
		t.Errorf("directory as key: %+v", c)
	}
}

// serveDNS answers every query with NXDOMAIN on a UDP port of loopback.
func serveDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &miekg.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: miekg.HandlerFunc(func(w miekg.ResponseWriter, r *miekg.Msg) {
			m := new(miekg.Msg)
			m.SetRcode(r, miekg.RcodeNameError)
			w.WriteMsg(m)
		})}
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestDNS(t *testing.T) {
	ctx := context.Background()

	// The daemon runs and its resolver answers.
	addr := serveDNS(t)
	if c := checkDNS(ctx, addr, true, "CONFIG", time.Second); c.Status != Pass || !strings.Contains(c.Detail, "NXDOMAIN") {
		t.Errorf("resolver answering NXDOMAIN: %+v", c)
	}

	// The daemon runs, but what holds the port never answers.
	mute, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	start := time.Now()
	c := checkDNS(ctx, mute.LocalAddr().String(), true, "CONFIG", time.Second)
	if c.Status != Fail || c.Fix == "" {
		t.Errorf("mute socket: %+v", c)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("mute socket took %s", d)
	}

	// No daemon, free port.
	if c := checkDNS(ctx, freeAddr(t), false, "CONFIG", time.Second); c.Status != Pass {
		t.Errorf("free port: %+v", c)
	}

	// No daemon, port taken by someone else.
	c = checkDNS(ctx, mute.LocalAddr().String(), false, "CONFIG", time.Second)
	if c.Status != Fail || !strings.Contains(c.Fix, "dns_listen") || !strings.Contains(c.Fix, "CONFIG") {
		t.Errorf("taken port: %+v", c)
	}
	// ...by something that answers like banger.
	c = checkDNS(ctx, addr, false, "CONFIG", time.Second)
	if c.Status != Fail {
		t.Errorf("port taken by a resolver: %+v", c)
	}
}

// fakeHelper answers like a helper, or fails, or hangs.
type fakeHelper struct {
	cfg   network.Config
	state network.State
	err   error
	hang  time.Duration
}

func (f fakeHelper) Config(ctx context.Context) (network.Config, error) {
	time.Sleep(f.hang)
	return f.cfg, f.err
}

func (f fakeHelper) State(ctx context.Context) (network.State, error) {
	time.Sleep(f.hang)
	return f.state, f.err
}

func TestNetwork(t *testing.T) {
	ctx := context.Background()
	noLink := func(string) (string, error) { return "", nil }
	const uid = 1000

	c, bridged := checkNetwork(netInput{mode: "user", euid: uid, linkType: noLink})
	if c.Status != Pass || bridged {
		t.Errorf("user mode: %+v %v", c, bridged)
	}

	// Not root, helper unreachable (a real client on a socket that does
	// not exist): user-mode networking, and how to get the bridge.
	sock := filepath.Join(t.TempDir(), "helper.sock")
	hv := askHelper(ctx, privhelper.NewClient(sock), sock, time.Second)
	c, bridged = checkNetwork(netInput{mode: "auto", euid: uid, helper: &hv, linkType: noLink, configFile: "CONFIG"})
	if c.Status != Warn || bridged || !strings.Contains(c.Detail, "user-mode networking") || !strings.Contains(c.Fix, "sudo banger system install") {
		t.Errorf("auto, helper unreachable: %+v", c)
	}
	c, _ = checkNetwork(netInput{mode: "bridge", euid: uid, helper: &hv, linkType: noLink, configFile: "CONFIG"})
	if c.Status != Fail || !strings.Contains(c.Fix, "sudo banger system install") {
		t.Errorf("bridge, helper unreachable: %+v", c)
	}

	// The helper refuses this user.
	hv = askHelper(ctx, fakeHelper{err: &privhelper.Error{Op: "state", Code: privhelper.CodeForbidden, Message: "no"}}, sock, time.Second)
	c, _ = checkNetwork(netInput{mode: "auto", euid: uid, helper: &hv, linkType: noLink})
	if c.Status != Warn || !strings.Contains(c.Fix, "--allow-uid 1000") {
		t.Errorf("forbidden: %+v", c)
	}

	// A helper that accepts and never answers is given up on in time.
	start := time.Now()
	hv = askHelper(ctx, fakeHelper{hang: 3 * time.Second}, sock, 200*time.Millisecond)
	if d := time.Since(start); d > time.Second || hv.err == nil {
		t.Errorf("hanging helper: %v after %s", hv.err, d)
	}

	// The helper's taps belong to someone else.
	hv = askHelper(ctx, fakeHelper{cfg: network.Config{TapOwner: 0}.WithDefaults()}, sock, time.Second)
	c, bridged = checkNetwork(netInput{mode: "auto", euid: uid, helper: &hv, linkType: noLink})
	if c.Status != Fail || !bridged || !strings.Contains(c.Fix, "--tap-owner 1000") {
		t.Errorf("tap owner: %+v", c)
	}

	// Root: the bridge is made on demand, but a non-bridge link of its
	// name is in the way.
	c, bridged = checkNetwork(netInput{mode: "auto", euid: 0, bridge: "banger0", linkType: noLink})
	if c.Status != Pass || !bridged {
		t.Errorf("root without bridge: %+v", c)
	}
	c, _ = checkNetwork(netInput{mode: "auto", euid: 0, bridge: "banger0", linkType: func(string) (string, error) { return "bridge", nil }})
	if c.Status != Pass {
		t.Errorf("root with bridge: %+v", c)
	}
	c, _ = checkNetwork(netInput{mode: "bridge", euid: 0, bridge: "banger0", linkType: func(string) (string, error) { return "veth", nil }})
	if c.Status != Fail || !strings.Contains(c.Fix, "ip link del banger0") {
		t.Errorf("root, link in the way: %+v", c)
	}
}

// A real helper server (over a fake network host) answers the doctor's
// state calls through the real client.
func TestNetworkHelperReachable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	uid := os.Geteuid()
	ncfg := network.Config{TapOwner: uid}.WithDefaults()
	fake := network.NewFake(ncfg)
	if err := fake.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	if err := fake.SetNAT(ctx, []netip.Addr{netip.MustParseAddr("172.16.0.9")}); err != nil {
		t.Fatal(err)
	}
	srv, err := privhelper.NewServer(privhelper.Options{Host: fake, Config: ncfg, AllowUID: uid})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "helper.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	defer func() { cancel(); <-done; srv.Close() }()

	hv := askHelper(ctx, privhelper.NewClient(sock), sock, 2*time.Second)
	if hv.err != nil || hv.stateErr != nil {
		t.Fatalf("helper: %v / %v", hv.err, hv.stateErr)
	}
	c, bridged := checkNetwork(netInput{mode: "auto", euid: uid, helper: &hv, linkType: func(string) (string, error) { return "", nil }})
	if uid != 0 && (c.Status != Pass || !bridged || !strings.Contains(c.Detail, sock)) {
		t.Errorf("helper reachable: %+v", c)
	}
	// Non-root, the helper's state is where the NAT rules come from.
	src := realStaleSources(configWithPool(2), layoutIn(t), 1000, &hv, fakeVMs{})
	rules, err := src.Rules.ListNATRules(ctx)
	if err != nil || len(rules) != 1 || rules[0].Addr != netip.MustParseAddr("172.16.0.9") || rules[0].Handle != 0 {
		t.Errorf("rules through the helper: %+v %v", rules, err)
	}
	if src.PoolSize != 0 {
		t.Errorf("the helper names its pool; pool tolerance %d", src.PoolSize)
	}
}

func TestTun(t *testing.T) {
	fail := func() error { return &fs.PathError{Op: "open", Path: "/dev/net/tun", Err: syscall.ENOENT} }
	if c := checkTun(fail, false, 1000); c.Status != Pass {
		t.Errorf("not bridged: %+v", c)
	}
	if c := checkTun(fail, true, 0); c.Status != Fail || !strings.Contains(c.Fix, "modprobe tun") {
		t.Errorf("root, no tun: %+v", c)
	}
	if c := checkTun(func() error { return syscall.EACCES }, true, 1000); c.Status != Fail || !strings.Contains(c.Fix, "chmod 0666 /dev/net/tun") {
		t.Errorf("user, tun not accessible: %+v", c)
	}
	if c := checkTun(func() error { return nil }, true, 1000); c.Status != Pass {
		t.Errorf("tun usable: %+v", c)
	}
}

func TestKVM(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	qemuBin := filepath.Join(dir, "qemu-system-x86_64")
	os.WriteFile(qemuBin, []byte("#!/bin/sh\n"), 0o755)
	lookPath := func(string) (string, error) { return qemuBin, nil }
	cache := filepath.Join(dir, kvmCacheFile)
	writeCache := func(m map[string]kvmVerdict) {
		b, _ := json.Marshal(m)
		if err := os.WriteFile(cache, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	devOK := func() error { return nil }
	in := func(accel string) kvmInput {
		return kvmInput{accel: accel, qemu: "qemu-system-x86_64", kernels: []string{kernel}, lookPath: lookPath,
			cacheFile: cache, configFile: "CONFIG", openDev: devOK}
	}
	key := kvmCacheKey(kernel, "qemu-system-x86_64", lookPath)

	// accel = tcg: no probe, no device needed.
	i := in("tcg")
	i.openDev = func() error { return syscall.ENOENT }
	if c := checkKVM(ctx, i); c.Status != Pass || !strings.Contains(c.Detail, "tcg") {
		t.Errorf("tcg: %+v", c)
	}

	// No /dev/kvm.
	i = in("auto")
	i.openDev = func() error { return &fs.PathError{Op: "open", Path: "/dev/kvm", Err: syscall.ENOENT} }
	if c := checkKVM(ctx, i); c.Status != Warn || !strings.HasPrefix(c.Detail, "TCG fallback in effect") || c.Fix == "" {
		t.Errorf("auto, no device: %+v", c)
	}
	i.accel = "kvm"
	i.openDev = func() error { return &fs.PathError{Op: "open", Path: "/dev/kvm", Err: syscall.EACCES} }
	if c := checkKVM(ctx, i); c.Status != Fail || !strings.Contains(c.Fix, "usermod -aG kvm") {
		t.Errorf("kvm, device not accessible: %+v", c)
	}

	// Device fine, nothing cached: not probed yet, and no probe run.
	i = in("auto")
	i.probe = nil
	if c := checkKVM(ctx, i); c.Status != Warn || !strings.Contains(c.Detail, "not probed yet") || !strings.Contains(c.Fix, "--probe") {
		t.Errorf("no cache: %+v", c)
	}

	// Cached good verdict.
	writeCache(map[string]kvmVerdict{key: {OK: true, Detail: "guest kernel booted under kvm in 300ms"}})
	if c := checkKVM(ctx, in("auto")); c.Status != Pass || !strings.Contains(c.Detail, "cached") {
		t.Errorf("cached ok: %+v", c)
	}

	// Cached bad verdict: TCG fallback under auto, failure under kvm.
	writeCache(map[string]kvmVerdict{key: {OK: false, Detail: "no sign of the guest kernel booting under kvm within 15s"}})
	c := checkKVM(ctx, in("auto"))
	if c.Status != Warn || !strings.HasPrefix(c.Detail, "TCG fallback in effect: /dev/kvm exists but a probe boot under KVM failed") ||
		!strings.Contains(c.Detail, "VMs run under TCG (slower)") {
		t.Errorf("cached failure, auto: %+v", c)
	}
	if !strings.Contains(c.Fix, "rm "+cache) {
		t.Errorf("cached failure: the fix must say how to make the daemon probe again: %q", c.Fix)
	}
	if c := checkKVM(ctx, in("kvm")); c.Status != Fail || !strings.Contains(c.Fix, `accel = "auto"`) {
		t.Errorf("cached failure, kvm: %+v", c)
	}

	// A verdict for another kernel or QEMU build does not count.
	writeCache(map[string]kvmVerdict{"/old/vmlinux|1|2|/usr/bin/qemu|3": {OK: true}})
	if c := checkKVM(ctx, in("auto")); c.Status != Warn || !strings.Contains(c.Detail, "older verdicts") {
		t.Errorf("stale cache: %+v", c)
	}

	// An unreadable cache.
	os.WriteFile(cache, []byte("{"), 0o600)
	if c := checkKVM(ctx, in("auto")); c.Status != Warn {
		t.Errorf("corrupt cache: %+v", c)
	}

	// Probe asked for: the probe decides, whatever is cached.
	writeCache(map[string]kvmVerdict{key: {OK: false, Detail: "cached failure"}})
	i = in("auto")
	var probedWith string
	i.probe = func(_ context.Context, q, k string) (bool, string, error) {
		probedWith = k
		return true, "guest kernel booted under kvm in 200ms", nil
	}
	if c := checkKVM(ctx, i); c.Status != Pass || !strings.Contains(c.Detail, "just now") || probedWith != kernel {
		t.Errorf("probe: %+v (kernel %q)", c, probedWith)
	}
	i.kernels = nil
	if c := checkKVM(ctx, i); c.Status != Warn || !strings.Contains(c.Fix, "kernel pull") {
		t.Errorf("probe without kernel: %+v", c)
	}
	i.kernels = []string{kernel}
	i.probe = func(context.Context, string, string) (bool, string, error) { return false, "", errors.New("no qemu") }
	if c := checkKVM(ctx, i); c.Status != Warn {
		t.Errorf("probe error: %+v", c)
	}
}
