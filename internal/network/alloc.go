package network

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// ErrExhausted reports that an Allocator has no free guest address left.
var ErrExhausted = errors.New("no free guest address")

// subnet is the IPv4 subnet of the bridge with its special addresses.
type subnet struct {
	prefix    netip.Prefix // masked
	gateway   netip.Addr   // the bridge's own address
	first     uint32       // network address + 1
	last      uint32       // broadcast address - 1
	gatewayIP uint32
}

// newSubnet checks a bridge CIDR (the bridge address with the subnet length):
// IPv4, room for at least one guest, and an address that is neither the
// network nor the broadcast address.
func newSubnet(cidr netip.Prefix) (subnet, error) {
	if !cidr.IsValid() {
		return subnet{}, errors.New("bridge cidr is not set")
	}
	addr := cidr.Addr().Unmap()
	if !addr.Is4() {
		return subnet{}, fmt.Errorf("bridge cidr %s is not IPv4", cidr)
	}
	if cidr.Bits() > 30 {
		return subnet{}, fmt.Errorf("bridge cidr %s leaves no guest address (need /30 or shorter)", cidr)
	}
	prefix := netip.PrefixFrom(addr, cidr.Bits()).Masked()
	network := u32(prefix.Addr())
	broadcast := network | (1<<(32-prefix.Bits()) - 1)
	gw := u32(addr)
	if gw == network || gw == broadcast {
		return subnet{}, fmt.Errorf("bridge cidr %s: the bridge address must be a host address of the subnet, e.g. %s", cidr, netip.PrefixFrom(addrFrom(network+1), cidr.Bits()))
	}
	return subnet{prefix: prefix, gateway: addr, first: network + 1, last: broadcast - 1, gatewayIP: gw}, nil
}

// isGuest reports whether a is an address a guest may have: a host address of
// the subnet other than the bridge's.
func (s subnet) isGuest(a netip.Addr) bool {
	a = a.Unmap()
	if !a.Is4() || !s.prefix.Contains(a) {
		return false
	}
	n := u32(a)
	return n >= s.first && n <= s.last && n != s.gatewayIP
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrFrom(n uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

// Allocator hands out guest addresses of the bridge subnet, lowest free first.
// It only computes: the daemon persists allocations and rebuilds an Allocator
// from them. It is not safe for concurrent use.
type Allocator struct {
	sub  subnet
	used map[netip.Addr]struct{}
}

// NewAllocator returns an allocator for the subnet of cidr (the bridge address
// with the subnet length, as in Config.CIDR) with the given addresses already
// taken. Addresses of used that are not guest addresses of the subnet (for
// instance left over from another configuration) are ignored.
func NewAllocator(cidr netip.Prefix, used []netip.Addr) (*Allocator, error) {
	sub, err := newSubnet(cidr)
	if err != nil {
		return nil, fmt.Errorf("new allocator: %w", err)
	}
	a := &Allocator{sub: sub, used: make(map[netip.Addr]struct{}, len(used))}
	for _, addr := range used {
		if sub.isGuest(addr) {
			a.used[addr.Unmap()] = struct{}{}
		}
	}
	return a, nil
}

// Next allocates and returns the lowest free guest address, skipping the
// network address, the bridge's address and the broadcast address. It returns
// ErrExhausted (wrapped) when every address is taken.
func (a *Allocator) Next() (netip.Addr, error) {
	for n := a.sub.first; n <= a.sub.last; n++ {
		if n == a.sub.gatewayIP {
			continue
		}
		addr := addrFrom(n)
		if _, taken := a.used[addr]; !taken {
			a.used[addr] = struct{}{}
			return addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("allocate address in %s: %w", a.sub.prefix, ErrExhausted)
}

// Release frees addr for a later Next. Releasing a free or foreign address is a
// no-op.
func (a *Allocator) Release(addr netip.Addr) {
	delete(a.used, addr.Unmap())
}
