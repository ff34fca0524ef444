package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func server(t *testing.T, content []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content)
		case "/chunked":
			w.Write(content)
			w.(http.Flusher).Flush()
			w.Write(content)
		case "/truncated":
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content[:len(content)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/slow":
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content[:1])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// assertOnly checks dir holds exactly the named files (no temporary
// file left).
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("dir holds %v, want %v", got, names)
	}
}

func TestFile(t *testing.T) {
	content := []byte(strings.Repeat("banger ", 1000))
	srv := server(t, content)
	var calls int
	c := &Client{HTTP: srv.Client(), AllowFile: true, Progress: func(cur, total int64) { calls++ }}
	dir := t.TempDir()
	dst := filepath.Join(dir, "f")
	got, err := c.File(context.Background(), srv.URL+"/ok", dst, Want{SHA256: sum(content), Size: int64(len(content)), Mode: 0o600})
	if err != nil || got != sum(content) {
		t.Fatalf("File = %s, %v", got, err)
	}
	b, _ := os.ReadFile(dst)
	if string(b) != string(content) {
		t.Error("content differs")
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	if calls == 0 {
		t.Error("no progress reported")
	}
	assertOnly(t, dir, "f")

	// No expected sum: the sum is returned.
	got, err = c.File(context.Background(), srv.URL+"/ok", filepath.Join(dir, "g"), Want{})
	if err != nil || got != sum(content) {
		t.Fatalf("File without sum = %s, %v", got, err)
	}

	// file:// URLs, only when allowed.
	if _, err := (&Client{}).File(context.Background(), "file://"+dst, filepath.Join(dir, "h"), Want{}); err == nil || !strings.Contains(err.Error(), "unsupported URL scheme") {
		t.Errorf("file URL without AllowFile: %v", err)
	}
	got, err = c.File(context.Background(), "file://"+dst, filepath.Join(dir, "h"), Want{SHA256: sum(content)})
	if err != nil || got != sum(content) {
		t.Fatalf("file URL = %s, %v", got, err)
	}
}

func TestFileRefusals(t *testing.T) {
	content := []byte(strings.Repeat("x", 5000))
	srv := server(t, content)
	other := sum([]byte("other"))
	tests := []struct {
		name, path string
		w          Want
		want       string
		is         error
	}{
		{"wrong hash", "/ok", Want{SHA256: other}, "fetch " + srv.URL + "/ok: sha256 mismatch: got " + sum(content), ErrMismatch},
		{"404", "/missing", Want{}, "fetch " + srv.URL + "/missing: server said 404 Not Found", nil},
		{"truncated", "/truncated", Want{}, "truncated: got 2500 of 5000 bytes", nil},
		{"size mismatch", "/ok", Want{Size: 10}, "size mismatch: source has 5000 bytes, want 10", nil},
		{"oversize announced", "/ok", Want{MaxSize: 100}, "5000 bytes is more than the limit of 100", ErrTooLarge},
		{"oversize unannounced", "/chunked", Want{MaxSize: 6000}, "larger than the limit of 6000", ErrTooLarge},
		{"longer than size", "/chunked", Want{Size: 5000}, "too long: got more than 5000 bytes", nil},
		{"bad sum", "/ok", Want{SHA256: "xyz"}, "not 64 hex characters", nil},
		{"bad scheme", "", Want{}, "unsupported URL scheme", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, "f")
			os.WriteFile(dst, []byte("old"), 0o644)
			u := srv.URL + tt.path
			if tt.path == "" {
				u = "ftp://example.invalid/x"
			}
			_, err := (&Client{HTTP: srv.Client()}).File(context.Background(), u, dst, tt.w)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err %v is not %v", err, tt.is)
			}
			if b, _ := os.ReadFile(dst); string(b) != "old" {
				t.Errorf("existing target changed to %q", b)
			}
			assertOnly(t, dir, "f")
		})
	}
}

func TestFileSlowServerHonoursContext(t *testing.T) {
	srv := server(t, []byte(strings.Repeat("y", 1000)))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	dir := t.TempDir()
	done := make(chan error, 1)
	go func() {
		_, err := (&Client{HTTP: srv.Client()}).File(ctx, srv.URL+"/slow", filepath.Join(dir, "f"), Want{})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("File did not return after its context ended")
	}
	assertOnly(t, dir)
}

func TestBytes(t *testing.T) {
	content := []byte("hello catalog")
	srv := server(t, content)
	c := &Client{HTTP: srv.Client()}
	b, u, err := c.Bytes(context.Background(), srv.URL+"/ok", 100)
	if err != nil || string(b) != string(content) || u.Path != "/ok" {
		t.Fatalf("Bytes = %q, %v, %v", b, u, err)
	}
	if _, _, err := c.Bytes(context.Background(), srv.URL+"/ok", 5); !errors.Is(err, ErrTooLarge) {
		t.Errorf("announced oversize: %v", err)
	}
	if _, _, err := c.Bytes(context.Background(), srv.URL+"/chunked", 20); !errors.Is(err, ErrTooLarge) {
		t.Errorf("unannounced oversize: %v", err)
	}
	if _, _, err := c.Bytes(context.Background(), srv.URL+"/nope", 20); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: %v", err)
	}
}

func TestProgressThrottled(t *testing.T) {
	var calls int
	var last int64
	pw := &progressWriter{total: 100000, fn: func(cur, total int64) {
		calls++
		last = cur
	}}
	start := time.Now()
	for range 100000 {
		pw.Write([]byte{0})
	}
	pw.done()
	elapsed := time.Since(start)
	if max := int(elapsed/progressInterval) + 2; calls < 2 || calls > max {
		t.Errorf("%d calls in %v, want 2..%d", calls, elapsed, max)
	}
	if last != 100000 {
		t.Errorf("last call reported %d", last)
	}
}
