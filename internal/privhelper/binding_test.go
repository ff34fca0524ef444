package privhelper

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"banger/internal/network"
)

var bindingSeq atomic.Uint32

// tb returns a binding with a fresh guest address of the default subnet
// (172.16.0.2 and up) and its own MAC.
func tb() network.Binding {
	n := bindingSeq.Add(1)%250 + 1
	return network.Binding{MAC: network.MACFor(fmt.Sprint("test-", n)), IP: netip.AddrFrom4([4]byte{172, 16, 0, byte(n + 1)})}
}
