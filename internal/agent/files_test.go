package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// fileGuest is a hostile or honest guest side for the file operations:
// it answers first with resp, then runs rest.
func fileGuest(t *testing.T, resp Response, rest func(st net.Conn)) *Client {
	return fakeAgent(t, func(_ string, st net.Conn) {
		b, _ := json.Marshal(resp)
		st.Write(append(b, '\n'))
		if rest != nil {
			rest(st)
		}
	})
}

func info(typ string, size int64) *api.FileInfo {
	return &api.FileInfo{Name: "f", Path: "/f", Type: typ, Size: size, Mode: "0644", MTime: time.Now()}
}

func TestFilePathsCheckedBeforeSending(t *testing.T) {
	sent := make(chan string, 4)
	c := fakeAgent(t, func(line string, st net.Conn) { sent <- line })
	ctx := context.Background()
	for _, p := range []string{"", "relative/x", "/a\x00b", "/" + strings.Repeat("a", 5000)} {
		_, err := c.FileStat(ctx, p)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeBadRequest {
			t.Errorf("path %q: want bad_request, got %v", p, err)
		}
	}
	select {
	case l := <-sent:
		t.Fatalf("a bad path reached the guest: %s", l)
	default:
	}
}

func TestFileReadRefusesMoreThanDeclared(t *testing.T) {
	c := fileGuest(t, Response{OK: true, File: info(api.FileTypeFile, 10)}, func(st net.Conn) {
		fw := NewFrameWriter(st)
		fw.Write(FrameStdout, bytes.Repeat([]byte("x"), 64))
		fw.WriteJSON(FrameExit, ExitStatus{})
	})
	_, rc, err := c.FileRead(context.Background(), "/f", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err == nil || !strings.Contains(err.Error(), "more than the file's 10 bytes") || len(b) > 10 {
		t.Fatalf("read %d bytes, err %v", len(b), err)
	}
}

func TestFileReadRefusesShortContent(t *testing.T) {
	c := fileGuest(t, Response{OK: true, File: info(api.FileTypeFile, 10)}, func(st net.Conn) {
		fw := NewFrameWriter(st)
		fw.Write(FrameStdout, []byte("abc"))
		fw.WriteJSON(FrameExit, ExitStatus{})
	})
	_, rc, err := c.FileRead(context.Background(), "/f", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); err == nil || !strings.Contains(err.Error(), "3 of the file's 10 bytes") {
		t.Fatalf("want a short-content error, got %v", err)
	}
}

func TestFileReadOversized(t *testing.T) {
	// Declared over the cap: refused before any content is read.
	c := fileGuest(t, Response{OK: true, File: info(api.FileTypeFile, 5<<20)}, nil)
	_, _, err := c.FileRead(context.Background(), "/f", 1<<20)
	var se *SizeError
	if !errors.As(err, &se) || se.Size != 5<<20 {
		t.Fatalf("want a SizeError, got %v", err)
	}
	// Size unknown (0, as /proc says) and a never-ending stream: cut at
	// the cap.
	c = fileGuest(t, Response{OK: true, File: info(api.FileTypeFile, 0)}, func(st net.Conn) {
		fw := NewFrameWriter(st)
		chunk := bytes.Repeat([]byte("y"), 64<<10)
		for fw.Write(FrameStdout, chunk) == nil {
		}
	})
	_, rc, err := c.FileRead(context.Background(), "/proc/x", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if !errors.As(err, &se) || n > 1<<20 {
		t.Fatalf("endless stream: read %d bytes, err %v", n, err)
	}
}

func TestFileReadSilentGuest(t *testing.T) {
	c := fileGuest(t, Response{OK: true, File: info(api.FileTypeFile, 100)}, func(st net.Conn) {
		time.Sleep(5 * time.Second)
	})
	c.idle = 200 * time.Millisecond
	_, rc, err := c.FileRead(context.Background(), "/f", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	start := time.Now()
	if _, err := io.ReadAll(rc); err == nil || !strings.Contains(err.Error(), "sent nothing") {
		t.Fatalf("want an idle error, got %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Error("the idle limit did not end the read")
	}
}

func TestFileGarbage(t *testing.T) {
	// Garbage instead of frames: a frame header announcing 4 GiB.
	c := fileGuest(t, Response{OK: true, File: info(api.FileTypeFile, 0)}, func(st net.Conn) {
		st.Write([]byte{'o', 0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	})
	_, rc, err := c.FileRead(context.Background(), "/f", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("want a frame-size error, got %v", err)
	}
	rc.Close()
	// An unexpected frame type.
	c = fileGuest(t, Response{OK: true, File: info(api.FileTypeFile, 0)}, func(st net.Conn) {
		NewFrameWriter(st).Write(FrameStdin, []byte("?"))
	})
	_, rc, _ = c.FileRead(context.Background(), "/f", 1<<30)
	if _, err := io.ReadAll(rc); err == nil || !strings.Contains(err.Error(), "unexpected frame") {
		t.Fatalf("want an unexpected-frame error, got %v", err)
	}
	rc.Close()
	// A response line that is not JSON.
	c = fakeAgent(t, func(_ string, st net.Conn) { st.Write([]byte("\x1b[2J garbage\n")) })
	if _, err := c.FileStat(context.Background(), "/f"); err == nil || !strings.Contains(err.Error(), "bad response") {
		t.Fatalf("want a bad-response error, got %v", err)
	}
	// File information no guest could honestly send.
	for _, fi := range []*api.FileInfo{
		nil,
		{Name: "f", Path: "/f", Type: "fifo!", Mode: "0644"},
		{Name: "f", Path: "/f", Type: "file", Mode: "rwx"},
		{Name: "f", Path: "relative", Type: "file", Mode: "0644"},
		{Name: "a/b", Path: "/f", Type: "file", Mode: "0644"},
		{Name: "f", Path: "/f", Type: "file", Mode: "0644", Size: -1},
	} {
		c := fileGuest(t, Response{OK: true, File: fi}, nil)
		if _, err := c.FileStat(context.Background(), "/f"); err == nil {
			t.Errorf("accepted %+v", fi)
		}
	}
}

func TestFileErrorCodesAndText(t *testing.T) {
	c := fileGuest(t, Response{Error: "stat /x: no such file\x1b[31m", Code: api.CodeNotFound}, nil)
	_, err := c.FileStat(context.Background(), "/x")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound || strings.Contains(ae.Message, "\x1b") {
		t.Fatalf("got %#v", err)
	}
	// A code a file operation cannot give is not taken from the guest.
	c = fileGuest(t, Response{Error: "no", Code: api.CodeAlreadyExists}, nil)
	_, err = c.FileStat(context.Background(), "/x")
	if !errors.As(err, &ae) || ae.Code != api.CodeOperationFailed {
		t.Fatalf("got %#v", err)
	}
}

func TestFileListBounds(t *testing.T) {
	entry := func(name string) []byte {
		b, _ := json.Marshal(ListLine{File: &api.FileInfo{Name: name, Path: "/d/" + name, Type: "file", Mode: "0644"}})
		return append(b, '\n')
	}
	dir := &api.FileInfo{Name: "d", Path: "/d", Type: "dir", Mode: "0755"}
	// More entries than asked for.
	c := fileGuest(t, Response{OK: true, File: dir}, func(st net.Conn) {
		for i := 0; ; i++ {
			if _, err := st.Write(entry("e")); err != nil {
				return
			}
		}
	})
	if _, err := c.FileList(context.Background(), "/d", 3); err == nil || !strings.Contains(err.Error(), "more than the 3 entries") {
		t.Fatalf("want a too-many-entries error, got %v", err)
	}
	// An entry from elsewhere.
	c = fileGuest(t, Response{OK: true, File: dir}, func(st net.Conn) {
		b, _ := json.Marshal(ListLine{File: &api.FileInfo{Name: "passwd", Path: "/etc/passwd", Type: "file", Mode: "0644"}})
		st.Write(append(b, '\n'))
	})
	if _, err := c.FileList(context.Background(), "/d", 3); err == nil || !strings.Contains(err.Error(), "is not in /d") {
		t.Fatalf("want a not-in-dir error, got %v", err)
	}
	// A line without end.
	c = fileGuest(t, Response{OK: true, File: dir}, func(st net.Conn) { hugeLine(st) })
	if _, err := c.FileList(context.Background(), "/d", 3); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("want ErrLineTooLong, got %v", err)
	}
	// An honest listing.
	c = fileGuest(t, Response{OK: true, File: dir}, func(st net.Conn) {
		st.Write(entry("a"))
		st.Write(entry("b"))
		b, _ := json.Marshal(ListLine{End: true, Truncated: true})
		st.Write(append(b, '\n'))
	})
	l, err := c.FileList(context.Background(), "/d", 2)
	if err != nil || len(l.Entries) != 2 || !l.Truncated || l.Path != "/d" {
		t.Fatalf("got %+v, %v", l, err)
	}
}

func TestFileWriteEarlyRefusal(t *testing.T) {
	// The guest fails after the first frame (disk full) and answers at
	// once: the host stops sending instead of pushing the whole body.
	c := fakeAgent(t, func(_ string, st net.Conn) {
		st.Write([]byte(`{"ok":true}` + "\n"))
		ReadFrame(st)
		st.Write([]byte(`{"error":"write /f: no space left on device"}` + "\n"))
		io.Copy(io.Discard, st)
	})
	var sent countReader
	sent.r = endless{}
	sent.max = 1 << 30
	_, err := c.FileWrite(context.Background(), "/f", "", false, &sent)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("want the guest's error, got %v", err)
	}
	if sent.n > 64<<20 {
		t.Errorf("sent %d MiB after the guest refused", sent.n>>20)
	}
	// A guest that answers OK before the end and stops reading fails
	// the upload.
	c = fakeAgent(t, func(_ string, st net.Conn) {
		st.Write([]byte(`{"ok":true}` + "\n"))
		st.Write([]byte(`{"ok":true,"file_info":{"name":"f","path":"/f","type":"file","mode":"0644"}}` + "\n"))
	})
	c.idle = 500 * time.Millisecond
	sent = countReader{r: endless{}, max: 1 << 30}
	if _, err := c.FileWrite(context.Background(), "/f", "", false, &sent); err == nil {
		t.Fatal("an early OK was accepted")
	}
	// Bad modes never reach the guest.
	if _, err := c.FileWrite(context.Background(), "/f", "99999", false, strings.NewReader("x")); err == nil {
		t.Fatal("mode 99999 accepted")
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

type countReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (c *countReader) Read(p []byte) (int, error) {
	if c.n >= c.max {
		return 0, io.EOF
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestFileWatchEvents(t *testing.T) {
	c := fakeAgent(t, func(_ string, st net.Conn) {
		st.Write([]byte(`{"ok":true}` + "\n"))
		st.Write([]byte(`{"path":"/d/x","op":"create","time":"2026-01-01T00:00:00Z"}` + "\n"))
		st.Write([]byte(`{"path":"/d/x","op":"explode"}` + "\n"))
		io.Copy(io.Discard, st)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := c.FileWatch(ctx, "/d", false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ev, err := w.Next()
	if err != nil || ev.Op != api.FileOpCreate || ev.Path != "/d/x" {
		t.Fatalf("got %+v, %v", ev, err)
	}
	if _, err := w.Next(); err == nil || !strings.Contains(err.Error(), "unknown event") {
		t.Fatalf("want an unknown-event error, got %v", err)
	}
}
