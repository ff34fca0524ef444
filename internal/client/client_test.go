package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// serve answers on a unix socket with handler and returns a client for it.
func serve(t *testing.T, handler http.HandlerFunc) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "bc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return New(sock)
}

// A daemon that is not there is ErrUnavailable, naming the socket and the
// reason; a cancelled context is the context's error, not "unavailable".
func TestUnavailable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	c := New(sock)
	ctx := context.Background()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), sock) || !strings.Contains(err.Error(), "no such file or directory") {
			t.Errorf("%s: %v", what, err)
		}
	}
	check("Do", c.Do(ctx, "GET", "/ping", nil, nil))
	check("Stream", c.Stream(ctx, "POST", "/vms", nil, nil, nil))
	_, _, err := c.Upgrade(ctx, "/vms/x/exec", nil)
	check("Upgrade", err)
	_, err = c.Download(ctx, "/images/x/bundle", io.Discard)
	check("Download", err)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Do(cctx, "GET", "/ping", nil, nil); !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
		t.Errorf("cancelled: %v", err)
	}
}

// Error answers become *api.Error with the daemon's code and op id; an
// answer that is not an API error keeps its status and body.
func TestErrorTranslation(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/vms/x":
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(api.Error{Code: api.CodeNotFound, Message: `vm "x" not found`, OpID: "abcd1234"})
		case "/v1/proxy":
			http.Error(w, "upstream broke", http.StatusBadGateway)
		case "/v1/text":
			w.Write([]byte("plain text body"))
		}
	})
	ctx := context.Background()
	err := c.Do(ctx, "GET", "/vms/x", nil, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound || ae.OpID != "abcd1234" || ae.Message != `vm "x" not found` {
		t.Errorf("api error: %#v", err)
	}
	err = c.Do(ctx, "GET", "/proxy", nil, nil)
	if !errors.As(err, &ae) || ae.Code != api.CodeOperationFailed || ae.Message != "daemon answered 502 Bad Gateway: upstream broke" {
		t.Errorf("non-API error: %#v", err)
	}
	// out as a writer gets the raw body; as a value, the decoded JSON.
	var sb strings.Builder
	if err := c.Do(ctx, "GET", "/text", nil, &sb); err != nil || sb.String() != "plain text body" {
		t.Errorf("raw body: %q %v", sb.String(), err)
	}
	var v map[string]any
	if err := c.Do(ctx, "GET", "/text", nil, &v); err == nil {
		t.Error("a non-JSON body decoded into a value")
	}
}

// Stream hands progress over in order and decodes the result; an error
// event, a malformed line and a stream cut before its result are errors.
func TestStream(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		switch r.URL.Path {
		case "/v1/ok":
			enc.Encode(api.Event{Progress: &api.Progress{Stage: "a"}})
			enc.Encode(api.Event{Progress: &api.Progress{Stage: "b", Current: 5, Total: 10}})
			enc.Encode(api.Event{Result: map[string]string{"name": "done"}})
		case "/v1/fail":
			enc.Encode(api.Event{Progress: &api.Progress{Stage: "a"}})
			enc.Encode(api.Event{Error: &api.Error{Code: api.CodeConflict, Message: "busy", OpID: "0000beef"}})
		case "/v1/garbage":
			fmt.Fprintln(w, "{not json")
		case "/v1/cut":
			enc.Encode(api.Event{Progress: &api.Progress{Stage: "a"}})
		case "/v1/refused":
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(api.Error{Code: api.CodeBadRequest, Message: "bad size", OpID: "01"})
		}
	})
	ctx := context.Background()
	var stages []string
	progress := func(p api.Progress) { stages = append(stages, fmt.Sprintf("%s:%d/%d", p.Stage, p.Current, p.Total)) }
	var out struct{ Name string }
	if err := c.Stream(ctx, "POST", "/ok", nil, progress, &out); err != nil || out.Name != "done" || strings.Join(stages, ",") != "a:0/0,b:5/10" {
		t.Errorf("ok: %+v %v %v", out, err, stages)
	}
	err := c.Stream(ctx, "POST", "/fail", nil, nil, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeConflict || ae.OpID != "0000beef" {
		t.Errorf("error event: %v", err)
	}
	if err := c.Stream(ctx, "POST", "/garbage", nil, nil, nil); err == nil || !strings.Contains(err.Error(), "bad event from daemon") {
		t.Errorf("garbage: %v", err)
	}
	if err := c.Stream(ctx, "POST", "/cut", nil, nil, nil); err == nil || !strings.Contains(err.Error(), "without a result") {
		t.Errorf("cut stream: %v", err)
	}
	if err := c.Stream(ctx, "POST", "/refused", nil, nil, nil); !errors.As(err, &ae) || ae.Code != api.CodeBadRequest {
		t.Errorf("refused before the stream: %v", err)
	}
}

// Upgrade returns the raw stream after 101, and the daemon's error
// otherwise.
func TestUpgrade(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/vms/stopped/exec" {
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(api.Error{Code: api.CodeNotRunning, Message: `vm "stopped" is not running`, OpID: "02"})
			return
		}
		if r.Header.Get("Upgrade") != api.Upgrade || r.Header.Get("Connection") != "Upgrade" {
			http.Error(w, "not an upgrade", http.StatusBadRequest)
			return
		}
		var p api.ExecParams
		json.NewDecoder(r.Body).Decode(&p)
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.Upgrade)
		fmt.Fprintf(rw, "argv=%s;", strings.Join(p.Argv, " "))
		rw.Flush()
		line, _ := rw.ReadString('\n')
		fmt.Fprintf(rw, "got %s", line)
		rw.Flush()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, r, err := c.Upgrade(ctx, "/vms/box/exec", api.ExecParams{Argv: []string{"echo", "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "ping\n")
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "argv=echo hi;got ping\n" {
		t.Errorf("stream: %q %v", b, err)
	}
	_, _, err = c.Upgrade(ctx, "/vms/stopped/exec", api.ExecParams{Argv: []string{"true"}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNotRunning || ae.OpID != "02" {
		t.Errorf("refused upgrade: %v", err)
	}
}

// Download fails on an error trailer (JSON or not) and on a cut body, so a
// partial file is never taken for a whole one.
func TestDownload(t *testing.T) {
	c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", api.ErrorTrailer)
		switch r.URL.Path {
		case "/v1/whole":
			io.WriteString(w, "all of it")
		case "/v1/api-error":
			io.WriteString(w, "part")
			b, _ := json.Marshal(api.Error{Code: api.CodeOperationFailed, Message: "disk read failed", OpID: "03"})
			w.Header().Set(api.ErrorTrailer, string(b))
		case "/v1/text-error":
			io.WriteString(w, "part")
			w.Header().Set(api.ErrorTrailer, "something odd")
		case "/v1/cut":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "part")
		case "/v1/missing":
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(api.Error{Code: api.CodeNotFound, Message: `image "x" not found`})
		}
	})
	ctx := context.Background()
	var sb strings.Builder
	if n, err := c.Download(ctx, "/whole", &sb); err != nil || n != 9 || sb.String() != "all of it" {
		t.Errorf("whole: %d %q %v", n, sb.String(), err)
	}
	_, err := c.Download(ctx, "/api-error", io.Discard)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Message != "disk read failed" || ae.OpID != "03" {
		t.Errorf("api error trailer: %v", err)
	}
	if _, err := c.Download(ctx, "/text-error", io.Discard); err == nil || err.Error() != "download failed: something odd" {
		t.Errorf("text trailer: %v", err)
	}
	if _, err := c.Download(ctx, "/cut", io.Discard); err == nil || !strings.Contains(err.Error(), "download") {
		t.Errorf("cut body: %v", err)
	}
	if _, err := c.Download(ctx, "/missing", io.Discard); !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
		t.Errorf("missing: %v", err)
	}
}
