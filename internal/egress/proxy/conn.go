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

// idleConn cuts a connection that has been idle (no byte read or written)
// for its idle timeout, on top of any deadline its user (e.g. net/http)
// sets: a peer that stalls (slowloris, a dead upstream) is cut, while a
// long one-way transfer (a download during which the guest sends
// nothing) is not, since activity in either direction counts. The two
// ends of a tunnel share one activity clock (newIdlePair). It also
// counts bytes.
type idleConn struct {
	net.Conn
	idle time.Duration
	act  *atomic.Int64 // last activity, Unix nanoseconds

	mu            sync.Mutex
	readDeadline  time.Time
	writeDeadline time.Time

	in, out atomic.Int64
}

func newIdleConn(c net.Conn, idle time.Duration) *idleConn {
	act := new(atomic.Int64)
	act.Store(time.Now().UnixNano())
	return &idleConn{Conn: c, idle: idle, act: act}
}

// shareActivity makes o (not yet in use) share c's activity clock.
func (c *idleConn) shareActivity(o *idleConn) { o.act = c.act }

// findIdle returns the idleConn under c's wrappers, or nil.
func findIdle(c net.Conn) *idleConn {
	for {
		switch x := c.(type) {
		case *idleConn:
			return x
		case *rewindConn:
			c = x.Conn
		case *servedConn:
			c = x.Conn
		default:
			return nil
		}
	}
}

func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// io runs op (a read or a write) with the earlier of the user's deadline
// and the idle limit, again as long as the idle limit fired while the
// connection was in fact active in the other direction.
func (c *idleConn) io(p []byte, user func() time.Time, set func(time.Time) error, op func([]byte) (int, error), count *atomic.Int64) (int, error) {
	for {
		u := user()
		last := time.Unix(0, c.act.Load())
		set(earlier(u, last.Add(c.idle)))
		n, err := op(p)
		if n > 0 {
			c.act.Store(time.Now().UnixNano())
			count.Add(int64(n))
		}
		if err != nil && isTimeout(err) {
			now := time.Now()
			if (u.IsZero() || now.Before(u)) && now.Sub(time.Unix(0, c.act.Load())) < c.idle {
				if n > 0 {
					return n, nil // progress; the caller goes on
				}
				continue
			}
		}
		return n, err
	}
}

func (c *idleConn) Read(p []byte) (int, error) {
	return c.io(p, func() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.readDeadline },
		c.Conn.SetReadDeadline, c.Conn.Read, &c.in)
}

func (c *idleConn) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) { // a write cut by a deadline may have sent part
		n, err := c.io(p[written:], func() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.writeDeadline },
			c.Conn.SetWriteDeadline, c.Conn.Write, &c.out)
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
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
