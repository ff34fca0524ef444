package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
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
