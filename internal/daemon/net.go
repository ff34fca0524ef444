package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"banger/internal/config"
	"banger/internal/dns"
	"banger/internal/network"
	"banger/internal/vm"
)

// newNetworking builds the VM network wiring. Bridge mode needs
// CAP_NET_ADMIN: as root the network operations run in-process (a later
// privileged helper will serve the same typed operations for non-root
// daemons); otherwise there is no Host and VMs default to user mode.
func newNetworking(cfg config.Config, resolver *dns.Server, svcCtx context.Context, log *slog.Logger) (*vm.Networking, error) {
	cidr, err := netip.ParsePrefix(cfg.BridgeCIDR)
	if err != nil {
		return nil, fmt.Errorf("bridge_cidr: %w", err)
	}
	ncfg := network.Config{Bridge: cfg.BridgeName, CIDR: cidr, TapPoolSize: cfg.TapPoolSize, TapOwner: -1}.WithDefaults()
	if err := ncfg.Validate(); err != nil {
		return nil, err
	}
	n := &vm.Networking{Config: ncfg, Resolver: resolver}
	if os.Geteuid() != 0 || cfg.Network == "user" || cfg.Network == "none" {
		if cfg.Network == "bridge" {
			return nil, fmt.Errorf("network = \"bridge\" needs root (or the privileged helper); use \"user\" or \"auto\"")
		}
		return n, nil
	}
	host, err := network.NewHost(ncfg)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	n.Host = host
	n.BridgeReady = func(ctx context.Context) error {
		// Guests resolve through the bridge address.
		addr := net.JoinHostPort(cidr.Addr().String(), "53")
		if err := resolver.ListenAndServe(svcCtx, addr); err != nil {
			log.Warn("guest dns listener", "addr", addr, "err", err)
		}
		return nil
	}
	return n, nil
}
