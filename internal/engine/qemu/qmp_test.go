package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const testGreeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}`

// fakeQMP is a scripted QMP server on a Unix socket. handle is called for
// every command after qmp_capabilities, with a function to send raw lines.
type fakeQMP struct {
	t        *testing.T
	path     string
	ln       net.Listener
	greeting string
	handle   func(cmd map[string]any, send func(string))

	mu       sync.Mutex
	commands []string
	conns    []net.Conn
}

func newFakeQMP(t *testing.T, handle func(cmd map[string]any, send func(string))) *fakeQMP {
	t.Helper()
	return newFakeQMPGreeting(t, testGreeting, handle)
}

// newFakeQMPGreeting is newFakeQMP with another greeting ("" for none).
func newFakeQMPGreeting(t *testing.T, greeting string, handle func(cmd map[string]any, send func(string))) *fakeQMP {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeQMP{t: t, path: path, ln: ln, greeting: greeting, handle: handle}
	go f.serve()
	t.Cleanup(f.close)
	return f
}

func (f *fakeQMP) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		go f.serveConn(c)
	}
}

func (f *fakeQMP) serveConn(c net.Conn) {
	var wmu sync.Mutex
	send := func(s string) {
		wmu.Lock()
		defer wmu.Unlock()
		c.Write([]byte(s + "\n"))
	}
	if f.greeting != "" {
		send(f.greeting)
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var cmd map[string]any
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			send(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
			continue
		}
		name, _ := cmd["execute"].(string)
		f.mu.Lock()
		f.commands = append(f.commands, name)
		f.mu.Unlock()
		if name == "qmp_capabilities" {
			send(reply(cmd, `{}`))
			continue
		}
		if f.handle != nil {
			f.handle(cmd, send)
		}
	}
}

// hangUp closes every accepted connection, as QEMU does when it exits.
func (f *fakeQMP) hangUp() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
}

func (f *fakeQMP) close() {
	f.ln.Close()
	f.hangUp()
}

func (f *fakeQMP) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

func reply(cmd map[string]any, ret string) string {
	id, _ := json.Marshal(cmd["id"])
	return `{"return": ` + ret + `, "id": ` + string(id) + `}`
}

func dialFake(t *testing.T, f *fakeQMP) *QMP {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func TestQMPHandshakeAndExecute(t *testing.T) {
	f := newFakeQMP(t, func(cmd map[string]any, send func(string)) {
		switch cmd["execute"] {
		case "query-status":
			send(reply(cmd, `{"status": "running", "singlestep": false, "running": true}`))
		case "echo":
			args, _ := json.Marshal(cmd["arguments"])
			send(reply(cmd, string(args)))
		}
	})
	q := dialFake(t, f)
	if got := q.Greeting().Version(); got != "7.2.22" {
		t.Errorf("greeting version = %q", got)
	}
	if caps := q.Greeting().QMP.Capabilities; len(caps) != 1 || caps[0] != "oob" {
		t.Errorf("capabilities = %q", caps)
	}
	ctx := context.Background()
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := q.Execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "running" || !st.Running {
		t.Errorf("status = %+v", st)
	}
	var echoed map[string]int
	if err := q.Execute(ctx, "echo", map[string]int{"x": 7}, &echoed); err != nil {
		t.Fatal(err)
	}
	if echoed["x"] != 7 {
		t.Errorf("arguments not sent: %v", echoed)
	}
	if got := strings.Join(f.seen(), ","); got != "qmp_capabilities,query-status,echo" {
		t.Errorf("server saw %s", got)
	}
}

func TestQMPErrorReply(t *testing.T) {
	f := newFakeQMP(t, func(cmd map[string]any, send func(string)) {
		id, _ := json.Marshal(cmd["id"])
		send(`{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": ` + string(id) + `}`)
	})
	q := dialFake(t, f)
	err := q.Execute(context.Background(), "nope", nil, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("err = %v, want a CommandNotFound QMPError", err)
	}
	if !strings.Contains(err.Error(), "qmp nope: qmp: CommandNotFound: The command nope has not been found") {
		t.Errorf("error text = %q", err)
	}
}

// Replies are matched by id, not by order, and events interleave freely.
func TestQMPOutOfOrderRepliesAndEvents(t *testing.T) {
	var mu sync.Mutex
	var held []map[string]any
	f := newFakeQMP(t, func(cmd map[string]any, send func(string)) {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, cmd)
		if len(held) < 3 {
			return
		}
		send(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "STOP"}`)
		for i := len(held) - 1; i >= 0; i-- { // answer in reverse order
			name := held[i]["execute"].(string)
			send(reply(held[i], `"`+name+`"`))
		}
		send(`{"timestamp": {"seconds": 1700000001, "microseconds": 0}, "event": "RESUME"}`)
		// A reply to nobody is ignored.
		send(`{"return": {}, "id": "someone-else"}`)
		send(`{"return": {}}`)
	})
	q := dialFake(t, f)
	var wg sync.WaitGroup
	results := make([]string, 3)
	errs := make([]error, 3)
	for i, name := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = q.Execute(context.Background(), name, nil, &results[i])
		}()
	}
	wg.Wait()
	for i, name := range []string{"a", "b", "c"} {
		if errs[i] != nil || results[i] != name {
			t.Errorf("command %s: result %q, err %v", name, results[i], errs[i])
		}
	}
	for _, want := range []string{"STOP", "RESUME"} {
		select {
		case ev := <-q.Events():
			if ev.Name != want {
				t.Errorf("event = %q, want %q", ev.Name, want)
			}
			if ev.Time.IsZero() {
				t.Errorf("event %s has no timestamp", ev.Name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s event", want)
		}
	}
	// The stray replies did not break the connection.
	select {
	case <-q.Done():
		t.Fatalf("connection ended: %v", q.Err())
	case <-time.After(50 * time.Millisecond):
	}
}

// QEMU's "quit": the SHUTDOWN event comes first, then the reply, then the
// socket closes.
func TestQMPQuitSequence(t *testing.T) {
	var f *fakeQMP
	f = newFakeQMP(t, func(cmd map[string]any, send func(string)) {
		if cmd["execute"] == "quit" {
			send(`{"timestamp": {"seconds": 1796044422, "microseconds": 155905}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`)
			send(reply(cmd, `{}`))
			f.hangUp()
		}
	})
	q := dialFake(t, f)
	if err := q.Execute(context.Background(), "quit", nil, nil); err != nil {
		t.Fatalf("quit: %v", err)
	}
	ev, ok := <-q.Events()
	if !ok || ev.Name != "SHUTDOWN" || !strings.Contains(string(ev.Data), "host-qmp-quit") {
		t.Fatalf("event = %+v, %v", ev, ok)
	}
	select {
	case <-q.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after hang-up")
	}
	if _, ok := <-q.Events(); ok {
		t.Error("Events not closed after hang-up")
	}
	if q.Err() == nil {
		t.Error("Err is nil after hang-up")
	}
	if err := q.Execute(context.Background(), "query-status", nil, nil); !errors.Is(err, ErrQMPClosed) {
		t.Errorf("Execute after hang-up: %v, want ErrQMPClosed", err)
	}
}

func TestQMPHangUpFailsPending(t *testing.T) {
	var f *fakeQMP
	f = newFakeQMP(t, func(cmd map[string]any, send func(string)) { f.hangUp() })
	q := dialFake(t, f)
	err := q.Execute(context.Background(), "query-status", nil, nil)
	if !errors.Is(err, ErrQMPClosed) {
		t.Fatalf("err = %v, want ErrQMPClosed", err)
	}
}

func TestQMPExecuteContext(t *testing.T) {
	f := newFakeQMP(t, nil) // never answers commands
	q := dialFake(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := q.Execute(ctx, "query-status", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	// The connection is still usable for others.
	select {
	case <-q.Done():
		t.Fatal("connection closed by a cancelled command")
	default:
	}
}

func TestQMPCloseFailsPendingAndIsIdempotent(t *testing.T) {
	f := newFakeQMP(t, nil)
	q := dialFake(t, f)
	errc := make(chan error, 1)
	go func() { errc <- q.Execute(context.Background(), "query-status", nil, nil) }()
	time.Sleep(20 * time.Millisecond)
	q.Close()
	q.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrQMPClosed) {
			t.Errorf("pending Execute: %v, want ErrQMPClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending Execute not released by Close")
	}
	if !errors.Is(q.Err(), ErrQMPClosed) {
		t.Errorf("Err = %v, want ErrQMPClosed", q.Err())
	}
}

// A QMP socket that already has a client accepts the connection but never
// greets; the handshake must give up with ctx.
func TestQMPNoGreetingHonoursContext(t *testing.T) {
	f := newFakeQMPGreeting(t, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := DialQMP(ctx, f.path)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("handshake took %s to give up", d)
	}
}

func TestQMPBadGreeting(t *testing.T) {
	f := newFakeQMPGreeting(t, `{"hello": "world"}`, nil)
	_, err := DialQMP(context.Background(), f.path)
	if err == nil || !strings.Contains(err.Error(), "not a qmp greeting") {
		t.Fatalf("err = %v", err)
	}
}

func TestQMPCapabilitiesRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte(testGreeting + "\n"))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			var cmd map[string]any
			json.Unmarshal(sc.Bytes(), &cmd)
			id, _ := json.Marshal(cmd["id"])
			c.Write([]byte(`{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete"}, "id": ` + string(id) + "}\n"))
		}
	}()
	if _, err := DialQMP(context.Background(), path); err == nil || !strings.Contains(err.Error(), "already complete") {
		t.Fatalf("err = %v", err)
	}
}

func TestQMPEventOverflowDropsInsteadOfBlocking(t *testing.T) {
	f := newFakeQMP(t, func(cmd map[string]any, send func(string)) {
		for range eventBuffer + 10 {
			send(`{"event": "RTC_CHANGE", "data": {"offset": 1}, "timestamp": {"seconds": 1, "microseconds": 0}}`)
		}
		send(reply(cmd, `{}`))
	})
	q := dialFake(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := q.Execute(ctx, "flood", nil, nil); err != nil {
		t.Fatalf("reply blocked behind unread events: %v", err)
	}
	if got := q.Dropped(); got != 10 {
		t.Errorf("Dropped = %d, want 10", got)
	}
}

// A QEMU taken over by its guest cannot grow the daemon's memory with a
// message that never ends: the connection is dropped at maxQMPLine.
func TestQMPRefusesEndlessMessage(t *testing.T) {
	f := newFakeQMP(t, func(cmd map[string]any, send func(string)) {
		send(`{"return": "` + strings.Repeat("x", maxQMPLine+1) + `"}`)
	})
	q := dialFake(t, f)
	err := q.Execute(context.Background(), "query-status", nil, nil)
	if !errors.Is(err, ErrQMPClosed) {
		t.Fatalf("err = %v, want ErrQMPClosed", err)
	}
}

func TestQMPReadLineBounds(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		err  error
	}{
		{"abc\n", "abc\n", nil},
		{strings.Repeat("y", 100) + "\n", strings.Repeat("y", 100) + "\n", nil},
		{strings.Repeat("z", 101) + "\n", "", errQMPLineTooLong},
		{strings.Repeat("z", 5000), "", errQMPLineTooLong},
		{"no newline", "", io.EOF},
	} {
		got, err := readLine(bufio.NewReaderSize(strings.NewReader(tc.in), 16), 100)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("readLine(%.20q): %v, want %v", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("readLine(%.20q) = %.20q, %v", tc.in, got, err)
		}
	}
}
