package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// FuzzReadFrame feeds arbitrary bytes (as a guest or a client could send)
// to the frame reader: it must never panic, never return a payload over
// MaxFrame, and whatever it accepts must re-encode to the same bytes.
func FuzzReadFrame(f *testing.F) {
	var good bytes.Buffer
	fw := NewFrameWriter(&good)
	fw.Write(FrameStdout, []byte("hello"))
	fw.WriteJSON(FrameExit, ExitStatus{Code: 1, Signal: "KILL"})
	fw.Write(FrameResize, ResizePayload(24, 80))
	f.Add(good.Bytes())
	f.Add([]byte{'o', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'o', 0, 0, 0, 5, 'a'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, p, err := ReadFrame(r)
			if err != nil {
				if errors.Is(err, io.EOF) && r.Len() != 0 {
					t.Fatalf("EOF with %d bytes left", r.Len())
				}
				return
			}
			if len(p) > MaxFrame {
				t.Fatalf("payload of %d bytes", len(p))
			}
			var out bytes.Buffer
			NewFrameWriter(&out).Write(typ, p)
			t2, p2, err := ReadFrame(&out)
			if err != nil || t2 != typ || !bytes.Equal(p, p2) {
				t.Fatalf("round trip: %v", err)
			}
			switch typ {
			case FrameResize:
				ParseResize(p)
			case FrameExit:
				var es ExitStatus
				json.Unmarshal(p, &es)
			}
		}
	})
}

// FuzzResponseLine feeds arbitrary bytes to the response-line reader and
// decoder the host uses on every agent answer: bounded, no panic, nothing
// read past the newline.
func FuzzResponseLine(f *testing.F) {
	f.Add([]byte(`{"ok":true,"version":"v1","boot_id":"x"}` + "\nframes"))
	f.Add([]byte(`{"ok":false,"error":"no such session"}` + "\n"))
	f.Add([]byte(`{"ok":true,"ports":[{"proto":"tcp","addr":"0.0.0.0","port":22,"pid":1,"process":"sshd"}]}` + "\n"))
	f.Add([]byte("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 64
		r := bytes.NewReader(data)
		line, err := ReadLine(r, max)
		if err != nil {
			if errors.Is(err, ErrLineTooLong) && bytes.IndexByte(data[:max], '\n') >= 0 {
				t.Fatal("refused a line under the limit")
			}
			return
		}
		if len(line) > max {
			t.Fatalf("line of %d bytes", len(line))
		}
		if i := bytes.IndexByte(data, '\n'); i != len(line) || r.Len() != len(data)-i-1 {
			t.Fatalf("line %q, %d bytes left, of %q", line, r.Len(), data)
		}
		var resp Response
		json.Unmarshal(line, &resp)
	})
}
