package agent_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/guest"
)

// fakeHybrid is the host side of a Firecracker hybrid vsock device: it
// reads the CONNECT line, records it and lets answer respond.
func fakeHybrid(t *testing.T, answer func(conn net.Conn, port string)) (string, <-chan string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vsock.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	lines := make(chan string, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				// Byte by byte, to see exactly what the client sent
				// before it waits for the answer.
				var line []byte
				b := make([]byte, 1)
				for {
					if _, err := conn.Read(b); err != nil {
						conn.Close()
						return
					}
					line = append(line, b[0])
					if b[0] == '\n' {
						break
					}
				}
				lines <- string(line)
				port, _ := strings.CutPrefix(strings.TrimSuffix(string(line), "\n"), "CONNECT ")
				answer(conn, port)
			}()
		}
	}()
	return sock, lines
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// The handshake consumes exactly the OK line: bytes the guest sends right
// behind it, in the same segment, stay on the connection.
func TestDialHybridVsockReadsOnlyTheOKLine(t *testing.T) {
	sock, lines := fakeHybrid(t, func(conn net.Conn, port string) {
		io.WriteString(conn, "OK 1073741824\nHELLO")
		io.Copy(io.Discard, conn)
		conn.Close()
	})
	conn, err := agent.DialHybridVsock(ctxT(t, 5*time.Second), sock, agent.VsockPort)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := <-lines; got != "CONNECT 1024\n" {
		t.Errorf("sent %q", got)
	}
	b := make([]byte, 5)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, b); err != nil || string(b) != "HELLO" {
		t.Errorf("after the handshake: %q, %v", b, err)
	}
}

func TestDialHybridVsockErrors(t *testing.T) {
	cases := []struct {
		name    string
		answer  func(net.Conn)
		want    string
		refused bool
	}{
		{"hang up (no guest listener)", func(c net.Conn) { c.Close() }, "the vmm hung up", true},
		{"garbled", func(c net.Conn) { io.WriteString(c, "NOPE\n"); c.Close() }, `unexpected reply "NOPE", want "OK <port>"`, false},
		{"bad port", func(c net.Conn) { io.WriteString(c, "OK x\n"); c.Close() }, `unexpected reply "OK x": bad host port`, false},
		{"endless line", func(c net.Conn) { io.WriteString(c, strings.Repeat("A", 100)); time.Sleep(time.Second); c.Close() }, "not a handshake answer", false},
		{"cut mid-line", func(c net.Conn) { io.WriteString(c, "OK 12"); c.Close() }, `read reply after "OK 12": EOF`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sock, _ := fakeHybrid(t, func(conn net.Conn, _ string) { c.answer(conn) })
			_, err := agent.DialHybridVsock(ctxT(t, 5*time.Second), sock, 52)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
			if !strings.Contains(err.Error(), "vsock connect to guest port 52 via "+sock) {
				t.Errorf("err %v does not name the port and socket", err)
			}
			if got := errors.Is(err, agent.ErrVsockRefused); got != c.refused {
				t.Errorf("errors.Is(ErrVsockRefused) = %v", got)
			}
		})
	}
}

// A VMM that never answers is bounded by the context.
func TestDialHybridVsockContext(t *testing.T) {
	sock, _ := fakeHybrid(t, func(conn net.Conn, _ string) {
		time.Sleep(5 * time.Second)
		conn.Close()
	})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := agent.DialHybridVsock(ctx, sock, 1024)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %s", d)
	}
	_, err = agent.DialHybridVsock(ctxT(t, 5*time.Second), filepath.Join(t.TempDir(), "none.sock"), 1024)
	if err == nil || !strings.HasPrefix(err.Error(), "dial vsock socket: ") {
		t.Errorf("missing socket: %v", err)
	}
}

// WaitReadyVsock retries while the guest has no listener, then runs a
// real agent session over the stream.
func TestWaitReadyVsock(t *testing.T) {
	srv := &guest.Server{Log: log.New(io.Discard, "", 0)}
	var attempts atomic.Int32
	sock, _ := fakeHybrid(t, func(conn net.Conn, port string) {
		if attempts.Add(1) < 3 || port != "1024" {
			conn.Close()
			return
		}
		io.WriteString(conn, "OK 1073741824\n")
		srv.ServeConn(context.Background(), struct {
			io.Reader
			io.WriteCloser
		}{bufio.NewReader(conn), conn})
	})
	c, resp, err := agent.WaitReadyVsock(ctxT(t, 10*time.Second), sock, agent.VsockPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !resp.OK || attempts.Load() != 3 {
		t.Errorf("resp %+v after %d attempts", resp, attempts.Load())
	}
	if _, err := c.Ping(ctxT(t, 5*time.Second)); err != nil {
		t.Errorf("second ping: %v", err)
	}
}

func TestWaitReadyVsockGivesUp(t *testing.T) {
	sock, _ := fakeHybrid(t, func(conn net.Conn, _ string) { conn.Close() })
	_, _, err := agent.WaitReadyVsock(ctxT(t, 2*time.Second), sock, agent.VsockPort)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "the vmm hung up") {
		t.Errorf("err %v", err)
	}
}
