package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// writeMsg writes b, with f's descriptor attached when f is set.
func (q *QMP) writeMsg(b []byte, f *os.File) error {
	if f == nil {
		_, err := q.conn.Write(b)
		return err
	}
	uc, ok := q.conn.(*net.UnixConn)
	if !ok {
		return errors.New("passing a file needs a unix socket")
	}
	_, _, err := uc.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil)
	runtime.KeepAlive(f)
	return err
}

// ErrQMPClosed is returned by QMP.Execute once the connection is gone,
// whether Close was called or QEMU hung up (as it does when it exits).
var ErrQMPClosed = errors.New("qmp connection closed")

// QMPError is an error reply from QEMU, e.g. {"class": "GenericError",
// "desc": "..."}.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *QMPError) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// QMPEvent is an asynchronous QMP event such as SHUTDOWN or STOP.
type QMPEvent struct {
	Name string
	Data json.RawMessage
	Time time.Time
}

// QMPGreeting is the banner QEMU sends on connect.
type QMPGreeting struct {
	QMP struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
		Capabilities []string `json:"capabilities"`
	} `json:"QMP"`
}

// Version formats the greeting's QEMU version as "major.minor.micro".
func (g QMPGreeting) Version() string {
	v := g.QMP.Version.QEMU
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
}

// eventBuffer is how many undelivered events a QMP client holds before it
// drops new ones; command replies are never held up by a slow event reader.
const eventBuffer = 64

// QMP is a client for the QEMU Machine Protocol over one connection:
// newline-separated JSON, a greeting, capabilities negotiation, then
// commands matched to replies by id, interleaved with asynchronous events.
// It is safe for concurrent use. QEMU's QMP socket serves one client at a
// time: while a QMP value is open, other clients wait.
type QMP struct {
	conn     net.Conn
	greeting QMPGreeting

	writeMu sync.Mutex // serialises whole messages on conn

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan qmpReply
	readErr error // why the read loop stopped; set before done closes

	events    chan QMPEvent
	dropped   uint64 // events dropped because events was full; under mu
	done      chan struct{}
	closeOnce sync.Once
}

type qmpReply struct {
	ret json.RawMessage
	err *QMPError
}

// wire is any message QEMU sends.
type wire struct {
	QMP       json.RawMessage `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *QMPError       `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
	ID json.RawMessage `json:"id"`
}

// DialQMP connects to the QMP Unix socket at path, reads the greeting and
// negotiates capabilities. ctx bounds the whole handshake; a QEMU whose QMP
// socket already has a client never greets, so give ctx a deadline.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial qmp: %w", err)
	}
	q, err := NewQMP(ctx, conn)
	if err != nil {
		return nil, err
	}
	return q, nil
}

// NewQMP runs the QMP handshake on an established connection and takes
// ownership of it (it is closed on error and by Close).
func NewQMP(ctx context.Context, conn net.Conn) (*QMP, error) {
	// Unblock handshake reads and writes when ctx ends.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	r := bufio.NewReader(conn)
	var g QMPGreeting
	err := readGreeting(r, &g)
	if !stop() || ctx.Err() != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp handshake: %w", ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp handshake: %w", err)
	}
	conn.SetDeadline(time.Time{})

	q := &QMP{
		conn:     conn,
		greeting: g,
		pending:  make(map[string]chan qmpReply),
		events:   make(chan QMPEvent, eventBuffer),
		done:     make(chan struct{}),
	}
	go q.readLoop(r)
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.Close()
		return nil, fmt.Errorf("qmp handshake: %w", err)
	}
	return q, nil
}

// maxQMPLine bounds one QMP message. QEMU's answers to banger's commands
// are small; a QEMU taken over by its guest must not be able to grow the
// daemon's memory with a line that never ends.
const maxQMPLine = 4 << 20

// errQMPLineTooLong is returned for a message over maxQMPLine bytes.
var errQMPLineTooLong = errors.New("qmp message too long")

// readLine reads one newline-terminated message of at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max+1 {
			return nil, fmt.Errorf("%w: over %d bytes", errQMPLineTooLong, max)
		}
		line = append(line, chunk...)
		if err == nil {
			return line, nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
}

func readGreeting(r *bufio.Reader, g *QMPGreeting) error {
	line, err := readLine(r, maxQMPLine)
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if err := json.Unmarshal(line, g); err != nil {
		return fmt.Errorf("parse greeting: %w", err)
	}
	if g.QMP.Version.QEMU.Major == 0 && g.QMP.Capabilities == nil {
		return fmt.Errorf("not a qmp greeting: %.80q", line)
	}
	return nil
}

// Greeting returns the banner QEMU sent on connect.
func (q *QMP) Greeting() QMPGreeting { return q.greeting }

// Events delivers asynchronous events in arrival order. It is closed when
// the connection ends. At most 64 unread events are held; later ones are
// dropped (see Dropped) so that a slow reader never stalls command replies.
func (q *QMP) Events() <-chan QMPEvent { return q.events }

// Dropped reports how many events were dropped because Events was full.
func (q *QMP) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Done is closed when the connection has ended; Err then says why.
func (q *QMP) Done() <-chan struct{} { return q.done }

// Err is nil while the connection is up, then the reason it ended
// (ErrQMPClosed after Close, io.EOF-wrapping errors when QEMU hung up).
func (q *QMP) Err() error {
	select {
	case <-q.done:
	default:
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.readErr
}

// Execute runs one command and, if result is non-nil, decodes the "return"
// value into it. A QEMU error reply is returned as a *QMPError. If the
// connection ends first the error wraps ErrQMPClosed; if ctx ends first the
// command may still run in QEMU.
func (q *QMP) Execute(ctx context.Context, command string, args, result any) error {
	return q.execute(ctx, command, args, result, nil)
}

// ExecuteWithFile is Execute with f's descriptor passed along with the
// command (SCM_RIGHTS), as QMP's getfd and add-fd expect. The connection
// must be a Unix socket.
func (q *QMP) ExecuteWithFile(ctx context.Context, command string, args, result any, f *os.File) error {
	if f == nil {
		return fmt.Errorf("qmp %s: no file to pass", command)
	}
	return q.execute(ctx, command, args, result, f)
}

func (q *QMP) execute(ctx context.Context, command string, args, result any, f *os.File) error {
	q.mu.Lock()
	if q.pending == nil {
		q.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, ErrQMPClosed)
	}
	q.nextID++
	id := "banger-" + strconv.FormatUint(q.nextID, 10)
	ch := make(chan qmpReply, 1)
	q.pending[id] = ch
	q.mu.Unlock()
	defer func() {
		q.mu.Lock()
		if q.pending != nil {
			delete(q.pending, id)
		}
		q.mu.Unlock()
	}()

	msg := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("qmp %s: encode: %w", command, err)
	}
	if err := q.write(ctx, append(b, '\n'), f); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}

	select {
	case rep, ok := <-ch:
		if !ok {
			return fmt.Errorf("qmp %s: %w", command, ErrQMPClosed)
		}
		if rep.err != nil {
			return fmt.Errorf("qmp %s: %w", command, rep.err)
		}
		if result != nil {
			if err := json.Unmarshal(rep.ret, result); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", command, err)
			}
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

func (q *QMP) write(ctx context.Context, b []byte, f *os.File) error {
	q.writeMu.Lock()
	defer q.writeMu.Unlock()
	select {
	case <-q.done:
		return ErrQMPClosed
	default:
	}
	if dl, ok := ctx.Deadline(); ok {
		q.conn.SetWriteDeadline(dl)
		defer q.conn.SetWriteDeadline(time.Time{})
	}
	if err := q.writeMsg(b, f); err != nil {
		select {
		case <-q.done:
			return ErrQMPClosed
		default:
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func (q *QMP) readLoop(r *bufio.Reader) {
	err := q.readMessages(r)
	q.mu.Lock()
	if q.readErr == nil {
		q.readErr = err
	}
	for _, ch := range q.pending {
		close(ch)
	}
	q.pending = nil
	q.mu.Unlock()
	close(q.events)
	close(q.done)
	q.conn.Close()
}

func (q *QMP) readMessages(r *bufio.Reader) error {
	for {
		line, err := readLine(r, maxQMPLine)
		if err != nil {
			return fmt.Errorf("qmp read: %w", err)
		}
		var m wire
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("qmp read: bad message %.80q: %w", line, err)
		}
		switch {
		case m.Event != "":
			ev := QMPEvent{Name: m.Event, Data: m.Data}
			if m.Timestamp != nil {
				ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
			}
			select {
			case q.events <- ev:
			default:
				q.mu.Lock()
				q.dropped++
				q.mu.Unlock()
			}
		case m.Return != nil || m.Error != nil:
			var id string
			if json.Unmarshal(m.ID, &id) != nil {
				continue // not one of ours
			}
			q.mu.Lock()
			ch := q.pending[id]
			delete(q.pending, id)
			q.mu.Unlock()
			if ch != nil {
				ch <- qmpReply{ret: m.Return, err: m.Error}
			}
		}
	}
}

// Close ends the connection; pending and later Execute calls fail with
// ErrQMPClosed. It does not affect the VM. Close is idempotent.
func (q *QMP) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		if q.readErr == nil {
			q.readErr = ErrQMPClosed
		}
		q.mu.Unlock()
		q.conn.Close()
	})
	<-q.done
	return nil
}
