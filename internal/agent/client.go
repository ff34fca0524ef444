package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/hashicorp/yamux"
)

// Client is the host side of one agent connection.
type Client struct {
	conn net.Conn
	sess *yamux.Session
	// opTimeout gives an operation's default deadline (OpTimeout;
	// shortened by tests).
	opTimeout func(op string) time.Duration
	// idle, when set, replaces FileIdle (tests).
	idle time.Duration
}

// Dial connects to the VMM's end of the agent channel at socketPath.
// It does not wait for the guest: use Ping for that.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("dial agent socket: %w", err)
	}
	return NewClient(conn)
}

// NewClient starts an agent session over an established connection (e.g.
// a Firecracker hybrid-vsock stream after its CONNECT handshake).
func NewClient(conn net.Conn) (*Client, error) {
	sess, err := yamux.Client(conn, muxConfig())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("start agent session: %w", err)
	}
	go refuseStreams(sess)
	return &Client{conn: conn, sess: sess, opTimeout: OpTimeout}, nil
}

// refuseStreams closes every stream the guest opens: only the host opens
// streams, and an unaccepted stream would hold buffered guest data.
func refuseStreams(sess *yamux.Session) {
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		st.Close()
	}
}

// muxConfig is shared by both ends. Keepalives are off: the guest must not
// write while no host is attached, and the host detects a dead VMM through
// the VMM process, not through the stream.
func muxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.LogOutput = io.Discard
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 0
	c.MaxStreamWindowSize = StreamWindow
	return c
}

// StreamWindow is the per-stream flow-control window on both ends: large
// enough that bulk transfers (workspaces, piped stdin) are not throttled by
// round trips over the slow (emulated) channel.
const StreamWindow = 8 << 20

// Close ends the session; the guest notices and waits for the next host.
func (c *Client) Close() error {
	c.sess.Close()
	return c.conn.Close()
}

// Closed reports whether the session is gone.
func (c *Client) Closed() bool { return c.sess.IsClosed() }

// Open starts a stream carrying req. The caller owns the stream.
func (c *Client) Open(ctx context.Context, req Request) (net.Conn, error) {
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("open agent stream: %w", err)
	}
	// A guest that does not take the request line cannot hold the
	// caller beyond ctx's deadline, or the default one.
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(DefaultCallTimeout)
	}
	st.SetWriteDeadline(dl)
	b, _ := json.Marshal(req)
	if _, err := st.Write(append(b, '\n')); err != nil {
		st.Close()
		return nil, fmt.Errorf("send %s request: %w", req.Op, err)
	}
	st.SetWriteDeadline(time.Time{})
	return st, nil
}

// Call runs a simple request/response operation. The response line is at
// most MaxResponseLine bytes, and the call ends at ctx's deadline or, when
// ctx has none, at the operation's default (OpTimeout).
func (c *Client) Call(ctx context.Context, req Request) (Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opTimeout(req.Op))
		defer cancel()
	}
	st, err := c.Open(ctx, req)
	if err != nil {
		return Response{}, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	line, err := ReadLine(st, MaxResponseLine)
	if err != nil {
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("agent %s: %w", req.Op, ctx.Err())
		}
		return Response{}, fmt.Errorf("agent %s: read response: %w", req.Op, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("agent %s: bad response: %w", req.Op, err)
	}
	if !resp.OK {
		return resp, fmt.Errorf("agent %s: %s", req.Op, resp.Error)
	}
	return resp, nil
}

// Ping checks that the guest agent answers.
func (c *Client) Ping(ctx context.Context) (Response, error) {
	return c.Call(ctx, Request{Op: OpPing})
}

// WaitReady dials socketPath and pings until the agent answers or ctx ends.
// Each attempt uses a fresh session, so bytes left over from an earlier host
// connection can never confuse the new one.
func WaitReady(ctx context.Context, socketPath string) (*Client, Response, error) {
	return waitReady(ctx, func(ctx context.Context) (*Client, error) { return Dial(ctx, socketPath) })
}

// WaitReadyDial is WaitReady over connections that dial makes (an
// engine's agent channel): it connects and pings until the agent answers
// or ctx ends, each attempt with a fresh connection.
func WaitReadyDial(ctx context.Context, dial func(context.Context) (net.Conn, error)) (*Client, Response, error) {
	return waitReady(ctx, func(ctx context.Context) (*Client, error) {
		conn, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		return NewClient(conn)
	})
}

// waitReady makes sessions with dial and pings until the agent answers or
// ctx ends.
func waitReady(ctx context.Context, dial func(context.Context) (*Client, error)) (*Client, Response, error) {
	var last error
	for attempt := 0; ; attempt++ {
		c, err := dial(ctx)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, pingTimeout(attempt))
			var resp Response
			resp, err = c.Ping(pctx)
			cancel()
			if err == nil {
				return c, resp, nil
			}
			c.Close()
		}
		// An attempt cut short by the deadline says nothing about the
		// guest: keep the cause seen before it. (A connection deadline set
		// from ctx can fire a moment before ctx reports it.)
		if last == nil || (ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded)) {
			last = err
		}
		select {
		case <-ctx.Done():
			return nil, Response{}, fmt.Errorf("guest agent did not answer: %w (last error: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pingTimeout grows so that a guest still booting is not hammered with
// sessions, while a ready guest is found quickly.
func pingTimeout(attempt int) time.Duration {
	d := 500 * time.Millisecond << min(attempt, 3)
	return d
}

// ErrNoExit is returned when an exec stream ends without an exit frame.
var ErrNoExit = errors.New("exec stream ended without an exit status")
