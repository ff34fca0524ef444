//go:build !linux

package proxy

import (
	"errors"
	"net"
	"net/netip"
)

// OriginalDst is only available on Linux (nftables redirects); elsewhere
// every connection is explicit use of the proxy.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("original destination: only on linux")
}
