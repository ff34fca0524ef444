package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"banger/internal/api"
	"banger/internal/paths"
)

// fakeDaemon answers API calls on a unix socket with canned JSON bodies,
// keyed "METHOD /path" (without the version prefix). /ping always
// answers, with the test App's version; anything else unknown is a
// not_found error with op id "feedf00d"; a body "!message" answers a
// conflict error with that message.
type fakeDaemon struct {
	layout paths.Layout

	mu   sync.Mutex
	hits []string
}

// testLayout is an isolated installation under a short temporary
// directory (unix socket paths are limited to about 107 bytes).
func testLayout(t *testing.T) paths.Layout {
	t.Helper()
	dir, err := os.MkdirTemp("", "bcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return paths.Layout{State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config"), Runtime: filepath.Join(dir, "run")}
}

func startFakeDaemon(t *testing.T, routes map[string]string) *fakeDaemon {
	t.Helper()
	f := &fakeDaemon{layout: testLayout(t)}
	if err := os.MkdirAll(f.layout.Runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", f.layout.Socket())
	if err != nil {
		t.Fatal(err)
	}
	prefix := "/" + api.Version
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Method + " " + strings.TrimPrefix(r.URL.Path, prefix)
		f.mu.Lock()
		f.hits = append(f.hits, key)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if key == "GET /ping" {
			json.NewEncoder(w).Encode(api.Ping{Version: "test", Socket: f.layout.Socket()})
			return
		}
		body, ok := routes[key]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(api.Error{Code: api.CodeNotFound, Message: "no route for " + key, OpID: "feedf00d"})
			return
		}
		if msg, isErr := strings.CutPrefix(body, "!"); isErr {
			// "!message": a conflict error carrying message.
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(api.Error{Code: api.CodeConflict, Message: msg, OpID: "feedf00d"})
			return
		}
		w.Write([]byte(body))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeDaemon) called(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.hits, key)
}

// runIn runs the CLI against layout without touching the process
// environment, so that tests using it can run in parallel. It reports the
// exit code and what was written to stdout and stderr (formatted errors
// included, as Main prints them).
func runIn(t *testing.T, layout paths.Layout, args ...string) (int, string, string) {
	t.Helper()
	var so, se bytes.Buffer
	app := &App{Version: "test", Stdin: strings.NewReader(""), Stdout: &so, Stderr: &se,
		Getenv: func(string) string { return "" }, layout: layout}
	root := app.rootCmd()
	root.SetArgs(args)
	root.SetOut(&so)
	root.SetErr(&se)
	code := 0
	err := root.Execute()
	app.endProgress()
	if err != nil {
		code = 1
		se.WriteString(formatError(err, app.errStyle()) + "\n")
	}
	return code, so.String(), se.String()
}
