package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"banger/internal/network"
	"banger/internal/privhelper"
)

// helperClient is the part of privhelper.Client the doctor uses: both
// methods send the helper's read-only "state" operation.
type helperClient interface {
	Config(ctx context.Context) (network.Config, error)
	State(ctx context.Context) (network.State, error)
}

var _ helperClient = (*privhelper.Client)(nil)

// helperView is what the privileged helper answered.
type helperView struct {
	socket string
	cfg    network.Config
	err    error // nil: the helper answered and accepts this user
	state  network.State
	// stateErr is the error of the state call (set when err is).
	stateErr error
}

// askHelper asks the helper for its configuration and state, each call
// bounded by timeout even if the helper accepts the connection and never
// answers (the client itself keeps waiting for a late answer for a while).
func askHelper(ctx context.Context, c helperClient, socket string, timeout time.Duration) helperView {
	hv := helperView{socket: socket}
	hv.cfg, hv.err = bounded(ctx, timeout, c.Config)
	if hv.err != nil {
		hv.stateErr = hv.err
		return hv
	}
	hv.state, hv.stateErr = bounded(ctx, timeout, c.State)
	return hv
}

// bounded runs f with a context that ends after timeout and returns by
// then at the latest, even if f does not; a late result is dropped.
func bounded[T any](ctx context.Context, timeout time.Duration, f func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("no answer within %s: %w", timeout, ctx.Err())
	}
}

// unwrapPath drops the "open PATH:" of a *fs.PathError.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// bridgeWanted reports whether the configured network mode would use the
// bridge where it can.
func bridgeWanted(mode string) bool { return mode == "auto" || mode == "bridge" }

// netInput is what the network check looks at.
type netInput struct {
	mode       string // config network
	euid       int
	bridge     string // config bridge_name
	configFile string
	// helper is the helper's answer; nil when it was not asked.
	helper *helperView
	// linkType returns the type of the link called name ("" if none).
	linkType func(name string) (string, error)
}

// checkNetwork reports how VMs will be networked, the way the daemon
// decides it (internal/daemon newNetworking). bridged reports that new VMs
// get a tap on the bridge, so QEMU needs /dev/net/tun.
func checkNetwork(in netInput) (c Check, bridged bool) {
	c.Name = "network"
	if !bridgeWanted(in.mode) {
		c.Status, c.Detail = Pass, fmt.Sprintf("network = %s: no bridge, no helper needed", in.mode)
		return c, false
	}
	strict := in.mode == "bridge"
	if in.euid == 0 {
		typ, err := in.linkType(in.bridge)
		switch {
		case err != nil:
			c.Status, c.Detail = Warn, fmt.Sprintf("running as root: bridged networking in-process, but looking up bridge %s failed: %v", in.bridge, err)
		case typ == "":
			c.Status, c.Detail = Pass, fmt.Sprintf("running as root: bridged networking in-process; bridge %s is created on the first bridged VM", in.bridge)
		case typ != "bridge":
			c.Status = Fail
			c.Detail = fmt.Sprintf("link %s exists and is a %s, not a bridge: bridged VMs cannot start", in.bridge, typ)
			c.Fix = fmt.Sprintf("set bridge_name in %s to an unused name, or remove the link (ip link del %s)", in.configFile, in.bridge)
		default:
			c.Status, c.Detail = Pass, fmt.Sprintf("running as root: bridged networking in-process on bridge %s", in.bridge)
		}
		return c, c.Status != Fail
	}
	hv := in.helper
	if hv == nil {
		hv = &helperView{err: errors.New("not asked")}
	}
	userFallback := func(detail, fix string) (Check, bool) {
		if strict {
			c.Status = Fail
			c.Detail = detail + `: with network = "bridge" the daemon refuses to start`
			c.Fix = fix + `; or set network = "auto" (user-mode networking without the helper) in ` + in.configFile
		} else {
			c.Status = Warn
			c.Detail = detail + ": VMs will use user-mode networking"
			c.Fix = fix
		}
		return c, false
	}
	switch {
	case errors.Is(hv.err, privhelper.ErrForbidden):
		return userFallback(fmt.Sprintf("the privileged helper at %s refuses uid %d", hv.socket, in.euid),
			fmt.Sprintf("run `sudo banger system install` (or restart banger-helper with --allow-uid %d) for bridged networking", in.euid))
	case hv.err != nil:
		reason := hv.err.Error()
		switch {
		case errors.Is(hv.err, syscall.ENOENT):
			reason = "no socket: not installed or not running"
		case errors.Is(hv.err, syscall.ECONNREFUSED):
			reason = "nothing listens on the socket"
		}
		return userFallback(fmt.Sprintf("privileged helper not reachable at %s (%s)", hv.socket, reason),
			"run `sudo banger system install` for bridged networking")
	}
	if hv.cfg.TapOwner != in.euid {
		c.Status = Fail
		c.Detail = fmt.Sprintf("the privileged helper's taps belong to uid %d, not to this user (uid %d): QEMU cannot open them, bridged VMs fail to start", hv.cfg.TapOwner, in.euid)
		c.Fix = fmt.Sprintf("restart banger-helper with --tap-owner %d (sudo banger system install sets it up)", in.euid)
		if !strict {
			c.Fix += fmt.Sprintf(`, or set network = "user" in %s`, in.configFile)
		}
		return c, true
	}
	c.Status = Pass
	c.Detail = fmt.Sprintf("bridged networking through the privileged helper at %s (bridge %s, %s)", hv.socket, hv.cfg.Bridge, hv.cfg.CIDR)
	return c, true
}

// checkTun checks that QEMU, run by this user, can open its tap: taps are
// opened through /dev/net/tun. Opening the device alone creates nothing.
func checkTun(open func() error, bridged bool, euid int) Check {
	c := Check{Name: "tun"}
	if !bridged {
		c.Status, c.Detail = Pass, "not needed: VMs get no tap"
		return c
	}
	if err := open(); err != nil {
		c.Status = Fail
		c.Detail = fmt.Sprintf("cannot open /dev/net/tun (%v): bridged VMs cannot open their tap", unwrapPath(err))
		if euid == 0 {
			c.Fix = "sudo modprobe tun (the device is /dev/net/tun, char 10:200)"
		} else {
			c.Fix = "sudo chmod 0666 /dev/net/tun (its usual mode), or sudo modprobe tun if it is missing"
		}
		return c
	}
	c.Status, c.Detail = Pass, "/dev/net/tun usable"
	return c
}

// linkType returns the type of the link called name, "" when there is
// none. Reading links needs no privilege.
func linkType(name string) (string, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return "", nil
		}
		return "", err
	}
	return l.Type(), nil
}

// daemonRunning reports whether a daemon accepts connections on its API
// socket. It only connects: nothing is started.
func daemonRunning(socket string) bool {
	c, err := net.DialTimeout("unix", socket, daemonDialTimeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
