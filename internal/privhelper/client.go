package privhelper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/network"
)

// cancelGrace is how long a cancelled call still waits for the helper's
// answer.
const cancelGrace = 5 * time.Second

// Client talks to banger-helper. It implements network.Host, so the daemon
// uses it exactly like the in-process Host, except that Teardown is not
// offered (ErrNotOffered). Every call opens its own connection; a Client is
// safe for concurrent use. Failures reported by the helper are *Error, which
// matches network.ErrNoBridge, network.ErrNotTap, ErrForbidden... with
// errors.Is.
type Client struct {
	socket string
}

var _ network.Host = (*Client)(nil)

// NewClient returns a client of the helper listening on socket (DefaultSocket
// when empty). It does not connect: use Config to check that the helper
// answers and accepts this process.
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	return &Client{socket: socket}
}

// Socket returns the helper's socket path.
func (c *Client) Socket() string { return c.socket }

// EnsureBridge implements network.Host.
func (c *Client) EnsureBridge(ctx context.Context) error {
	_, err := c.call(ctx, request{Op: OpEnsureBridge})
	return err
}

// AcquireTap implements network.Host. The tap is owned by the helper's tap
// owner (normally the daemon's uid), so an unprivileged QEMU can open it.
func (c *Client) AcquireTap(ctx context.Context, b network.Binding) (string, error) {
	resp, err := c.call(ctx, request{Op: OpAcquireTap, Binding: &b})
	if err != nil {
		return "", err
	}
	if resp.Tap == "" {
		return "", fmt.Errorf("%s: privileged helper answered no tap name", OpAcquireTap)
	}
	return resp.Tap, nil
}

// ReleaseTap implements network.Host. As a cleanup path it is sent even when
// ctx is done, bounded by its own timeout.
func (c *Client) ReleaseTap(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	_, err := c.call(ctx, request{Op: OpReleaseTap, Tap: name})
	return err
}

// SetNAT implements network.Host.
func (c *Client) SetNAT(ctx context.Context, guests []netip.Addr) error {
	list := make([]netip.Addr, len(guests))
	for i, g := range guests {
		list[i] = g.Unmap()
	}
	_, err := c.call(ctx, request{Op: OpSetNAT, Guests: &list})
	return err
}

// SetEgress implements network.Host.
func (c *Client) SetEgress(ctx context.Context, nat []netip.Addr, eg network.Egress) error {
	list := make([]netip.Addr, len(nat))
	for i, g := range nat {
		list[i] = g.Unmap()
	}
	_, err := c.call(ctx, request{Op: OpSetEgress, Guests: &list, Egress: &eg})
	return err
}

// State implements network.Host: the helper's Host state.
func (c *Client) State(ctx context.Context) (network.State, error) {
	resp, err := c.call(ctx, request{Op: OpState})
	if err != nil {
		return network.State{}, err
	}
	if resp.State == nil {
		return network.State{}, fmt.Errorf("%s: privileged helper answered no state", OpState)
	}
	return resp.State.state(), nil
}

// Config returns the helper's network configuration (bridge, subnet, tap
// prefix and owner...), which the daemon must use instead of its own so that
// guest addresses are allocated in the subnet the bridge really has. It is
// also the way to check that the helper answers and accepts this process
// (errors.Is(err, ErrForbidden) when it does not).
func (c *Client) Config(ctx context.Context) (network.Config, error) {
	resp, err := c.call(ctx, request{Op: OpState})
	if err != nil {
		return network.Config{}, err
	}
	if resp.Config == nil {
		return network.Config{}, fmt.Errorf("%s: privileged helper answered no configuration", OpState)
	}
	return resp.Config.config(), nil
}

// Teardown implements network.Host by refusing: the helper offers no way to
// delete the bridge and every tap to its clients. It returns ErrNotOffered
// (which matches errors.ErrUnsupported).
func (c *Client) Teardown(ctx context.Context) error {
	return fmt.Errorf("teardown: %w", ErrNotOffered)
}

// DNSSockets returns the helper's DNS sockets on port 53 of the bridge
// address: a UDP socket and a listening TCP socket, ready for dns.Server.Serve.
// The caller owns (and closes) them; the helper keeps its own copies, so
// asking again, e.g. after a daemon restart, returns the same sockets.
func (c *Client) DNSSockets(ctx context.Context) (net.PacketConn, net.Listener, error) {
	resp, fds, err := c.roundTrip(ctx, request{Op: OpDNSSockets})
	if err != nil {
		return nil, nil, err
	}
	defer func() { closeFDs(fds) }()
	fail := func(format string, args ...any) (net.PacketConn, net.Listener, error) {
		return nil, nil, fmt.Errorf("%s: %s", OpDNSSockets, fmt.Sprintf(format, args...))
	}
	if resp.DNS == nil || len(fds) != len(dnsFDs) {
		return fail("privileged helper passed %d descriptors, want %d", len(fds), len(dnsFDs))
	}
	udp := os.NewFile(uintptr(fds[0]), "dns-udp")
	tcp := os.NewFile(uintptr(fds[1]), "dns-tcp")
	fds = nil // owned by the files now
	defer udp.Close()
	defer tcp.Close()
	// FilePacketConn and FileListener duplicate the descriptors.
	pc, err := net.FilePacketConn(udp)
	if err != nil {
		return fail("udp socket: %v", err)
	}
	l, err := net.FileListener(tcp)
	if err != nil {
		pc.Close()
		return fail("tcp socket: %v", err)
	}
	_, isUDP := pc.(*net.UDPConn)
	_, isTCP := l.(*net.TCPListener)
	if !isUDP || !isTCP {
		pc.Close()
		l.Close()
		return fail("privileged helper passed a %T and a %T, want UDP and TCP sockets", pc, l)
	}
	return pc, l, nil
}

// call runs a request that passes no descriptors.
func (c *Client) call(ctx context.Context, req request) (*response, error) {
	resp, fds, err := c.roundTrip(ctx, req)
	closeFDs(fds)
	return resp, err
}

// roundTrip sends req on a new connection and reads the response and any
// descriptors passed with it (which the caller must close). A failure the
// helper reports is an *Error.
func (c *Client) roundTrip(ctx context.Context, req request) (*response, []int, error) {
	req.Version = ProtocolVersion
	b, err := json.Marshal(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: encode request: %w", req.Op, err)
	}
	b = append(b, '\n')
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil && ctx.Err() != nil {
		return nil, nil, fmt.Errorf("%s: %w", req.Op, ctx.Err())
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: privileged helper not reachable at %s (is banger-helper running?): %w", req.Op, c.socket, err)
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		conn.Close()
		return nil, nil, fmt.Errorf("%s: %s is not a unix socket", req.Op, c.socket)
	}
	defer uc.Close()
	// Cancelling ctx closes the write side, which tells the helper to
	// cancel the operation, and still reads its answer for a while, so
	// that a result already under way (a tap) is not lost but given back.
	stop := context.AfterFunc(ctx, func() {
		uc.CloseWrite()
		uc.SetDeadline(time.Now().Add(cancelGrace))
	})
	defer stop()

	_, werr := uc.Write(b)
	// Even when the write failed (a helper refusing the caller closes the
	// connection without reading), its answer may be waiting.
	line, fds, rerr := readResponse(uc)
	if err := ctx.Err(); err != nil {
		closeFDs(fds)
		if rerr == nil && req.Op == OpAcquireTap {
			c.releaseLate(line)
		}
		return nil, nil, fmt.Errorf("%s: %w", req.Op, err)
	}
	if rerr != nil {
		closeFDs(fds)
		if werr != nil {
			rerr = werr
		}
		return nil, nil, fmt.Errorf("%s: privileged helper at %s: %w", req.Op, c.socket, rerr)
	}
	var resp response
	if err := json.Unmarshal(line, &resp); err != nil {
		closeFDs(fds)
		return nil, nil, fmt.Errorf("%s: bad response from privileged helper: %w: %s", req.Op, err, errorLine(line))
	}
	if !resp.OK {
		closeFDs(fds)
		e := &Error{Op: req.Op, Code: CodeFailed, Message: "failed without an explanation"}
		if resp.Error != nil {
			e.Code, e.Message = resp.Error.Code, resp.Error.Message
		}
		return nil, nil, e
	}
	return &resp, fds, nil
}

// releaseLate gives back the tap of an acquire_tap answer that arrived after
// its caller gave up.
func (c *Client) releaseLate(line []byte) {
	var resp response
	if json.Unmarshal(line, &resp) != nil || !resp.OK || resp.Tap == "" {
		return
	}
	c.ReleaseTap(context.Background(), resp.Tap) // best effort: a daemon restart reconciles leftovers
}

// readResponse reads one line and the descriptors that arrive with it.
func readResponse(uc *net.UnixConn) ([]byte, []int, error) {
	var (
		line []byte
		fds  []int
		buf  = make([]byte, 32<<10)
		oob  = make([]byte, unix.CmsgSpace(4*4))
	)
	for {
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		n = max(n, 0) // -1 with some errors
		if oobn > 0 {
			got, perr := parseRights(oob[:oobn])
			fds = append(fds, got...)
			if perr != nil && err == nil {
				err = perr
			}
		}
		line = append(line, buf[:n]...)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			return line[:i], fds, nil
		}
		if err == nil && len(line) > maxResponse {
			err = fmt.Errorf("response longer than %d bytes", maxResponse)
		}
		if err == nil && n == 0 {
			err = errors.New("empty read")
		}
		if err != nil {
			if len(line) == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("no response: %w", err)
			}
			return nil, fds, err
		}
	}
}

// parseRights extracts the descriptors of SCM_RIGHTS messages.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return fds, fmt.Errorf("parse descriptors: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// errorLine is a compact rendering of a response for error messages.
func errorLine(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
