package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// maxClientHello bounds what is read while looking for the ClientHello
// (a record is at most 16 KiB + header; a hello spanning records stays
// far below this).
const maxClientHello = 64 << 10

var errHelloSeen = errors.New("client hello captured")

// recordingConn feeds crypto/tls from a reader and remembers what it
// read, within a cap; it refuses writes (nothing is sent to the guest
// while peeking).
type recordingConn struct {
	net.Conn
	r   io.Reader
	rec []byte
}

func (c *recordingConn) Read(p []byte) (int, error) {
	if room := maxClientHello - len(c.rec); room <= 0 {
		return 0, errors.New("client hello too large")
	} else if len(p) > room {
		p = p[:room]
	}
	n, err := c.r.Read(p)
	c.rec = append(c.rec, p[:n]...)
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) { return len(p), nil }

// peekClientHello reads the TLS ClientHello from conn (prefix holds bytes
// already read from it) with crypto/tls's own parser, and returns it with
// a conn that replays every byte read so far, so the handshake can go on
// elsewhere untouched (pass-through) or be answered (interception).
func peekClientHello(ctx context.Context, conn net.Conn, prefix []byte, timeout time.Duration) (*tls.ClientHelloInfo, net.Conn, error) {
	rc := &recordingConn{Conn: conn, r: io.MultiReader(bytes.NewReader(prefix), conn)}
	var hello *tls.ClientHelloInfo
	srv := tls.Server(rc, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			cp := *h
			cp.Conn = nil
			hello = &cp
			return nil, errHelloSeen
		},
	})
	conn.SetReadDeadline(time.Now().Add(timeout))
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := srv.HandshakeContext(hctx)
	conn.SetReadDeadline(time.Time{})
	if hello == nil {
		if err == nil {
			err = errors.New("no client hello")
		}
		return nil, nil, fmt.Errorf("read tls client hello: %w", err)
	}
	return hello, &rewindConn{Conn: conn, buf: rc.rec}, nil
}
