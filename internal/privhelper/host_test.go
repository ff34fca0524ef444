package privhelper

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"banger/internal/network"
)

// TestRealHost (root): the helper serving the real netlink + nftables Host
// in a fresh network namespace. A client running as the allowed uid (65534)
// acquires a tap, which exists attached to the bridge and owned by 65534,
// and which 65534 can then open through /dev/net/tun as QEMU would.
func TestRealHost(t *testing.T) {
	enterTestNetNS(t)
	dir := publicDir(t)
	bin := childBinary(t, dir)
	ctx := context.Background()

	cfg := network.Config{TapPoolSize: 1, TapOwner: otherUID}
	host, err := network.NewHost(cfg) // in the test's namespace
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := host.Teardown(context.Background()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	ts := startServer(t, publicSubdir(t, dir, "real"), Options{Host: host, Config: cfg, AllowUID: otherUID})

	// Root may call as well.
	if err := ts.client.EnsureBridge(ctx); err != nil {
		t.Fatal(err)
	}
	res := runChild(t, bin, ts.socket)
	if res.Err != "" || res.Tap == "" {
		t.Fatalf("AcquireTap as uid %d: %+v", otherUID, res)
	}
	br, err := netlink.LinkByName(cfg.WithDefaults().Bridge)
	if err != nil {
		t.Fatalf("bridge: %v", err)
	}
	link, err := netlink.LinkByName(res.Tap)
	if err != nil {
		t.Fatalf("tap %s: %v", res.Tap, err)
	}
	tt, ok := link.(*netlink.Tuntap)
	switch {
	case !ok:
		t.Fatalf("%s is a %s, not a tap", res.Tap, link.Type())
	case tt.Owner != otherUID:
		t.Fatalf("tap %s owned by %d, want %d", res.Tap, tt.Owner, otherUID)
	case tt.MasterIndex != br.Attrs().Index:
		t.Fatalf("tap %s not attached to the bridge", res.Tap)
	}

	// The owner can attach to the tap without any privilege. /dev/net/tun
	// may be root-only on the test machine: use a node of our own.
	node := filepath.Join(dir, "tun")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(10, 200))); err != nil {
		t.Logf("skipping the open check: mknod %s: %v", node, err)
	} else {
		if err := unix.Chmod(node, 0o666); err != nil {
			t.Fatal(err)
		}
		opened := runChildEnv(t, bin, childTunEnv+"="+node, childTapEnv+"="+res.Tap)
		if opened.Err != "" {
			t.Fatalf("uid %d cannot open its tap %s: %s", otherUID, res.Tap, opened.Err)
		}
	}

	st, err := ts.client.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.BridgeExists || !st.BridgeUp || !st.Table || !slices.Contains(st.InUse, res.Tap) {
		t.Fatalf("State through the helper = %+v", st)
	}
	if err := ts.client.ReleaseTap(ctx, res.Tap); err != nil {
		t.Fatal(err)
	}
	if st, err = ts.client.State(ctx); err != nil || slices.Contains(st.InUse, res.Tap) {
		t.Fatalf("State after release = %+v, %v", st, err)
	}
}
