// Package network is the host side of banger's bridge mode: one Linux bridge
// with a static IPv4 address, a tap device per VM attached to it, and per-guest
// NAT to the outside world through a dedicated nftables table.
//
// The package is declarative where the kernel state is shared: EnsureBridge and
// SetNAT describe the state they want and change the kernel only where it
// differs, so calling them again is harmless. The nftables ruleset is a pure
// function of the configuration and the NAT guests (Ruleset), which the real
// Host applies and reads back; unit tests check it without a kernel.
//
// Host is the privileged surface (everything in it needs CAP_NET_ADMIN), kept
// small and typed with plain structs so that a root helper can serve it over a
// socket later. NewHost is the netlink + nftables implementation; Fake is a
// recording stand-in for other packages' unit tests. Allocator and MACFor are
// pure helpers for the daemon, which owns the persistent address allocations.
package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Defaults applied by Config.WithDefaults to zero-valued fields.
const (
	DefaultBridge      = "banger0"
	DefaultTapPrefix   = "bgtap"
	DefaultTapPoolSize = 2
	DefaultTable       = "banger"
)

// DefaultCIDR is the bridge address and subnet used when Config.CIDR is unset:
// the bridge is 172.16.0.1 and guests get 172.16.0.2 and up.
const DefaultCIDR = "172.16.0.1/24"

// ifNameMax is the longest interface name Linux accepts (IFNAMSIZ minus the
// terminating NUL).
const ifNameMax = 15

// minTapDigits is the room Config.Validate insists on for the tap index, so
// that a prefix cannot leave space for ten taps only.
const minTapDigits = 3

// Config of the host side of bridge mode.
type Config struct {
	// Bridge is the bridge interface name; default "banger0".
	Bridge string
	// CIDR is the bridge's address with the subnet length, default
	// 172.16.0.1/24. Guests get the other host addresses of the subnet,
	// from the lowest up (see Allocator).
	CIDR netip.Prefix
	// TapPrefix names the taps: TapPrefix followed by a decimal index, e.g.
	// "bgtap0". Default "bgtap". It must leave room for at least three
	// digits within IFNAMSIZ, and must not be a prefix of Bridge.
	TapPrefix string
	// TapPoolSize is the number of detached taps kept ready for AcquireTap.
	// 0 means the default (2); a negative value disables the pool.
	TapPoolSize int
	// TapOwner is the uid allowed to open the taps without CAP_NET_ADMIN
	// (TUNSETOWNER), typically the user running the daemon and QEMU. -1
	// sets no owner. Note that 0, the zero value, means root.
	TapOwner int
	// Table is the name of banger's nftables tables (family ip and family
	// bridge), default "banger". banger owns those tables entirely and
	// touches nothing else.
	Table string
	// IsolateGuests stops guests from reaching each other, on the bridge
	// and through the host (config: guest_to_guest = false). By default
	// guests on the bridge see each other, as on any LAN.
	IsolateGuests bool
	// MaxTaps is the hard maximum of banger's taps that exist at once (in
	// use and pooled); 0 means DefaultMaxTaps. AcquireTap also refuses when
	// more taps are handed out and not yet opened by a VMM than
	// maxPendingTaps: a caller that acquires without starting VMs cannot
	// make the host create taps without bound.
	MaxTaps int
	// ForwardRecord is a file where EnsureBridge records the value
	// net.ipv4.ip_forward had before it first turned forwarding on, and
	// from which Teardown restores it. Empty: forwarding is turned on and
	// never restored.
	ForwardRecord string
}

// DefaultMaxTaps is Config.MaxTaps's default: more than a /24 has guests.
const DefaultMaxTaps = 256

// maxPendingTaps is how many taps may be handed out and not yet opened by
// any process (VMs being started) at once.
const maxPendingTaps = 16

// WithDefaults returns c with zero-valued fields replaced by the defaults.
// TapOwner has no default: its zero value is uid 0.
func (c Config) WithDefaults() Config {
	if c.Bridge == "" {
		c.Bridge = DefaultBridge
	}
	if !c.CIDR.IsValid() {
		c.CIDR = netip.MustParsePrefix(DefaultCIDR)
	}
	if c.TapPrefix == "" {
		c.TapPrefix = DefaultTapPrefix
	}
	switch {
	case c.TapPoolSize == 0:
		c.TapPoolSize = DefaultTapPoolSize
	case c.TapPoolSize < 0:
		c.TapPoolSize = 0
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.MaxTaps <= 0 {
		c.MaxTaps = DefaultMaxTaps
	}
	return c
}

// Validate reports whether a configuration (after WithDefaults) can be used.
func (c Config) Validate() error {
	if err := validIfName(c.Bridge); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	if err := validIfName(c.TapPrefix); err != nil {
		return fmt.Errorf("tap prefix: %w", err)
	}
	if len(c.TapPrefix) > ifNameMax-minTapDigits {
		return fmt.Errorf("tap prefix %q is too long: it must leave room for %d digits within %d characters", c.TapPrefix, minTapDigits, ifNameMax)
	}
	if strings.HasPrefix(c.Bridge, c.TapPrefix) {
		return fmt.Errorf("bridge %q starts with the tap prefix %q: taps are found by their prefix", c.Bridge, c.TapPrefix)
	}
	if _, err := newSubnet(c.CIDR); err != nil {
		return err
	}
	if c.TapOwner < -1 {
		return fmt.Errorf("tap owner %d is not a uid (or -1 for none)", c.TapOwner)
	}
	if c.Table == "" || len(c.Table) > 255 || strings.ContainsAny(c.Table, " \t\n\"") {
		return fmt.Errorf("table name %q is not a valid nftables table name", c.Table)
	}
	return nil
}

// validIfName reports whether name is usable as a Linux interface name.
func validIfName(name string) error {
	switch {
	case name == "":
		return errors.New("empty interface name")
	case len(name) > ifNameMax:
		return fmt.Errorf("interface name %q is longer than %d characters", name, ifNameMax)
	case name == "." || name == "..":
		return fmt.Errorf("interface name %q is reserved", name)
	case strings.ContainsAny(name, "/: \t\n\x00"):
		return fmt.Errorf("interface name %q contains a character Linux refuses", name)
	}
	return nil
}

// tapName is the name of the tap with the given index.
func tapName(prefix string, index int) string {
	return fmt.Sprintf("%s%d", prefix, index)
}

// tapIndex parses a name made by tapName; ok is false for any other name,
// including ones with leading zeros, so the mapping is one to one.
// IsTapName reports whether name is one banger gives its taps: prefix and
// a decimal index.
func IsTapName(prefix, name string) bool {
	_, ok := tapIndex(prefix, name)
	return ok
}

func tapIndex(prefix, name string) (index int, ok bool) {
	digits, found := strings.CutPrefix(name, prefix)
	if !found || digits == "" || len(digits) > 1 && digits[0] == '0' {
		return 0, false
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return 0, false
		}
		index = index*10 + int(r-'0')
		if index > 1<<20 {
			return 0, false
		}
	}
	return index, true
}

// sortTaps sorts tap names by index.
func sortTaps(prefix string, names []string) {
	slices.SortFunc(names, func(a, b string) int {
		ia, _ := tapIndex(prefix, a)
		ib, _ := tapIndex(prefix, b)
		return ia - ib
	})
}

// Host is the privileged side of bridge mode: everything here needs
// CAP_NET_ADMIN. A root helper will serve the same operations over a socket,
// so arguments and results are plain, serialisable values. Implementations
// are safe for concurrent use.
type Host interface {
	// EnsureBridge creates or updates the bridge (a fixed MAC, exactly the
	// configured IPv4 address, IPv6 off, up), enables IPv4 forwarding in the
	// network namespace and installs banger's nftables table with its base
	// chains and rules, keeping the NAT guests already configured. It then
	// starts filling the tap pool in the background. Idempotent.
	EnsureBridge(ctx context.Context) error
	// AcquireTap returns the name of a tap attached to the bridge and up,
	// taken from the warm pool (refilled in the background) or created on
	// demand, and bound to b: from then on the tap may send only from b's
	// MAC and IPv4 address (see BridgeRuleset). The caller owns it until
	// ReleaseTap. It fails with ErrNoBridge when the bridge does not exist,
	// and with ErrTapLimit when Config.MaxTaps taps exist or too many
	// acquired taps are not yet opened by a VMM.
	AcquireTap(ctx context.Context, b Binding) (string, error)
	// ReleaseTap hands a tap back. A tap that no process holds open any more
	// returns to the pool if the pool is below its size (re-attached, up,
	// addresses flushed); otherwise it is deleted. Releasing a tap that does
	// not exist is not an error; a name that is not one of banger's taps is
	// (ErrNotTap), so the operation cannot delete other interfaces. Being a
	// cleanup path, it completes even when ctx is done (deleting the tap).
	ReleaseTap(ctx context.Context, name string) error
	// SetNAT declares the complete set of guest addresses that may reach the
	// outside: each gets a masquerade rule for its /32 leaving through any
	// interface but the bridge and a forward accept; everything else from
	// the bridge to another interface is dropped, so a guest without NAT has
	// no way out. The new rules replace the old ones in one nftables
	// transaction, and established connections of guests that lost NAT are
	// removed from conntrack. Calling it again with the same set changes
	// nothing. Every address must be a guest address of the subnet.
	SetNAT(ctx context.Context, guests []netip.Addr) error
	// SetEgress declares the NAT guests (as SetNAT) and the filtered
	// guests (see EgressRuleset) together, in one transaction; a later
	// SetNAT keeps the filtered guests. Outbound flows of guests whose
	// filtered egress changed are removed from conntrack.
	SetEgress(ctx context.Context, nat []netip.Addr, eg Egress) error
	// State reports what exists in the kernel, for doctor and leak checks.
	State(ctx context.Context) (State, error)
	// Teardown removes banger's tables, every tap with the tap prefix
	// (pooled, in use or unknown) and the bridge, and restores IPv4
	// forwarding to the value Config.ForwardRecord holds (if any).
	// Idempotent.
	Teardown(ctx context.Context) error
}

// SourceRule is a rule of one of banger's tables that matches an IPv4
// source address, as ReadSourceRules found it in the kernel.
type SourceRule struct {
	Chain  string
	Handle uint64 // the rule's nftables handle
	Source netip.Addr
}

// State is what Host.State found in the kernel.
type State struct {
	// Bridge is the configured bridge name; BridgeExists whether a bridge of
	// that name exists, BridgeUp whether it is administratively up and
	// BridgeAddrs its IPv4 addresses.
	Bridge       string
	BridgeExists bool
	BridgeUp     bool
	BridgeAddrs  []netip.Prefix
	// Forwarding reports net.ipv4.ip_forward in the Host's namespace.
	Forwarding bool
	// Pool lists the warm taps, InUse the taps handed out and not yet
	// released. Both only list taps that exist.
	Pool  []string
	InUse []string
	// Unknown lists taps with banger's prefix that this Host neither pools
	// nor handed out: leaks, or taps of an earlier process.
	Unknown []string
	// Missing lists taps this Host handed out or pooled that no longer exist.
	Missing []string
	// PoolError is the last error of the background pool refill, if the
	// latest attempt failed.
	PoolError string
	// Table reports whether banger's nftables tables (ip and bridge)
	// exist.
	Table bool
	// Bindings are the taps' anti-spoofing bindings in the kernel.
	Bindings map[string]Binding
	// NATGuests are the guests that have a masquerade rule in the kernel,
	// sorted.
	NATGuests []netip.Addr
	// RulesInSync reports whether banger's tables hold exactly
	// Ruleset(config, NATGuests) and BridgeRuleset(config, Bindings):
	// nothing missing, nothing extra.
	RulesInSync bool
}

// Errors returned (wrapped) by Host implementations; test with errors.Is.
var (
	// ErrNoBridge reports that the bridge does not exist (EnsureBridge was
	// not called, or the bridge was removed).
	ErrNoBridge = errors.New("bridge does not exist")
	// ErrNotTap reports a name that is not one of banger's taps.
	ErrNotTap = errors.New("not a banger tap")
	// ErrTapLimit reports that AcquireTap would exceed the tap limits.
	ErrTapLimit = errors.New("tap limit reached")
)
