package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// fakeAgent serves a yamux session on one end of a pipe and hands every
// stream the host opens to handle (after reading its request line).
func fakeAgent(t *testing.T, handle func(req string, st net.Conn)) *Client {
	t.Helper()
	host, guest := net.Pipe()
	sess, err := yamux.Server(guest, muxConfig())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			st, err := sess.Accept()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				line, err := bufio.NewReader(st).ReadString('\n')
				if err != nil {
					return
				}
				handle(line, st)
			}()
		}
	}()
	c, err := NewClient(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); sess.Close() })
	return c
}

// hugeLine writes a 64 MiB line (then its newline) unless the stream
// breaks first: an unbounded reader would buffer all of it.
func hugeLine(st net.Conn) {
	buf := []byte(strings.Repeat("x", 64<<10))
	for range 1024 {
		if _, err := st.Write(buf); err != nil {
			return
		}
	}
	st.Write([]byte("\n"))
}

func TestCallRefusesEndlessResponseLine(t *testing.T) {
	c := fakeAgent(t, func(_ string, st net.Conn) { hugeLine(st) })
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := c.Call(context.Background(), Request{Op: OpPorts})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("want ErrLineTooLong, got %v", err)
	}
	// The line limit is 1 MiB: with the append growth and yamux's
	// receive buffers the call allocates well under 48 MiB in total
	// (an unbounded reader allocates over twice the 64 MiB line).
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 48<<20 {
		t.Errorf("an oversize response allocated %d MiB", grew>>20)
	}
	// The session survives: a well-behaved stream still works.
	if c.Closed() {
		t.Error("session closed by one bad stream")
	}
}

func TestCallDefaultDeadline(t *testing.T) {
	c := fakeAgent(t, func(_ string, st net.Conn) { io.Copy(io.Discard, st) }) // never answers
	var asked string
	c.opTimeout = func(op string) time.Duration { asked = op; return 200 * time.Millisecond }
	start := time.Now()
	_, err := c.Call(context.Background(), Request{Op: OpPorts})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want a deadline error, got %v", err)
	}
	if asked != OpPorts {
		t.Errorf("deadline looked up for %q", asked)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("call took %s", d)
	}
	// A caller's own deadline wins over the default.
	c.opTimeout = func(string) time.Duration { return time.Hour }
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Call(ctx, Request{Op: OpPing}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("caller deadline: %v", err)
	}
}

func TestOpTimeouts(t *testing.T) {
	for _, op := range []string{OpPing, OpSync, OpPoweroff, OpPorts, OpSSHSetup, OpSessionList, "unknown"} {
		if d := OpTimeout(op); d <= 0 || d > 5*time.Minute {
			t.Errorf("%s: timeout %s", op, d)
		}
	}
	ctx, cancel := WithOpDeadline(context.Background(), OpPorts)
	defer cancel()
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > OpTimeout(OpPorts) {
		t.Errorf("no default deadline: %v %v", dl, ok)
	}
}

func TestCallGoodResponse(t *testing.T) {
	c := fakeAgent(t, func(req string, st net.Conn) {
		if strings.Contains(req, `"ports"`) {
			io.WriteString(st, `{"ok":true,"ports":[{"proto":"tcp","addr":"0.0.0.0","port":22}]}`+"\n")
		}
	})
	resp, err := c.Call(context.Background(), Request{Op: OpPorts})
	if err != nil || len(resp.Ports) != 1 || resp.Ports[0].Port != 22 {
		t.Fatalf("%+v %v", resp, err)
	}
}

func TestGuestOpenedStreamsAreRefused(t *testing.T) {
	host, guest := net.Pipe()
	sess, err := yamux.Server(guest, muxConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	c, err := NewClient(host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := sess.Open()
	if err != nil {
		t.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("guest-opened stream not closed by the host: %v", err)
	}
}

func TestReadLine(t *testing.T) {
	r := strings.NewReader("abc\nrest")
	line, err := ReadLine(r, 10)
	if string(line) != "abc" || err != nil {
		t.Fatalf("%q %v", line, err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "rest" {
		t.Errorf("read past the newline: %q left", rest)
	}
	if _, err := ReadLine(strings.NewReader("0123456789x\n"), 10); !errors.Is(err, ErrLineTooLong) {
		t.Errorf("over limit: %v", err)
	}
	if l, err := ReadLine(strings.NewReader("0123456789\n"), 10); err != nil || len(l) != 10 {
		t.Errorf("at limit: %q %v", l, err)
	}
	if _, err := ReadLine(strings.NewReader("abc"), 10); err != io.ErrUnexpectedEOF {
		t.Errorf("unterminated: %v", err)
	}
	if _, err := ReadLine(strings.NewReader(""), 10); err != io.EOF {
		t.Errorf("empty: %v", err)
	}
}

func TestIdleReader(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go b.Write([]byte("hi"))
	r := IdleReader(a, 100*time.Millisecond)
	buf := make([]byte, 2)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	_, err := r.Read(buf)
	if err == nil || !isTimeout(err) || !strings.Contains(err.Error(), "sent nothing") {
		t.Fatalf("silent guest: %v", err)
	}
}
