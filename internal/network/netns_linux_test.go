package network

import (
	"context"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Every test that touches the kernel runs inside network namespaces it
// creates: enterTestNetNS moves the test goroutine's (locked) thread into a
// fresh namespace, where the Host under test is created, and newNetNS makes
// further namespaces (guest, uplink) without entering them. No test sends a
// packet outside loopback and these namespaces.

// requireRoot skips tests that need CAP_NET_ADMIN.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, links and nftables rules (CI runs as root)")
	}
}

// enterTestNetNS locks the test goroutine to its OS thread and moves that
// thread into a new network namespace until the test ends.
func enterTestNetNS(t *testing.T) netns.NsHandle {
	t.Helper()
	requireRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it is discarded with the goroutine.
			t.Errorf("restore netns: %v", err)
			return
		}
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	})
	// The loopback of a new namespace is down.
	lo, err := netlink.LinkByName("lo")
	if err != nil || netlink.LinkSetUp(lo) != nil {
		t.Fatalf("set lo up: %v", err)
	}
	return ns
}

// newNetNS creates a network namespace (with lo up) without entering it.
func newNetNS(t *testing.T) netns.NsHandle {
	t.Helper()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.New()
		if err == nil {
			var lo netlink.Link
			if lo, err = netlink.LinkByName("lo"); err == nil {
				err = netlink.LinkSetUp(lo)
			}
		}
		ch <- result{ns, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("new netns: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	return r.ns
}

// inNetNS runs fn on a throwaway thread inside ns. Sockets created there stay
// in ns after fn returns.
func inNetNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// newTestHost creates a Host in the test's namespace (the calling thread's,
// see enterTestNetNS) and tears it down when the test ends.
func newTestHost(t *testing.T, cfg Config) *host {
	t.Helper()
	h, err := NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Teardown(context.Background()); err != nil {
			t.Errorf("cleanup teardown: %v", err)
		}
	})
	return h.(*host)
}

// pauseRefill stops the background pool refill until the next EnsureBridge,
// so a test can observe the pool without racing it.
func pauseRefill(h *host) {
	h.mu.Lock()
	h.stopRefill = true
	h.mu.Unlock()
	h.refills.Wait()
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
