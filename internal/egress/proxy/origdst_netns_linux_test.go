//go:build linux

package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestOriginalDstRedirected checks the SO_ORIGINAL_DST lookup against the
// kernel, for IPv4 and IPv6: in a network namespace the test makes (lo
// and a veth pair up, nothing routed out of it), an nftables nat/output
// rule redirects TCP to 192.0.2.1:443 ([2001:db8::1]:443) to a local
// listener, and OriginalDst of the accepted connection must give the
// address the client dialled.
func TestOriginalDstRedirected(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace and nftables rules (CI runs as root)")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		errc <- redirectCheck()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func redirectCheck() error {
	ns, err := netns.New() // this thread only
	if err != nil {
		return fmt.Errorf("new netns: %w", err)
	}
	defer ns.Close()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	// A veth pair inside the namespace (dummy links are not built into
	// every kernel) gives 192.0.2.0/24 and 2001:db8::/64 a route.
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "d0"}, PeerName: "d1"}); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	if d1, err := netlink.LinkByName("d1"); err != nil || netlink.LinkSetUp(d1) != nil {
		return fmt.Errorf("veth peer: %v", err)
	}
	d0, err := netlink.LinkByName("d0")
	if err != nil {
		return err
	}
	for _, a := range []string{"192.0.2.2/24", "2001:db8::2/64"} {
		addr, _ := netlink.ParseAddr(a)
		addr.Flags = unix.IFA_F_NODAD
		if err := netlink.AddrAdd(d0, addr); err != nil {
			return fmt.Errorf("add %s: %w", a, err)
		}
	}
	if err := netlink.LinkSetUp(d0); err != nil {
		return err
	}
	nft, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return err
	}
	for _, c := range []struct {
		family   nftables.TableFamily
		listen   string
		dst      netip.AddrPort
		daddrOff uint32
	}{
		{nftables.TableFamilyIPv4, "127.0.0.1:0", netip.MustParseAddrPort("192.0.2.1:443"), 16},
		{nftables.TableFamilyIPv6, "[::1]:0", netip.MustParseAddrPort("[2001:db8::1]:443"), 24},
	} {
		ln, err := net.Listen("tcp", c.listen)
		if err != nil {
			return err
		}
		defer ln.Close()
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		tbl := nft.AddTable(&nftables.Table{Family: c.family, Name: "bangertest"})
		ch := nft.AddChain(&nftables.Chain{Name: "out", Table: tbl, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
		nft.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: c.daddrOff, Len: uint32(c.dst.Addr().BitLen() / 8)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: c.dst.Addr().AsSlice()},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(c.dst.Port())},
			&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
			&expr.Redir{RegisterProtoMin: 1},
		}})
		if err := nft.Flush(); err != nil {
			return fmt.Errorf("nftables %v: %w", c.family, err)
		}
		cl, err := net.DialTimeout("tcp", c.dst.String(), 5*time.Second)
		if err != nil {
			return fmt.Errorf("dial %s: %w", c.dst, err)
		}
		defer cl.Close()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		sc, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		defer sc.Close()
		got, err := OriginalDst(sc)
		if err != nil {
			return err
		}
		if got != c.dst {
			return fmt.Errorf("original destination %v, want %v", got, c.dst)
		}
		if got == addrPortOf(sc.LocalAddr()) {
			return fmt.Errorf("original destination equals the local address")
		}
	}
	return nil
}
