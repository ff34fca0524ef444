package network

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"banger/internal/fsutil"
)

// host is the netlink + nftables implementation of Host.
type host struct {
	cfg       Config
	sub       subnet
	bridgeMAC net.HardwareAddr
	// ns is the network namespace every operation applies to: the one that
	// was current when NewHost ran. Operations run on a throwaway OS thread
	// switched into it, so they land there whichever goroutine, thread or
	// namespace the caller (or the background refill) runs on.
	ns netns.NsHandle

	// mu serialises every change to the kernel and guards the fields below.
	mu         sync.Mutex
	pool       []string            // warm taps, oldest first
	inUse      map[string]struct{} // taps handed out and not released
	bindings   map[string]Binding  // what each tap may send (the bridge table)
	egress     Egress              // the filtered guests (SetEgress)
	loaded     bool                // bindings were read back from the kernel
	refilling  bool                // a refill goroutine is running
	stopRefill bool                // set by Teardown while it waits for the refill to stop
	poolErr    error               // last refill error
	refills    sync.WaitGroup
}

// NewHost returns the netlink + nftables Host for cfg (defaults applied). It
// operates in the network namespace of the calling thread at the time of the
// call, for all later operations, whichever goroutine calls them. It only
// checks the configuration and touches nothing in the kernel.
func NewHost(cfg Config) (Host, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new host: %w", err)
	}
	sub, err := newSubnet(cfg.CIDR)
	if err != nil {
		return nil, fmt.Errorf("new host: %w", err)
	}
	mac, err := net.ParseMAC(MACFor("bridge/" + cfg.Bridge))
	if err != nil {
		return nil, fmt.Errorf("new host: bridge mac: %w", err)
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("new host: open current network namespace: %w", err)
	}
	h := &host{cfg: cfg, sub: sub, bridgeMAC: mac, ns: ns, inUse: map[string]struct{}{}, bindings: map[string]Binding{}}
	runtime.AddCleanup(h, func(ns netns.NsHandle) { _ = ns.Close() }, ns)
	return h, nil
}

// inNS runs fn on a fresh OS thread that has entered h's network namespace.
// The thread stays locked and is discarded when fn returns, so a namespace
// switch can never leak into other goroutines.
func (h *host) inNS(fn func(nh *netlink.Handle) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		// setns needs CAP_SYS_ADMIN: skip it when the thread is already
		// there (the usual case), so the helper runs without it.
		cur, err := netns.Get()
		same := err == nil && cur.Equal(h.ns)
		if err == nil {
			cur.Close()
		}
		if !same {
			if err := netns.Set(h.ns); err != nil {
				errc <- fmt.Errorf("enter network namespace: %w", err)
				return
			}
		}
		nh, err := netlink.NewHandle()
		if err != nil {
			errc <- fmt.Errorf("open netlink: %w", err)
			return
		}
		defer nh.Close()
		errc <- fn(nh)
	}()
	return <-errc
}

// EnsureBridge implements Host.
func (h *host) EnsureBridge(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	err := h.inNS(func(nh *netlink.Handle) error {
		br, err := h.ensureBridgeLink(nh)
		if err != nil {
			return err
		}
		if err := h.ensureBridgeAddr(nh, br); err != nil {
			return err
		}
		if err := nh.LinkSetUp(br); err != nil {
			return fmt.Errorf("set bridge %q up: %w", h.cfg.Bridge, err)
		}
		// Guests are IPv4 only and the table is family ip: without IPv6 on
		// the bridge the host neither routes nor answers guests' IPv6.
		if err := writeSysctlIfExists(filepath.Join("net/ipv6/conf", h.cfg.Bridge, "disable_ipv6"), "1"); err != nil {
			return err
		}
		if err := h.recordForwarding(); err != nil {
			return err
		}
		if err := writeSysctlIfExists("net/ipv4/ip_forward", "1"); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("open nftables: %w", err)
		}
		cur, err := readTable(conn, FamilyIP, h.cfg.Table)
		if err != nil {
			return err
		}
		// Keep the NAT guests that are configured, drop anything else.
		want, err := EgressRuleset(h.cfg, guestsOf(h.sub, cur.natGuests()), h.egress)
		if err != nil {
			return err
		}
		if !cur.inSync(want) {
			if err := applyTables(conn, want); err != nil {
				return err
			}
		}
		return h.syncBridgeTable(nh, conn)
	})
	if err != nil {
		return fmt.Errorf("ensure bridge %q: %w", h.cfg.Bridge, err)
	}
	h.stopRefill = false
	h.startRefillLocked()
	return nil
}

// recordForwarding writes the current net.ipv4.ip_forward to
// Config.ForwardRecord, unless a record exists already (it holds the value
// from before banger first changed it).
func (h *host) recordForwarding() error {
	if h.cfg.ForwardRecord == "" {
		return nil
	}
	if _, err := os.Lstat(h.cfg.ForwardRecord); err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	cur, err := readSysctl("net/ipv4/ip_forward")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur != "0" && cur != "1" {
		return fmt.Errorf("net.ipv4.ip_forward is %q", cur)
	}
	if err := os.MkdirAll(filepath.Dir(h.cfg.ForwardRecord), 0o700); err != nil {
		return fmt.Errorf("record ip_forward: %w", err)
	}
	if err := fsutil.WriteFileExclusive(h.cfg.ForwardRecord, []byte(cur+"\n"), 0o600); err != nil {
		return fmt.Errorf("record ip_forward: %w", err)
	}
	return nil
}

// restoreForwarding sets net.ipv4.ip_forward back to the recorded value and
// removes the record. No record: nothing to do.
func (h *host) restoreForwarding() error {
	if h.cfg.ForwardRecord == "" {
		return nil
	}
	b, err := os.ReadFile(h.cfg.ForwardRecord)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore ip_forward: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v != "0" && v != "1" {
		return fmt.Errorf("restore ip_forward: record %s holds %q", h.cfg.ForwardRecord, v)
	}
	if err := writeSysctlIfExists("net/ipv4/ip_forward", v); err != nil {
		return fmt.Errorf("restore ip_forward: %w", err)
	}
	if err := os.Remove(h.cfg.ForwardRecord); err != nil {
		return fmt.Errorf("restore ip_forward: %w", err)
	}
	return nil
}

// loadBindings reads the taps' bindings back from the kernel once, so that a
// restarted helper keeps the running VMs' taps bound. Bindings of taps that
// no longer exist are forgotten. h.mu must be held, inside inNS.
func (h *host) loadBindings(nh *netlink.Handle, conn *nftables.Conn) error {
	if h.loaded {
		return nil
	}
	cur, err := readTable(conn, FamilyBridge, h.cfg.Table)
	if err != nil {
		return err
	}
	for tap, b := range cur.bindings() {
		if _, ok := h.bindings[tap]; ok {
			continue
		}
		if _, ok := tapIndex(h.cfg.TapPrefix, tap); !ok {
			continue
		}
		if link, err := linkByName(nh, tap); err != nil || link == nil {
			continue
		}
		if nb, err := b.normalise(h.sub); err == nil {
			h.bindings[tap] = nb
		}
	}
	h.loaded = true
	return nil
}

// syncBridgeTable makes the kernel's bridge table match h.bindings. h.mu
// must be held, inside inNS.
func (h *host) syncBridgeTable(nh *netlink.Handle, conn *nftables.Conn) error {
	if err := h.loadBindings(nh, conn); err != nil {
		return err
	}
	want, err := BridgeRuleset(h.cfg, h.bindings)
	if err != nil {
		return err
	}
	cur, err := readTable(conn, FamilyBridge, h.cfg.Table)
	if err != nil {
		return err
	}
	if cur.inSync(want) {
		return nil
	}
	return applyTables(conn, want)
}

// guestsOf keeps the addresses that are guests of sub (a table written for
// another subnet may hold others).
func guestsOf(sub subnet, addrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if sub.isGuest(a) {
			out = append(out, a)
		}
	}
	return out
}

// ensureBridgeLink returns the bridge, creating it if needed, with its fixed
// MAC address. An explicit MAC keeps the bridge from taking the lowest MAC of
// its ports, which would change (and stale every guest's ARP entry for the
// gateway) as taps come and go.
func (h *host) ensureBridgeLink(nh *netlink.Handle) (netlink.Link, error) {
	br, err := linkByName(nh, h.cfg.Bridge)
	if err != nil {
		return nil, err
	}
	if br == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = h.cfg.Bridge
		attrs.HardwareAddr = h.bridgeMAC
		if err := nh.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge: %w", err)
		}
		if br, err = linkByName(nh, h.cfg.Bridge); err != nil {
			return nil, err
		}
		if br == nil {
			return nil, fmt.Errorf("bridge vanished after creation")
		}
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("link %q exists and is a %s, not a bridge", h.cfg.Bridge, br.Type())
	}
	if !slices.Equal(br.Attrs().HardwareAddr, h.bridgeMAC) {
		if err := nh.LinkSetHardwareAddr(br, h.bridgeMAC); err != nil {
			return nil, fmt.Errorf("set bridge mac: %w", err)
		}
	}
	return br, nil
}

// ensureBridgeAddr gives the bridge exactly the configured IPv4 address.
func (h *host) ensureBridgeAddr(nh *netlink.Handle, br netlink.Link) error {
	addrs, err := addrList(nh, br)
	if err != nil {
		return err
	}
	have := false
	for _, a := range addrs {
		if p, ok := prefixOf(a); ok && p == h.cfg.CIDR {
			have = true
			continue
		}
		if err := nh.AddrDel(br, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove address %s from bridge: %w", a.IPNet, err)
		}
	}
	if have {
		return nil
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   h.cfg.CIDR.Addr().AsSlice(),
		Mask: net.CIDRMask(h.cfg.CIDR.Bits(), 32),
	}}
	if err := nh.AddrAdd(br, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add address %s to bridge: %w", h.cfg.CIDR, err)
	}
	return nil
}

// bridgeLink returns the bridge or ErrNoBridge.
func (h *host) bridgeLink(nh *netlink.Handle) (netlink.Link, error) {
	br, err := linkByName(nh, h.cfg.Bridge)
	if err != nil {
		return nil, err
	}
	if br == nil || br.Type() != "bridge" {
		return nil, fmt.Errorf("%w: %q", ErrNoBridge, h.cfg.Bridge)
	}
	return br, nil
}

// AcquireTap implements Host.
func (h *host) AcquireTap(ctx context.Context, b Binding) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("acquire tap: %w", err)
	}
	b, err := b.normalise(h.sub)
	if err != nil {
		return "", fmt.Errorf("acquire tap: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var name string
	err = h.inNS(func(nh *netlink.Handle) error {
		br, err := h.bridgeLink(nh)
		if err != nil {
			return err
		}
		if err := h.checkPending(nh); err != nil {
			return err
		}
		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("open nftables: %w", err)
		}
		if err := h.loadBindings(nh, conn); err != nil {
			return err
		}
		if name, err = h.takeTap(ctx, nh, br); err != nil {
			return err
		}
		// The tap is bound before anyone can open it, so its guest never
		// sends a frame the bridge table has not vetted.
		prev := maps.Clone(h.bindings)
		for t, o := range h.bindings {
			if o.IP == b.IP {
				delete(h.bindings, t) // an address has one tap: the newest
			}
		}
		h.bindings[name] = b
		if err := h.syncBridgeTable(nh, conn); err != nil {
			h.bindings = prev
			h.pool = append(h.pool, name) // never opened: back to the pool
			name = ""
			return fmt.Errorf("bind tap: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("acquire tap: %w", err)
	}
	h.inUse[name] = struct{}{}
	h.startRefillLocked()
	return name, nil
}

// takeTap takes a tap from the pool, or creates one. h.mu must be held.
func (h *host) takeTap(ctx context.Context, nh *netlink.Handle, br netlink.Link) (string, error) {
	for len(h.pool) > 0 {
		cand := h.pool[0]
		h.pool = h.pool[1:]
		link, err := linkByName(nh, cand)
		if err == nil && link != nil && pooledOK(link, br) {
			return cand, nil
		}
		if link != nil {
			_ = nh.LinkDel(link) // broken: never hand it out, never keep it
		}
	}
	return h.createTap(ctx, nh, br)
}

// checkPending refuses when maxPendingTaps taps are handed out and not
// opened by any process: VMs being started hold a tap only for the moment
// between AcquireTap and their VMM's start. h.mu must be held.
func (h *host) checkPending(nh *netlink.Handle) error {
	pending := 0
	for name := range h.inUse {
		if link, err := linkByName(nh, name); err == nil && link != nil && !hasCarrier(link) {
			pending++
		}
	}
	if pending >= maxPendingTaps {
		return fmt.Errorf("%w: %d taps were handed out and are not in use by any VM yet (at most %d)", ErrTapLimit, pending, maxPendingTaps)
	}
	return nil
}

// pooledOK reports whether a pooled tap is still fit to hand out: a tap,
// attached to the bridge, up, and not opened by any process (no carrier).
func pooledOK(link netlink.Link, br netlink.Link) bool {
	a := link.Attrs()
	return link.Type() == "tuntap" && a.MasterIndex == br.Attrs().Index &&
		a.Flags&net.FlagUp != 0 && !hasCarrier(link)
}

// hasCarrier reports whether a process holds the tap open: a tap without an
// attached file descriptor has no carrier.
func hasCarrier(link netlink.Link) bool {
	return link.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
}

// createTap creates the tap with the lowest free index, attaches it to br and
// brings it up; on any failure it deletes what it created.
func (h *host) createTap(ctx context.Context, nh *netlink.Handle, br netlink.Link) (string, error) {
	links, err := linkList(nh)
	if err != nil {
		return "", err
	}
	taken := map[int]bool{}
	for _, l := range links {
		if i, ok := tapIndex(h.cfg.TapPrefix, l.Attrs().Name); ok {
			taken[i] = true
		}
	}
	if len(taken) >= h.cfg.MaxTaps {
		return "", fmt.Errorf("%w: %d taps exist (at most %d)", ErrTapLimit, len(taken), h.cfg.MaxTaps)
	}
	// Never reuse a name this Host still knows, even if the link vanished:
	// its holder could release the newcomer by mistake.
	for _, n := range h.known() {
		if i, ok := tapIndex(h.cfg.TapPrefix, n); ok {
			taken[i] = true
		}
	}
	for idx, attempts := 0, 0; attempts < 8; idx++ {
		if taken[idx] {
			continue
		}
		name := tapName(h.cfg.TapPrefix, idx)
		if len(name) > ifNameMax {
			return "", fmt.Errorf("no free tap name with prefix %q", h.cfg.TapPrefix)
		}
		attempts++
		err := createTapDevice(name, h.cfg.TapOwner)
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
			continue // created concurrently by someone else: next index
		}
		if err != nil {
			return "", fmt.Errorf("create tap %q: %w", name, err)
		}
		if err := setupTap(ctx, nh, name, br); err != nil {
			if link, lerr := linkByName(nh, name); lerr == nil && link != nil {
				_ = nh.LinkDel(link)
			}
			return "", fmt.Errorf("create tap %q: %w", name, err)
		}
		return name, nil
	}
	return "", fmt.Errorf("create tap: every candidate name was taken concurrently")
}

// setupTap attaches a fresh tap to the bridge and brings it up.
func setupTap(ctx context.Context, nh *netlink.Handle, name string, br netlink.Link) error {
	link, err := linkByName(nh, name)
	if err != nil {
		return err
	}
	if link == nil {
		return fmt.Errorf("tap vanished after creation")
	}
	if err := nh.LinkSetMasterByIndex(link, br.Attrs().Index); err != nil {
		return fmt.Errorf("attach to bridge: %w", err)
	}
	if err := nh.LinkSetUp(link); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return ctx.Err()
}

// createTapDevice creates a persistent tap with /dev/net/tun (in the calling
// thread's network namespace), owned by uid owner unless owner is -1. The
// netlink library's Tuntap always sets an owner and a group (0 when unset,
// which means root), so banger makes the ioctls itself. The flags do not
// bind QEMU, which sets its own (vnet_hdr...) when it opens the tap; only
// multi-queue must match, and banger's taps are single-queue.
func createTapDevice(name string, owner int) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	defer unix.Close(fd) // a tap that did not reach TUNSETPERSIST disappears here
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_TUN_EXCL)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF: %w", err)
	}
	if owner >= 0 {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOWNER, owner); err != nil {
			return fmt.Errorf("TUNSETOWNER %d: %w", owner, err)
		}
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("TUNSETPERSIST: %w", err)
	}
	return nil
}

// ReleaseTap implements Host.
func (h *host) ReleaseTap(ctx context.Context, name string) error {
	if _, ok := tapIndex(h.cfg.TapPrefix, name); !ok {
		return fmt.Errorf("release tap %q: %w (want %s<N>)", name, ErrNotTap, h.cfg.TapPrefix)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.inUse, name)
	if slices.Contains(h.pool, name) {
		return nil
	}
	err := h.inNS(func(nh *netlink.Handle) error {
		// Unbind first: a tap that goes back to the pool sends nothing,
		// and a deleted one leaves no rule behind.
		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("open nftables: %w", err)
		}
		if err := h.loadBindings(nh, conn); err != nil {
			return err
		}
		if _, bound := h.bindings[name]; bound {
			delete(h.bindings, name)
			if err := h.syncBridgeTable(nh, conn); err != nil {
				return fmt.Errorf("unbind: %w", err)
			}
		}
		link, err := linkByName(nh, name)
		if err != nil || link == nil {
			return err
		}
		if link.Type() != "tuntap" {
			return fmt.Errorf("%w: it is a %s", ErrNotTap, link.Type())
		}
		// With ctx done, take the short way out: delete.
		if len(h.pool) < h.cfg.TapPoolSize && !hasCarrier(link) && ctx.Err() == nil {
			if err := h.resetTap(nh, link); err == nil {
				h.pool = append(h.pool, name)
				return nil
			}
		}
		if err := nh.LinkDel(link); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("release tap %q: %w", name, err)
	}
	return nil
}

// resetTap returns a detached tap to its pooled state: no addresses,
// attached to the bridge, up.
func (h *host) resetTap(nh *netlink.Handle, link netlink.Link) error {
	br, err := h.bridgeLink(nh)
	if err != nil {
		return err
	}
	addrs, err := nh.AddrList(link, netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return err
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() && a.IP.To4() == nil {
			continue // the kernel's own IPv6 link-local address
		}
		if err := nh.AddrDel(link, &a); err != nil {
			return err
		}
	}
	if link.Attrs().MasterIndex != br.Attrs().Index {
		if err := nh.LinkSetMasterByIndex(link, br.Attrs().Index); err != nil {
			return err
		}
	}
	return nh.LinkSetUp(link)
}

// known returns the taps this Host pools or handed out.
func (h *host) known() []string {
	names := slices.Clone(h.pool)
	for n := range h.inUse {
		names = append(names, n)
	}
	return names
}

// startRefillLocked starts the background refill if the pool is short and no
// refill runs. h.mu must be held.
func (h *host) startRefillLocked() {
	if h.refilling || h.stopRefill || len(h.pool) >= h.cfg.TapPoolSize {
		return
	}
	h.refilling = true
	h.refills.Add(1)
	go h.refill()
}

// refill creates taps, one per lock hold, until the pool is full, Teardown
// asks it to stop, or creating one fails (recorded for State).
func (h *host) refill() {
	defer h.refills.Done()
	for {
		h.mu.Lock()
		if h.stopRefill || len(h.pool) >= h.cfg.TapPoolSize {
			h.refilling = false
			h.mu.Unlock()
			return
		}
		var name string
		err := h.inNS(func(nh *netlink.Handle) error {
			br, err := h.bridgeLink(nh)
			if err != nil {
				return err
			}
			name, err = h.createTap(context.Background(), nh, br)
			return err
		})
		if err != nil {
			h.poolErr = fmt.Errorf("refill tap pool: %w", err)
			h.refilling = false
			h.mu.Unlock()
			return
		}
		h.pool = append(h.pool, name)
		h.poolErr = nil
		h.mu.Unlock()
	}
}

// SetNAT implements Host.
func (h *host) SetNAT(ctx context.Context, guests []netip.Addr) error {
	h.mu.Lock()
	eg := h.egress
	h.mu.Unlock()
	if err := h.SetEgress(ctx, guests, eg); err != nil {
		return fmt.Errorf("set nat: %w", err)
	}
	return nil
}

// SetEgress implements Host.
func (h *host) SetEgress(ctx context.Context, nat []netip.Addr, eg Egress) error {
	want, err := EgressRuleset(h.cfg, nat, eg)
	if err != nil {
		return fmt.Errorf("set egress: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	err = h.inNS(func(nh *netlink.Handle) error {
		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("open nftables: %w", err)
		}
		cur, err := readTable(conn, FamilyIP, h.cfg.Table)
		if err != nil {
			return err
		}
		if cur.inSync(want) {
			h.egress = eg
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := applyTables(conn, want); err != nil {
			return err
		}
		// The forward chain accepts established flows first, so flows that
		// were let out before would survive the rule change: end them, for
		// guests that lost NAT and filtered guests whose rules changed.
		lost := map[netip.Addr]bool{}
		for _, g := range cur.natGuests() {
			if !slices.Contains(want.NATGuests(), g) {
				lost[g] = true
			}
		}
		for _, g := range changedEgress(h.egress, eg) {
			lost[g] = true
		}
		h.egress = eg
		return deleteFlows(nh, lost, h.sub.prefix)
	})
	if err != nil {
		return fmt.Errorf("set egress: %w", err)
	}
	return nil
}

// outboundFlows matches conntrack entries opened by one of guests towards an
// address outside the subnet (the flows NAT carried).
type outboundFlows struct {
	guests map[netip.Addr]bool
	subnet netip.Prefix
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (f outboundFlows) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	src, ok1 := netip.AddrFromSlice(flow.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(flow.Forward.DstIP)
	return ok1 && ok2 && f.guests[src.Unmap()] && !f.subnet.Contains(dst.Unmap())
}

// deleteFlows removes the conntrack entries of guests' outbound flows.
func deleteFlows(nh *netlink.Handle, guests map[netip.Addr]bool, subnet netip.Prefix) error {
	if len(guests) == 0 {
		return nil
	}
	for i := 0; ; i++ {
		_, err := nh.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.FAMILY_V4, outboundFlows{guests, subnet})
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			continue // the table changed while it was read: some entries may have been missed
		}
		if err != nil {
			return fmt.Errorf("delete conntrack entries of former nat guests: %w", err)
		}
		return nil
	}
}

// State implements Host.
func (h *host) State(ctx context.Context) (State, error) {
	if err := ctx.Err(); err != nil {
		return State{}, fmt.Errorf("network state: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := State{Bridge: h.cfg.Bridge}
	if h.poolErr != nil {
		st.PoolError = h.poolErr.Error()
	}
	err := h.inNS(func(nh *netlink.Handle) error {
		links, err := linkList(nh)
		if err != nil {
			return err
		}
		exists := map[string]bool{}
		for _, l := range links {
			a := l.Attrs()
			switch {
			case a.Name == h.cfg.Bridge && l.Type() == "bridge":
				st.BridgeExists = true
				st.BridgeUp = a.Flags&net.FlagUp != 0
				addrs, err := addrList(nh, l)
				if err != nil {
					return err
				}
				for _, ad := range addrs {
					if p, ok := prefixOf(ad); ok {
						st.BridgeAddrs = append(st.BridgeAddrs, p)
					}
				}
			case l.Type() == "tuntap":
				if _, ok := tapIndex(h.cfg.TapPrefix, a.Name); ok {
					exists[a.Name] = true
				}
			}
		}
		for name := range exists {
			_, used := h.inUse[name]
			switch {
			case used:
				st.InUse = append(st.InUse, name)
			case slices.Contains(h.pool, name):
				st.Pool = append(st.Pool, name)
			default:
				st.Unknown = append(st.Unknown, name)
			}
		}
		for _, name := range h.known() {
			if !exists[name] {
				st.Missing = append(st.Missing, name)
			}
		}
		fwd, err := readSysctl("net/ipv4/ip_forward")
		if err != nil {
			return err
		}
		st.Forwarding = fwd == "1"

		conn, err := nftables.New()
		if err != nil {
			return fmt.Errorf("open nftables: %w", err)
		}
		cur, err := readTable(conn, FamilyIP, h.cfg.Table)
		if err != nil {
			return err
		}
		curBr, err := readTable(conn, FamilyBridge, h.cfg.Table)
		if err != nil {
			return err
		}
		st.Table = cur.exists && curBr.exists
		if cur.exists {
			st.NATGuests = cur.natGuests()
			if b := curBr.bindings(); len(b) > 0 {
				st.Bindings = b
			}
			want, err := EgressRuleset(h.cfg, st.NATGuests, h.egress)
			wantBr, berr := BridgeRuleset(h.cfg, st.Bindings)
			st.RulesInSync = err == nil && berr == nil && cur.inSync(want) && curBr.inSync(wantBr)
		}
		return nil
	})
	if err != nil {
		return State{}, fmt.Errorf("network state: %w", err)
	}
	for _, l := range [][]string{st.Pool, st.InUse, st.Unknown, st.Missing} {
		sortTaps(h.cfg.TapPrefix, l)
	}
	return st, nil
}

// Teardown implements Host.
func (h *host) Teardown(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	h.mu.Lock()
	h.stopRefill = true
	h.mu.Unlock()
	h.refills.Wait()

	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopRefill = false
	err := h.inNS(func(nh *netlink.Handle) error {
		var errs []error
		conn, err := nftables.New()
		if err == nil {
			err = deleteTables(conn, h.cfg.Table)
		}
		errs = append(errs, err, h.restoreForwarding())
		links, err := linkList(nh)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, l := range links {
			name := l.Attrs().Name
			_, isTap := tapIndex(h.cfg.TapPrefix, name)
			if (isTap && l.Type() == "tuntap") || (name == h.cfg.Bridge && l.Type() == "bridge") {
				if err := nh.LinkDel(l); err != nil && !isNotFound(err) {
					errs = append(errs, fmt.Errorf("delete %s %q: %w", l.Type(), name, err))
				}
			}
		}
		return errors.Join(errs...)
	})
	h.pool = nil
	clear(h.inUse)
	clear(h.bindings)
	h.loaded = false
	h.poolErr = nil
	if err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	return nil
}

// linkByName returns the link called name, or nil if there is none.
func linkByName(nh *netlink.Handle, name string) (netlink.Link, error) {
	l, err := nh.LinkByName(name)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up link %q: %w", name, err)
	}
	return l, nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// dumpRetries bounds the retries of a netlink dump that the kernel reports as
// interrupted (the list changed while it was read; netlink >= 1.2 returns
// ErrDumpInterrupted with partial results).
const dumpRetries = 5

func linkList(nh *netlink.Handle) ([]netlink.Link, error) {
	for i := 0; ; i++ {
		links, err := nh.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list links: %w", err)
		}
		return links, nil
	}
}

func addrList(nh *netlink.Handle, link netlink.Link) ([]netlink.Addr, error) {
	for i := 0; ; i++ {
		addrs, err := nh.AddrList(link, netlink.FAMILY_V4)
		if errors.Is(err, netlink.ErrDumpInterrupted) && i < dumpRetries {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list addresses of %q: %w", link.Attrs().Name, err)
		}
		return addrs, nil
	}
}

// prefixOf converts a netlink IPv4 address to a netip.Prefix.
func prefixOf(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := a.Mask.Size()
	ip = ip.Unmap()
	if !ip.Is4() || bits != 32 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones), true
}

// sysctlPath is a sysctl's file. /proc/sys/net shows the network namespace of
// the calling thread, which inNS has switched.
func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", name)
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(sysctlPath(name))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeSysctlIfExists sets a sysctl unless it does not exist (e.g. IPv6
// disabled in the kernel) or already has the value.
func writeSysctlIfExists(name, value string) error {
	cur, err := readSysctl(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if cur == value {
		return nil
	}
	if err := os.WriteFile(sysctlPath(name), []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("write sysctl %s: %w", name, err)
	}
	return nil
}
