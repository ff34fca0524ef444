// Command banger-helper is banger's privileged helper: it runs as root and
// performs, for one unprivileged user's bangerd, the network operations
// bridge mode needs root for (bridge, taps owned by that user, NAT rules, the
// DNS sockets on the bridge address), over a Unix socket only that user and
// root may use. See package banger/internal/privhelper for the protocol.
//
//	banger-helper --allow-user alice [--socket /run/banger/helper.sock]
//	              [--bridge banger0] [--cidr 172.16.0.1/24] [--tap-pool 2]
//	              [--tap-owner UID]
//
// It stops on SIGTERM or SIGINT without touching the bridge, the taps (in
// use or pooled) or the NAT rules, so running VMs keep their network.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"

	"banger/internal/network"
	"banger/internal/privhelper"
	"banger/internal/sdnotify"
)

var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "banger-helper:", err)
		os.Exit(1)
	}
}

// options are the parsed command line.
type options struct {
	socket   string
	allowUID int
	net      network.Config
}

func parseFlags(args []string, out io.Writer) (options, bool, error) {
	fs := flag.NewFlagSet("banger-helper", flag.ContinueOnError)
	fs.SetOutput(out)
	socket := fs.String("socket", privhelper.DefaultSocket, "`path` of the helper's socket")
	var allowUID, tapOwner optionalInt
	fs.Var(&allowUID, "allow-uid", "`uid` allowed to call the helper (besides root): the user running bangerd")
	allowUser := fs.String("allow-user", "", "user `name` allowed to call the helper (instead of --allow-uid)")
	bridge := fs.String("bridge", network.DefaultBridge, "bridge interface `name`")
	cidr := fs.String("cidr", network.DefaultCIDR, "bridge `address/length`; guests get the other addresses of the subnet")
	tapPool := fs.Int("tap-pool", network.DefaultTapPoolSize, "`number` of warm taps kept ready (0 for none)")
	isolate := fs.Bool("isolate-guests", false, "keep guests from reaching each other (config: guest_to_guest = false)")
	fs.Var(&tapOwner, "tap-owner", "`uid` owning the taps, so that QEMU run by that user can open them: default the allowed uid, -1 for none")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return options{}, false, err
	}
	if *showVersion {
		fmt.Fprintln(out, version)
		return options{}, true, nil
	}
	if fs.NArg() > 0 {
		return options{}, false, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	uid := allowUID.v
	switch {
	case *allowUser != "" && allowUID.set:
		return options{}, false, errors.New("give --allow-uid or --allow-user, not both")
	case *allowUser != "":
		u, err := user.Lookup(*allowUser)
		if err != nil {
			return options{}, false, fmt.Errorf("--allow-user: %w", err)
		}
		if uid, err = strconv.Atoi(u.Uid); err != nil {
			return options{}, false, fmt.Errorf("--allow-user %s: uid %q: %w", *allowUser, u.Uid, err)
		}
	case !allowUID.set:
		return options{}, false, errors.New("--allow-uid or --allow-user is required: the user whose bangerd may use the helper")
	case uid < 0:
		return options{}, false, fmt.Errorf("--allow-uid %d is not a uid", uid)
	}
	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil {
		return options{}, false, fmt.Errorf("--cidr: %w", err)
	}
	pool := *tapPool
	switch {
	case pool == 0:
		pool = -1 // network.Config: 0 means the default, negative none
	case pool < 0:
		return options{}, false, fmt.Errorf("--tap-pool %d: want 0 or more", pool)
	}
	owner := tapOwner.v
	switch {
	case !tapOwner.set:
		owner = uid
	case owner < -1:
		return options{}, false, fmt.Errorf("--tap-owner %d: want a uid or -1", owner)
	}
	// Defaults are applied once, by NewHost and NewServer: applying them
	// twice would turn "no pool" (0 after the first time) into the default.
	// The value ip_forward had before the helper first turned it on is
	// kept next to the socket (in /run: forwarding resets at boot too), for
	// `banger system uninstall` to restore.
	cfg := network.Config{Bridge: *bridge, CIDR: prefix, TapPoolSize: pool, TapOwner: owner, IsolateGuests: *isolate,
		ForwardRecord: privhelper.ForwardRecord(*socket)}
	if err := cfg.WithDefaults().Validate(); err != nil {
		return options{}, false, err
	}
	return options{socket: *socket, allowUID: uid, net: cfg}, false, nil
}

// optionalInt is an int flag that knows whether it was given.
type optionalInt struct {
	v   int
	set bool
}

// String implements flag.Value; unset is "", so no default is shown.
func (o *optionalInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.Itoa(o.v)
}

// Set implements flag.Value.
func (o *optionalInt) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not an integer")
	}
	o.v, o.set = v, true
	return nil
}

func run(args []string, stderr io.Writer) error {
	o, done, err := parseFlags(args, stderr)
	if err != nil || done {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it manages the bridge, taps and nftables rules for an unprivileged bangerd")
	}
	// Nothing the helper creates is for anyone else to read; the socket
	// in particular is never connectable by others, even before its chmod.
	syscall.Umask(0o077)
	log := slog.New(slog.NewTextHandler(stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	host, err := network.NewHost(o.net)
	if err != nil {
		return err
	}
	srv, err := privhelper.NewServer(privhelper.Options{Host: host, Config: o.net, AllowUID: o.allowUID, Log: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := privhelper.Listen(ctx, o.socket, o.allowUID)
	if err != nil {
		return err
	}
	if o.net.TapOwner != o.allowUID {
		log.Warn("taps are not owned by the allowed uid: its QEMU will not be able to open them", "tap_owner", o.net.TapOwner, "allowed_uid", o.allowUID)
	}
	log.Info("banger-helper serving", "socket", o.socket, "allowed_uid", o.allowUID, "bridge", o.net.Bridge,
		"cidr", o.net.CIDR, "tap_owner", o.net.TapOwner, "version", version, "pid", os.Getpid())
	// The socket listens: a bangerd ordered after this service may start.
	if _, err := sdnotify.Ready(); err != nil {
		log.Warn("tell systemd we are ready", "err", err)
	}
	if err := srv.Serve(ctx, ln); err != nil {
		return err
	}
	// Deliberately no Teardown: taps in use belong to running VMs.
	log.Info("banger-helper stopping; bridge, taps and nat rules stay as they are")
	return nil
}
