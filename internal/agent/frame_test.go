package agent

import (
	"bytes"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	fw := NewFrameWriter(&buf)
	fw.Write(FrameStdout, []byte("hello"))
	fw.Write(FrameStdin, nil)
	fw.WriteJSON(FrameExit, ExitStatus{Code: 42})
	fw.Write(FrameResize, ResizePayload(24, 80))
	big := bytes.Repeat([]byte("x"), MaxFrame+10)
	fw.Write(FrameStderr, big)

	expect := []struct {
		t FrameType
		n int
	}{{FrameStdout, 5}, {FrameStdin, 0}, {FrameExit, -1}, {FrameResize, 4}, {FrameStderr, MaxFrame}, {FrameStderr, 10}}
	for i, e := range expect {
		typ, p, err := ReadFrame(&buf)
		if err != nil || typ != e.t || (e.n >= 0 && len(p) != e.n) {
			t.Fatalf("frame %d: %c %d %v", i, typ, len(p), err)
		}
		if typ == FrameResize {
			r, c, err := ParseResize(p)
			if r != 24 || c != 80 || err != nil {
				t.Errorf("resize %d %d %v", r, c, err)
			}
		}
	}
	if _, _, err := ReadFrame(&buf); err != io.EOF {
		t.Errorf("want EOF, got %v", err)
	}
}

func TestFrameRejectsOversize(t *testing.T) {
	b := []byte{'o', 0xff, 0xff, 0xff, 0xff}
	if _, _, err := ReadFrame(bytes.NewReader(b)); err == nil {
		t.Error("oversized frame accepted")
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{'o', 0, 0, 0, 5, 'a'})); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated frame: %v", err)
	}
}
