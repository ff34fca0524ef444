package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MaxResponseLine bounds the JSON line that answers a request (and that
// starts a session stream). The largest real answers (a session list, the
// listening ports of a busy guest) are a few KiB; a guest that sends more
// is refused instead of being buffered.
const MaxResponseLine = 1 << 20

// ErrLineTooLong is returned by ReadLine for a line over its limit.
var ErrLineTooLong = errors.New("line too long")

// ReadLine reads one '\n'-terminated line of at most max bytes (without the
// newline) and never reads past it, so a stream can go on with frames. It
// allocates at most max bytes whatever the peer sends.
func ReadLine(r io.Reader, max int) ([]byte, error) {
	var line []byte
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if b[0] == '\n' {
			return line, nil
		}
		if len(line) >= max {
			return nil, fmt.Errorf("%w: over %d bytes without a newline", ErrLineTooLong, max)
		}
		line = append(line, b[0])
	}
}

// Default deadlines for one request/response operation, used when the
// caller's context has none. A guest that never answers costs a goroutine
// for this long, never forever.
var opTimeouts = map[string]time.Duration{
	OpPing:     10 * time.Second,
	OpSync:     2 * time.Minute, // flushing a large page cache under TCG
	OpPoweroff: 30 * time.Second,
	OpPorts:    30 * time.Second,
	OpSSHSetup: time.Minute, // may generate host keys first
	// File operations: the first line only (transfers are bounded by
	// FileIdle); a recursive removal or a watch armed on a large tree
	// takes a while under emulation.
	OpFileList:   2 * time.Minute,
	OpFileRemove: 10 * time.Minute,
	OpFileWatch:  2 * time.Minute,
}

// DefaultCallTimeout applies to the operations opTimeouts does not name
// (e.g. the response line of the session operations).
const DefaultCallTimeout = 30 * time.Second

// OpTimeout is the default deadline of op's response.
func OpTimeout(op string) time.Duration {
	if d, ok := opTimeouts[op]; ok {
		return d
	}
	return DefaultCallTimeout
}

// WithOpDeadline returns ctx bounded by op's default deadline when ctx has
// no deadline of its own (an earlier one is kept).
func WithOpDeadline(ctx context.Context, op string) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, OpTimeout(op))
}

// deadlineSetter is the part of a stream that IdleReader needs.
type deadlineSetter interface {
	io.Reader
	SetReadDeadline(time.Time) error
}

// IdleReader returns a reader over st that fails when st stays silent for
// idle: streaming operations (exec output, exports) have no total
// deadline, since they may legitimately run long, but a guest cannot hold
// a reader forever without sending anything.
func IdleReader(st deadlineSetter, idle time.Duration) io.Reader {
	return idleReader{st, idle}
}

type idleReader struct {
	st   deadlineSetter
	idle time.Duration
}

func (r idleReader) Read(p []byte) (int, error) {
	r.st.SetReadDeadline(time.Now().Add(r.idle))
	n, err := r.st.Read(p)
	if err != nil && isTimeout(err) {
		return n, fmt.Errorf("guest sent nothing for %s: %w", r.idle, err)
	}
	return n, err
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// UploadIdle is how long an upload into a guest (a workspace, an image
// build's --copy) may go without a byte moving in either direction
// before it fails: a guest that stopped reading (soft lockups under
// emulation, a wedged agent) or that never answers must not hold the
// upload, its VM and its caller forever.
const UploadIdle = 2 * time.Minute

// ErrIdle is wrapped by the errors of an IdleConn on which nothing moved
// for its idle time.
var ErrIdle = errors.New("no progress")

// IdleConn wraps st so that a transfer on it ends in bounded time once
// nothing has moved in either direction for idle: a write blocked
// because the peer stopped reading and a read waiting for a peer that
// stopped answering both fail with an error wrapping ErrIdle. Progress
// either way keeps both directions alive, so an upload whose answer
// comes only after its last byte is not cut short however long it runs.
// Closing the returned conn stops its watchdog and closes st.
func IdleConn(st net.Conn, idle time.Duration) net.Conn {
	c := &idleConn{Conn: st, idle: idle, done: make(chan struct{})}
	c.last.Store(time.Now().UnixNano())
	go c.watch()
	return c
}

type idleConn struct {
	net.Conn
	idle  time.Duration
	last  atomic.Int64 // UnixNano of the last byte moved
	fired atomic.Bool
	done  chan struct{}
	once  sync.Once
}

func (c *idleConn) watch() {
	t := time.NewTicker(max(c.idle/8, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			if now.Sub(time.Unix(0, c.last.Load())) >= c.idle {
				c.fired.Store(true)
				// A deadline in the past wakes blocked reads and writes.
				c.Conn.SetDeadline(time.Unix(1, 0))
				return
			}
		}
	}
}

func (c *idleConn) moved(n int, err error) (int, error) {
	if n > 0 {
		c.last.Store(time.Now().UnixNano())
	}
	if err != nil && c.fired.Load() {
		err = fmt.Errorf("%w: nothing moved either way for %s", ErrIdle, c.idle)
	}
	return n, err
}

func (c *idleConn) Read(p []byte) (int, error)  { return c.moved(c.Conn.Read(p)) }
func (c *idleConn) Write(p []byte) (int, error) { return c.moved(c.Conn.Write(p)) }

func (c *idleConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}
