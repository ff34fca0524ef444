package seriallog

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func size(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// A flood of writes keeps the pair of files under the cap, and the newest
// output is what is kept.
func TestWriterCap(t *testing.T) {
	p := filepath.Join(t.TempDir(), "serial.log")
	w, err := OpenWriter(p, 1000)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("z"), 333)
	for range 1000 {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	w.Write([]byte("THE END"))
	w.Close()
	if total := size(t, p) + size(t, p+".1"); total > 1000 {
		t.Errorf("%d bytes on disk for a 1000-byte cap", total)
	}
	r, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	if !strings.HasSuffix(string(b), "THE END") || len(b) < 500 {
		t.Errorf("kept %d bytes ending %q", len(b), b[max(0, len(b)-10):])
	}
	// One write larger than the whole cap.
	w, _ = OpenWriter(p, 1000)
	w.Write(bytes.Repeat([]byte("y"), 10000))
	w.Close()
	if total := size(t, p) + size(t, p+".1"); total > 1000 {
		t.Errorf("%d bytes on disk after a huge write", total)
	}
}

// Reopening appends; a log over the cap from before is brought under it.
func TestWriterReopen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "serial.log")
	os.WriteFile(p, bytes.Repeat([]byte("o"), 5000), 0o600)
	os.WriteFile(p+".1", bytes.Repeat([]byte("o"), 5000), 0o600)
	w, err := OpenWriter(p, 1000)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("new"))
	w.Close()
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Errorf("current log %q", got)
	}
	if s := size(t, p+".1"); s > 500 {
		t.Errorf("old log still %d bytes", s)
	}
}

func TestOpenMissing(t *testing.T) {
	r, err := Open(filepath.Join(t.TempDir(), "none"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(r); len(b) != 0 {
		t.Errorf("%q", b)
	}
	r.Close()
}

// Follow copies what the VMM serves and reconnects after a dropped
// connection (a daemon restart looks the same from the VMM's side).
func TestFollow(t *testing.T) {
	dir, err := os.MkdirTemp("", "slog")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, []string{"first ", "second"}[min(i, 1)])
			c.Close()
		}
	}()
	p := filepath.Join(dir, "serial.log")
	w, err := OpenWriter(p, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Follow(ctx, sock, w, 20*time.Millisecond); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(p); strings.HasPrefix(string(b), "first second") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	w.Close()
	if b, _ := os.ReadFile(p); !strings.HasPrefix(string(b), "first second") {
		t.Errorf("log %q", b)
	}
}
