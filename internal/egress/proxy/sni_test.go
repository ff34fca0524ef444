package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// byteConn is a net.Conn reading from a byte slice, for feeding hostile
// bytes to the ClientHello peek.
type byteConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *byteConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *byteConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c *byteConn) SetWriteDeadline(time.Time) error { return nil }
func (c *byteConn) SetDeadline(time.Time) error      { return nil }
func (c *byteConn) Close() error                     { return nil }
func (c *byteConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *byteConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// clientHello returns the first flight of a real Go TLS client.
func clientHello(t testing.TB, sni string) []byte {
	a, b := net.Pipe()
	go func() {
		tls.Client(a, &tls.Config{ServerName: sni, NextProtos: []string{"h2", "http/1.1"}}).Handshake()
		a.Close()
	}()
	buf := make([]byte, 64<<10)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	return buf[:n]
}

func TestPeekClientHello(t *testing.T) {
	hello := clientHello(t, "api.example.test")
	rest := []byte("more bytes after the hello")
	data := append(append([]byte(nil), hello...), rest...)
	h, rc, err := peekClientHello(context.Background(), &byteConn{r: bytes.NewReader(data[1:])}, data[:1], time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "api.example.test" || len(h.SupportedProtos) != 2 {
		t.Errorf("hello: %q %v", h.ServerName, h.SupportedProtos)
	}
	// Nothing is consumed: the replay gives every byte back, in order.
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, data) {
		t.Errorf("replay differs: %d bytes, want %d", len(got), len(data))
	}
	for _, bad := range [][]byte{
		{0x16},
		{0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0},
		append([]byte{0x16, 3, 1, 0xff, 0xff}, make([]byte, 70<<10)...),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		hello[:len(hello)/2],
	} {
		if _, _, err := peekClientHello(context.Background(), &byteConn{r: bytes.NewReader(bad[1:])}, bad[:1], time.Second); err == nil {
			t.Errorf("peekClientHello accepted %d hostile bytes", len(bad))
		}
	}
}

// FuzzPeekClientHello: hostile first bytes never panic the peek, never
// make it read past its cap, and whatever it read is replayed intact.
func FuzzPeekClientHello(f *testing.F) {
	f.Add(clientHello(f, "a.test"))
	f.Add([]byte{0x16, 3, 1, 0, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		_, rc, err := peekClientHello(context.Background(), &byteConn{r: bytes.NewReader(data[1:])}, data[:1], time.Second)
		if err != nil {
			return
		}
		got, _ := io.ReadAll(rc)
		if !bytes.Equal(got, data) {
			t.Fatalf("replay differs")
		}
	})
}
