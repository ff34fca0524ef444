package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// idleConn bounds every Read and Write by an idle timeout, on top of any
// deadline its user (e.g. net/http) sets: the effective deadline of an
// operation is the earlier of the two. A peer that stalls (slowloris,
// a dead upstream) is cut after idle. It also counts bytes.
type idleConn struct {
	net.Conn
	idle time.Duration

	mu            sync.Mutex
	readDeadline  time.Time
	writeDeadline time.Time

	in, out atomic.Int64
}

func newIdleConn(c net.Conn, idle time.Duration) *idleConn {
	return &idleConn{Conn: c, idle: idle}
}

func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (c *idleConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	d := earlier(c.readDeadline, time.Now().Add(c.idle))
	c.mu.Unlock()
	c.Conn.SetReadDeadline(d)
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	d := earlier(c.writeDeadline, time.Now().Add(c.idle))
	c.mu.Unlock()
	c.Conn.SetWriteDeadline(d)
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

func (c *idleConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline, c.writeDeadline = t, t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *idleConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.readDeadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *idleConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

// CloseWrite half-closes when the underlying conn can.
func (c *idleConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// rewindConn replays bytes already read from a conn before reading on.
type rewindConn struct {
	net.Conn
	buf []byte
}

func (c *rewindConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *rewindConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// servedConn is what the proxy's http.Server gets: a conn plus who it is
// from and what it is for. Close tells ServeConn the connection is over.
type servedConn struct {
	net.Conn
	info     *connInfo
	once     sync.Once
	done     chan struct{}
	requests atomic.Int64
}

func newServedConn(c net.Conn, info *connInfo) *servedConn {
	return &servedConn{Conn: c, info: info, done: make(chan struct{})}
}

func (c *servedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}

// chanListener hands conns given to push to an http.Server.
type chanListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{}),
		addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
}

var errListenerClosed = errors.New("proxy closed")

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, errListenerClosed
	}
}

func (l *chanListener) push(ctx context.Context, c net.Conn) error {
	select {
	case l.ch <- c:
		return nil
	case <-l.closed:
		return errListenerClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// splice copies both ways until both directions end (or one fails), with
// half-closes passed on, and returns the byte counts (a to b, b to a).
func splice(a, b net.Conn) (ab, ba int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ba = copyHalf(a, b)
	}()
	ab = copyHalf(b, a)
	wg.Wait()
	return ab, ba
}

func copyHalf(dst, src net.Conn) int64 {
	buf := make([]byte, 64<<10)
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			if cw.CloseWrite() == nil {
				return n
			}
		}
	}
	// An error (or no half-close): end both directions.
	dst.Close()
	src.Close()
	return n
}
