package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// VsockPort is the AF_VSOCK port the guest agent listens on when the VM
// has a vsock device (Firecracker). Ports below 1024 are reserved for
// privileged binders; 1024 is the first that is not.
const VsockPort uint32 = 1024

// ErrVsockRefused reports that the VMM hung up during the hybrid vsock
// handshake, which is what Firecracker does when nothing in the guest
// listens on the port (yet): worth retrying while the guest boots.
var ErrVsockRefused = errors.New("vsock connection refused")

// maxHandshakeLine bounds the "OK <port>\n" reply; the longest valid one
// is 14 bytes.
const maxHandshakeLine = 32

// DialHybridVsock connects to a guest vsock port through a Firecracker
// style hybrid vsock device: it connects to the device's host Unix socket
// udsPath, sends "CONNECT <port>\n" and expects "OK <hostport>\n". It reads
// exactly that line and nothing more, so the returned connection is the
// raw stream to the guest, ready for NewClient.
//
// A VMM that hangs up instead of answering (no guest listener yet) gives an
// error wrapping ErrVsockRefused; any other reply is an error quoting it.
// ctx bounds the dial and the handshake, not the returned connection.
func DialHybridVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, fmt.Errorf("dial vsock socket: %w", err)
	}
	if err := hybridHandshake(ctx, conn, port); err != nil {
		conn.Close()
		return nil, fmt.Errorf("vsock connect to guest port %d via %s: %w", port, udsPath, err)
	}
	return conn, nil
}

func hybridHandshake(ctx context.Context, conn net.Conn, port uint32) error {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// A cancelled ctx interrupts a blocked read or write.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	err := handshake(conn, port)
	if !stop() {
		// ctx ended: the deadline may have cut the handshake short,
		// and it must not outlive it.
		if err == nil {
			err = ctx.Err()
		} else {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return err
	}
	if err == nil {
		conn.SetDeadline(time.Time{})
		return nil
	}
	// The connection's deadline (ctx's) can fire a moment before ctx
	// itself reports it: say so the way a cancelled ctx would.
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		err = fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
	}
	return err
}

func handshake(conn net.Conn, port uint32) error {
	if _, err := io.WriteString(conn, "CONNECT "+strconv.FormatUint(uint64(port), 10)+"\n"); err != nil {
		return fmt.Errorf("send CONNECT: %w", err)
	}
	// One byte at a time: whatever follows the newline belongs to the
	// guest's stream.
	var line []byte
	b := make([]byte, 1)
	for {
		n, err := conn.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
			if len(line) > maxHandshakeLine {
				return fmt.Errorf("unexpected reply %q...: not a handshake answer", line)
			}
			continue
		}
		if err != nil {
			if len(line) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
				return fmt.Errorf("%w: the vmm hung up (is anything listening on the guest port yet?)", ErrVsockRefused)
			}
			if len(line) > 0 {
				return fmt.Errorf("read reply after %q: %w", line, err)
			}
			return fmt.Errorf("read reply: %w", err)
		}
	}
	rest, ok := strings.CutPrefix(string(line), "OK ")
	if !ok {
		return fmt.Errorf("unexpected reply %q, want \"OK <port>\"", line)
	}
	if _, err := strconv.ParseUint(rest, 10, 32); err != nil {
		return fmt.Errorf("unexpected reply %q: bad host port", line)
	}
	return nil
}

// WaitReadyVsock is WaitReady for a VM whose agent listens on a vsock
// port behind the hybrid vsock socket udsPath: it connects and pings until
// the agent answers or ctx ends, each attempt with a fresh connection.
func WaitReadyVsock(ctx context.Context, udsPath string, port uint32) (*Client, Response, error) {
	return waitReady(ctx, func(ctx context.Context) (*Client, error) {
		conn, err := DialHybridVsock(ctx, udsPath, port)
		if err != nil {
			return nil, err
		}
		return NewClient(conn)
	})
}
