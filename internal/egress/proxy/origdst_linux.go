//go:build linux

package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (IPv4, level SOL_IP) and
// IP6T_SO_ORIGINAL_DST (IPv6, level SOL_IPV6): both 80.
const soOriginalDst = 80

// OriginalDst returns where a connection redirected by nftables (redirect
// or dnat, with conntrack) was originally going. A connection that was not
// redirected gives an error (the kernel answers ENOENT) or its own local
// address; both mean "explicit use of the proxy".
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, errors.New("original destination: not a socket")
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, errors.New("original destination: not a TCP connection")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	v6 := local.IP.To4() == nil
	var buf [unix.SizeofSockaddrInet6]byte
	var serr error
	err = raw.Control(func(fd uintptr) {
		level := unix.SOL_IP
		if v6 {
			level = unix.SOL_IPV6
		}
		size := uint32(len(buf))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		if e != 0 {
			serr = e
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	return parseSockaddr(buf[:])
}

// parseSockaddr decodes a struct sockaddr_in or sockaddr_in6 as the
// kernel writes it (family in host order, port in network order).
func parseSockaddr(b []byte) (netip.AddrPort, error) {
	if len(b) < 2 {
		return netip.AddrPort{}, errors.New("original destination: short sockaddr")
	}
	family := *(*uint16)(unsafe.Pointer(&b[0]))
	switch family {
	case unix.AF_INET:
		if len(b) < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}, errors.New("original destination: short sockaddr_in")
		}
		port := uint16(b[2])<<8 | uint16(b[3])
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port), nil
	case unix.AF_INET6:
		if len(b) < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}, errors.New("original destination: short sockaddr_in6")
		}
		port := uint16(b[2])<<8 | uint16(b[3])
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), port), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("original destination: address family %d", family)
	}
}
