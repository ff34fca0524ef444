package guest

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// NetConfig is the guest network banger asks for on the command line.
type NetConfig struct {
	Addr    *netlink.Addr
	Gateway net.IP
	DNS     []string
}

// ParseNet validates the banger.ip/gw/dns parameters. A zero NetConfig
// (no banger.ip) means "leave the network alone".
func ParseNet(p BootParams) (NetConfig, error) {
	var c NetConfig
	if p.IP == "" {
		return c, nil
	}
	addr, err := netlink.ParseAddr(p.IP)
	if err != nil {
		return c, fmt.Errorf("banger.ip=%q: %w", p.IP, err)
	}
	c.Addr = addr
	if p.Gateway != "" {
		if c.Gateway = net.ParseIP(p.Gateway); c.Gateway == nil {
			return c, fmt.Errorf("banger.gw=%q is not an IP address", p.Gateway)
		}
	}
	for _, d := range strings.Split(p.DNS, ",") {
		if d == "" {
			continue
		}
		if net.ParseIP(d) == nil {
			return c, fmt.Errorf("banger.dns=%q: %q is not an IP address", p.DNS, d)
		}
		c.DNS = append(c.DNS, d)
	}
	return c, nil
}

// ConfigureNet brings lo up and, when asked, gives the first ethernet
// interface its address and default route. The stock kernel's ip=
// parameter is not built in, so this is done from userspace.
func ConfigureNet(c NetConfig) error {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	if c.Addr == nil {
		return nil
	}
	var link netlink.Link
	deadline := time.Now().Add(5 * time.Second)
	for link == nil {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			if l.Type() == "device" && l.Attrs().Name != "lo" {
				link = l
				break
			}
		}
		if link == nil {
			if time.Now().After(deadline) {
				return fmt.Errorf("no network interface appeared for banger.ip=%s", c.Addr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := netlink.AddrReplace(link, c.Addr); err != nil {
		return fmt.Errorf("set %s on %s: %w", c.Addr, link.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", link.Attrs().Name, err)
	}
	if c.Gateway != nil {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: c.Gateway}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s: %w", c.Gateway, err)
		}
	}
	return nil
}

// WriteResolvConf points the new root's resolver at dns, replacing the
// image's /etc/resolv.conf (often a link into a resolver's /run, dangling
// here) and making /etc when the image has none. No servers: nothing is
// written.
func WriteResolvConf(root *os.Root, dns []string) error {
	if len(dns) == 0 {
		return nil
	}
	var b strings.Builder
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return replaceFile(root, "etc/resolv.conf", []byte(b.String()), 0o644)
}
