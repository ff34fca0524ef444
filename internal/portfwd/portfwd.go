// Package portfwd publishes guest ports on the host: it parses
// --publish specifications and runs the TCP forwarders that carry a host
// port to a guest address in bridge mode (user mode uses the VMM's own
// forwarding).
package portfwd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"banger/internal/model"
)

// Parse reads "[HOSTIP:]HOSTPORT:GUESTPORT"; the host address defaults to
// 127.0.0.1 so nothing is exposed beyond the machine unless asked.
func Parse(spec string) (model.PortMap, error) {
	parts := strings.Split(spec, ":")
	var hostIP, hp, gp string
	switch len(parts) {
	case 2:
		hostIP, hp, gp = "127.0.0.1", parts[0], parts[1]
	case 3:
		hostIP, hp, gp = parts[0], parts[1], parts[2]
	default:
		return model.PortMap{}, fmt.Errorf("--publish %q: want [HOSTIP:]HOSTPORT:GUESTPORT", spec)
	}
	ip, err := netip.ParseAddr(hostIP)
	if err != nil || !ip.Is4() {
		return model.PortMap{}, fmt.Errorf("--publish %q: %q is not an IPv4 address", spec, hostIP)
	}
	port := func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			return 0, fmt.Errorf("--publish %q: %q is not a port (1-65535)", spec, s)
		}
		return n, nil
	}
	h, err := port(hp)
	if err != nil {
		return model.PortMap{}, err
	}
	g, err := port(gp)
	if err != nil {
		return model.PortMap{}, err
	}
	return model.PortMap{HostIP: ip.String(), HostPort: h, GuestPort: g}, nil
}

// CheckFree reports a clear error when a host port is already taken.
func CheckFree(p model.PortMap) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort)))
	if err != nil {
		return fmt.Errorf("host port %s:%d is not available: %w", p.HostIP, p.HostPort, errors.Unwrap(err))
	}
	return ln.Close()
}

// FreePort returns a currently free TCP port on host (e.g. for a user-mode
// VM's ssh forward).
func FreePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Forwarder carries connections from host listeners to a guest.
type Forwarder struct {
	mu  sync.Mutex
	lns []net.Listener
	wg  sync.WaitGroup
}

// Start listens on every mapping's host address and forwards each
// connection to guest:GuestPort. On error nothing is left listening.
func Start(guest netip.Addr, maps []model.PortMap) (*Forwarder, error) {
	f := &Forwarder{}
	for _, m := range maps {
		ln, err := net.Listen("tcp", net.JoinHostPort(m.HostIP, strconv.Itoa(m.HostPort)))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("publish %s:%d: %w", m.HostIP, m.HostPort, err)
		}
		f.lns = append(f.lns, ln)
		target := net.JoinHostPort(guest.String(), strconv.Itoa(m.GuestPort))
		f.wg.Add(1)
		go f.serve(ln, target)
	}
	return f, nil
}

func (f *Forwarder) serve(ln net.Listener, target string) {
	defer f.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var d net.Dialer
			g, err := d.DialContext(ctx, "tcp", target)
			cancel()
			if err != nil {
				return
			}
			defer g.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(g, c); g.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(c, g); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

// Close stops listening (open connections finish on their own).
func (f *Forwarder) Close() {
	if f == nil {
		return
	}
	f.mu.Lock()
	for _, ln := range f.lns {
		ln.Close()
	}
	f.lns = nil
	f.mu.Unlock()
	f.wg.Wait()
}
