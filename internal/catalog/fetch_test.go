package catalog

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// testServer serves content at /file.bin and counts requests.
type testServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newTestServer(t *testing.T, h http.HandlerFunc) *testServer {
	t.Helper()
	s := &testServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func testContent() []byte {
	b := make([]byte, 3<<20+123)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

func TestFetchSuccess(t *testing.T) {
	content := testContent()
	sum := sha256Hex(content)
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/dir/file.bin" {
			http.NotFound(w, r)
			return
		}
		w.Write(content)
	})
	dir := filepath.Join(t.TempDir(), "downloads")
	var calls int
	var last [2]int64
	f := &Fetcher{Client: srv.Client(), Progress: func(cur, total int64) {
		calls++
		last = [2]int64{cur, total}
	}}
	p, err := f.Fetch(context.Background(), srv.URL+"/dir/file.bin", sum, int64(len(content)), dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, sum+"-file.bin"); p != want {
		t.Errorf("path = %s, want %s", p, want)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, content) {
		t.Error("content differs")
	}
	if calls == 0 || last != [2]int64{int64(len(content)), int64(len(content))} {
		t.Errorf("progress: %d calls, last %v", calls, last)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("dir holds %d entries, want 1", len(ents))
	}

	// Already there: no request.
	p2, err := f.Fetch(context.Background(), srv.URL+"/dir/file.bin", sum, int64(len(content)), dir)
	if err != nil || p2 != p {
		t.Fatalf("second fetch = %s, %v", p2, err)
	}
	if n := srv.hits.Load(); n != 1 {
		t.Errorf("server hit %d times, want 1", n)
	}

	// A corrupt file in its place is replaced.
	if err := os.WriteFile(p, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Fetch(context.Background(), srv.URL+"/dir/file.bin", sum, 0, dir); err != nil {
		t.Fatal(err)
	}
	if n := srv.hits.Load(); n != 2 {
		t.Errorf("server hit %d times, want 2", n)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, content) {
		t.Error("corrupt file not replaced")
	}
	// Same size, wrong content is replaced too.
	bad := bytes.Clone(content)
	bad[100]++
	if err := os.WriteFile(p, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Fetch(context.Background(), srv.URL+"/dir/file.bin", sum, int64(len(content)), dir); err != nil {
		t.Fatal(err)
	}
	if got := sha256File(t, p); got != sum || srv.hits.Load() != 3 {
		t.Errorf("same-size corrupt file not replaced (hits %d)", srv.hits.Load())
	}
}

func TestFetchFileURL(t *testing.T) {
	content := testContent()
	sum := sha256Hex(content)
	src := filepath.Join(t.TempDir(), "k.tar.zst")
	writeTestFile(t, src, content)
	dir := t.TempDir()
	f := &Fetcher{}
	p, err := f.Fetch(context.Background(), "file://"+src, sum, int64(len(content)), dir)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(p) != sum+"-k.tar.zst" || sha256File(t, p) != sum {
		t.Errorf("bad result %s", p)
	}

	dir2 := t.TempDir()
	_, err = f.Fetch(context.Background(), "file://"+src, otherSH, 0, dir2)
	if err == nil || !strings.Contains(err.Error(), "sha256 mismatch") {
		t.Errorf("wrong sha: err = %v", err)
	}
	_, err = f.Fetch(context.Background(), "file://"+src, sum, int64(len(content))+1, dir2)
	if err == nil || !strings.Contains(err.Error(), "size mismatch") {
		t.Errorf("wrong size: err = %v", err)
	}
	_, err = f.Fetch(context.Background(), "file://"+src+".missing", sum, 0, dir2)
	if err == nil {
		t.Error("missing file fetched")
	}
	assertEmptyDir(t, dir2)
}

func TestFetchErrors(t *testing.T) {
	content := testContent()
	sum := sha256Hex(content)
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write(content)
		case "/ok-length":
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content)
		case "/500":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "/truncated":
			w.Header().Set("Content-Length", strconv.Itoa(len(content)))
			w.Write(content[:len(content)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/long":
			// No Content-Length: the length check is against size.
			w.Write(content)
			w.(http.Flusher).Flush()
			w.Write([]byte("extra"))
		default:
			http.NotFound(w, r)
		}
	})
	tests := []struct {
		name, path, sum string
		size            int64
		want            string
	}{
		{"wrong sha", "/ok", otherSH, 0, "fetch " + srv.URL + "/ok: sha256 mismatch: got " + sum + ", want " + otherSH},
		{"404", "/missing", sum, 0, "fetch " + srv.URL + "/missing: server said 404 Not Found"},
		{"500", "/500", sum, 0, "server said 500 Internal Server Error"},
		{"truncated", "/truncated", sum, int64(len(content)),
			"fetch " + srv.URL + "/truncated: truncated: got " + strconv.Itoa(len(content)/2) + " of " + strconv.Itoa(len(content)) + " bytes"},
		{"truncated no size", "/truncated", sum, 0, "truncated: got"},
		{"size mismatch", "/ok-length", sum, 10, "size mismatch: source has " + strconv.Itoa(len(content)) + " bytes, want 10"},
		{"longer than size", "/ok", sum, 10, "too long: got more than 10 bytes"},
		{"too long", "/long", sum, int64(len(content)), "too long"},
		{"bad sha argument", "/ok", "xyz", 0, "not 64 hex characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := &Fetcher{Client: srv.Client()}
			p, err := f.Fetch(context.Background(), srv.URL+tt.path, tt.sum, tt.size, dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Fetch = %q, %v; want error %q", p, err, tt.want)
			}
			if p != "" {
				t.Errorf("path %q returned with an error", p)
			}
			assertEmptyDir(t, dir)
		})
	}
}

func TestFetchCancel(t *testing.T) {
	content := testContent()
	srv := newTestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(2*len(content)))
		w.Write(content)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the rest never comes
	})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &Fetcher{Client: srv.Client(), Progress: func(cur, total int64) {
		if cur > 0 {
			cancel()
		}
	}}
	_, err := f.Fetch(ctx, srv.URL+"/x", sha256Hex(content), 0, dir)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertEmptyDir(t, dir)

	// Cancelled before it starts: no request at all.
	hits := srv.hits.Load()
	if _, err := f.Fetch(ctx, srv.URL+"/x", sha256Hex(content), 0, dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if srv.hits.Load() != hits {
		t.Error("cancelled fetch made a request")
	}
	assertEmptyDir(t, dir)
}
