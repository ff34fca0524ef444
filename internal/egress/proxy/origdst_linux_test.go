//go:build linux

package proxy

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseSockaddr(t *testing.T) {
	in4 := make([]byte, unix.SizeofSockaddrInet4)
	binary.NativeEndian.PutUint16(in4, unix.AF_INET)
	binary.BigEndian.PutUint16(in4[2:], 443)
	copy(in4[4:], []byte{192, 0, 2, 7})
	if got, err := parseSockaddr(in4); err != nil || got != netip.MustParseAddrPort("192.0.2.7:443") {
		t.Errorf("sockaddr_in: %v %v", got, err)
	}
	in6 := make([]byte, unix.SizeofSockaddrInet6)
	binary.NativeEndian.PutUint16(in6, unix.AF_INET6)
	binary.BigEndian.PutUint16(in6[2:], 80)
	copy(in6[8:], netip.MustParseAddr("2001:db8::7").AsSlice())
	if got, err := parseSockaddr(in6); err != nil || got != netip.MustParseAddrPort("[2001:db8::7]:80") {
		t.Errorf("sockaddr_in6: %v %v", got, err)
	}
	mapped := append([]byte(nil), in6...)
	copy(mapped[8:], netip.MustParseAddr("::ffff:10.0.0.1").AsSlice())
	if got, _ := parseSockaddr(mapped); got != netip.MustParseAddrPort("10.0.0.1:80") {
		t.Errorf("mapped: %v", got)
	}
	for _, b := range [][]byte{nil, {1}, in4[:6], in6[:20], {99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		if _, err := parseSockaddr(b); err == nil {
			t.Errorf("parseSockaddr(%v) accepted", b)
		}
	}
}

// A connection nobody redirected has no original destination (or its own
// local address): both mean explicit use of the proxy.
func TestOriginalDstNotRedirected(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		ln, err := net.Listen(network, map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network])
		if err != nil {
			t.Logf("%s: %v", network, err)
			continue
		}
		defer ln.Close()
		go func() {
			c, err := net.Dial(network, ln.Addr().String())
			if err == nil {
				defer c.Close()
				c.Read(make([]byte, 1))
			}
		}()
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		got, err := OriginalDst(c)
		if err == nil && got != addrPortOf(c.LocalAddr()) {
			t.Errorf("%s: original destination %v of a connection never redirected", network, got)
		}
		c.Close()
	}
	if _, err := OriginalDst(&net.UnixConn{}); err == nil {
		t.Error("OriginalDst of a unix conn")
	}
}
