package network

import (
	"fmt"
	"net/netip"
	"sync/atomic"
)

var bindingSeq atomic.Uint32

// tb returns a binding with a fresh guest address of the default subnet
// (172.16.0.2 and up) and its own MAC.
func tb() Binding {
	n := bindingSeq.Add(1)%250 + 1
	return Binding{MAC: MACFor(fmt.Sprint("test-", n)), IP: netip.AddrFrom4([4]byte{172, 16, 0, byte(n + 1)})}
}
