package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"banger/internal/config"
	"banger/internal/dns"
	"banger/internal/network"
	"banger/internal/privhelper"
	"banger/internal/vm"
)

// helperProbeTimeout bounds the check that the privileged helper answers.
const helperProbeTimeout = 5 * time.Second

// newNetworking builds the VM network wiring. Bridge mode needs
// CAP_NET_ADMIN: as root the network operations run in-process; otherwise
// they go through the privileged helper (banger-helper) when its socket
// answers and accepts this user, and without it there is no Host and VMs
// default to user mode. ssh's hooks run after a boot, after a delete and
// when the set of reachable VMs changed.
func newNetworking(ctx context.Context, cfg config.Config, resolver *dns.Server, ssh *sshService, egress *egressService, svcCtx context.Context, log *slog.Logger) (*vm.Networking, error) {
	cidr, err := netip.ParsePrefix(cfg.BridgeCIDR)
	if err != nil {
		return nil, fmt.Errorf("bridge_cidr: %w", err)
	}
	ncfg := network.Config{Bridge: cfg.BridgeName, CIDR: cidr, TapPoolSize: cfg.TapPoolSize, TapOwner: -1, IsolateGuests: !cfg.GuestToGuest}.WithDefaults()
	if err := ncfg.Validate(); err != nil {
		return nil, err
	}
	n := &vm.Networking{Config: ncfg, Resolver: resolver, Egress: egress,
		AfterBoot: ssh.afterBoot, Deleted: ssh.deleted, Changed: ssh.refreshLogged}
	if cfg.Network == "user" || cfg.Network == "none" {
		return n, nil
	}
	if os.Geteuid() == 0 {
		host, err := network.NewHost(ncfg)
		if err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
		n.Host = host
		n.BridgeReady = func(ctx context.Context) error {
			// Guests resolve through the bridge address; only NAT
			// guests get names outside banger's domain.
			addr := net.JoinHostPort(cidr.Addr().String(), "53")
			if err := resolver.ListenAndServeGuests(svcCtx, addr); err != nil {
				log.Warn("guest dns listener", "addr", addr, "err", err)
			}
			if err := egress.listen(svcCtx, cidr.Addr()); err != nil {
				log.Warn("egress proxy listener", "err", err)
			}
			return nil
		}
		return n, nil
	}

	helper := privhelper.NewClient(cfg.HelperSocket)
	pctx, cancel := context.WithTimeout(ctx, helperProbeTimeout)
	defer cancel()
	hcfg, err := helper.Config(pctx)
	// Under systemd (INVOCATION_ID is set) the helper service may be
	// starting alongside: give its socket the probe's time to appear.
	for err != nil && os.Getenv("INVOCATION_ID") != "" && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) && pctx.Err() == nil {
		time.Sleep(200 * time.Millisecond)
		hcfg, err = helper.Config(pctx)
	}
	if err != nil {
		if cfg.Network == "bridge" {
			return nil, fmt.Errorf("network = \"bridge\" needs root or the privileged helper (banger-helper): %w", err)
		}
		if errors.Is(err, privhelper.ErrForbidden) {
			log.Warn("the privileged helper refuses this user (start it with --allow-uid of this user); bridge mode unavailable", "socket", cfg.HelperSocket, "uid", os.Getuid(), "err", err)
		} else {
			log.Info("no privileged helper; bridge mode unavailable, vms default to user networking", "socket", cfg.HelperSocket, "err", err)
		}
		return n, nil
	}
	// The helper's bridge is the one that exists: allocate guest addresses
	// in its subnet, whatever bridge_name/bridge_cidr say.
	if hcfg.Bridge != ncfg.Bridge || hcfg.CIDR != ncfg.CIDR {
		log.Warn("the privileged helper's bridge differs from bridge_name/bridge_cidr; using the helper's",
			"helper_bridge", hcfg.Bridge, "helper_cidr", hcfg.CIDR, "bridge_name", ncfg.Bridge, "bridge_cidr", ncfg.CIDR)
	}
	if hcfg.IsolateGuests != ncfg.IsolateGuests {
		log.Warn("the privileged helper's guest_to_guest differs from this config; the helper's applies (re-run banger system install)",
			"helper_isolates_guests", hcfg.IsolateGuests)
	}
	if hcfg.TapOwner != os.Getuid() {
		log.Warn("the privileged helper's taps are not owned by this user: QEMU will not be able to open them (banger-helper --tap-owner)", "tap_owner", hcfg.TapOwner, "uid", os.Getuid())
	}
	hcfg = hcfg.WithDefaults()
	gw := hcfg.CIDR.Addr()
	n.Config = hcfg
	n.Host = helper
	n.BridgeReady = func(ctx context.Context) error {
		// Port 53 of the bridge address needs root: the helper binds it
		// and passes the sockets.
		pc, l, err := helper.DNSSockets(ctx)
		if err != nil {
			log.Warn("guest dns sockets from the privileged helper", "addr", gw, "err", err)
			return nil
		}
		if err := resolver.ServeGuests(svcCtx, pc, l); err != nil {
			log.Warn("guest dns listener", "addr", gw, "err", err)
		}
		if err := egress.listen(svcCtx, gw); err != nil {
			log.Warn("egress proxy listener", "err", err)
		}
		return nil
	}
	log.Info("bridge networking through the privileged helper", "socket", cfg.HelperSocket, "bridge", hcfg.Bridge, "cidr", hcfg.CIDR)
	return n, nil
}
