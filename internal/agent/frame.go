package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// FrameType identifies a frame of the exec stream protocol.
type FrameType byte

// Frame types. Stdin flows to the guest; stdout, stderr and exit flow back.
// Progress and Error frames are added by the daemon on the CLI side of the
// stream (e.g. boot progress during `vm run`).
const (
	FrameStdin    FrameType = 'i' // data; an empty payload closes stdin
	FrameStdout   FrameType = 'o'
	FrameStderr   FrameType = 'e'
	FrameExit     FrameType = 'x' // JSON ExitStatus; the last frame from the guest
	FrameSignal   FrameType = 's' // one byte: signal number
	FrameResize   FrameType = 'r' // rows, cols as two big-endian uint16
	FrameProgress FrameType = 'p' // JSON, daemon to CLI
	FrameError    FrameType = 'E' // JSON, daemon to CLI
)

// MaxFrame bounds a frame's payload so a corrupt stream cannot make a peer
// allocate without limit.
const MaxFrame = 1 << 20

const headerLen = 5

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (FrameType, []byte, error) {
	var hdr [headerLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds the %d byte limit", n, MaxFrame)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return FrameType(hdr[0]), buf, nil
}

// FrameWriter writes frames; it is safe for concurrent use.
type FrameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

// NewFrameWriter wraps w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// Write sends one frame; payloads over MaxFrame are split.
func (f *FrameWriter) Write(t FrameType, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		chunk := p
		if len(chunk) > MaxFrame {
			chunk = chunk[:MaxFrame]
		}
		buf := make([]byte, headerLen+len(chunk))
		buf[0] = byte(t)
		binary.BigEndian.PutUint32(buf[1:], uint32(len(chunk)))
		copy(buf[headerLen:], chunk)
		if _, err := f.w.Write(buf); err != nil {
			return err
		}
		p = p[len(chunk):]
		if len(p) == 0 {
			return nil
		}
	}
}

// WriteJSON sends v as the JSON payload of one frame.
func (f *FrameWriter) WriteJSON(t FrameType, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return f.Write(t, b)
}

// StreamWriter returns an io.Writer that wraps everything written to it in
// frames of type t.
func (f *FrameWriter) StreamWriter(t FrameType) io.Writer { return streamWriter{f, t} }

type streamWriter struct {
	f *FrameWriter
	t FrameType
}

func (s streamWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.f.Write(s.t, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ResizePayload encodes a terminal size.
func ResizePayload(rows, cols uint16) []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:], rows)
	binary.BigEndian.PutUint16(b[2:], cols)
	return b[:]
}

// ParseResize decodes a resize payload.
func ParseResize(p []byte) (rows, cols uint16, err error) {
	if len(p) != 4 {
		return 0, 0, fmt.Errorf("resize frame of %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint16(p[0:]), binary.BigEndian.Uint16(p[2:]), nil
}
