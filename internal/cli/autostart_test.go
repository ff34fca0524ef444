package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNoAutostart: with BANGER_NO_AUTOSTART set and no daemon answering, a
// command that needs the daemon fails saying why, and no bangerd is
// started (a fake bangerd first on PATH would leave a marker if run).
func TestNoAutostart(t *testing.T) {
	bin := t.TempDir()
	marker := filepath.Join(bin, "started")
	fake := "#!/bin/sh\ntouch " + marker + "\n"
	if err := os.WriteFile(filepath.Join(bin, "bangerd"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("BANGER_NO_DAEMON_RESTART", "")

	var so, se bytes.Buffer
	app := &App{Version: "test", Stdin: strings.NewReader(""), Stdout: &so, Stderr: &se,
		Getenv: func(k string) string {
			if k == NoAutostartEnv {
				return "1"
			}
			return ""
		},
		layout: testLayout(t)}
	root := app.rootCmd()
	root.SetArgs([]string{"vm", "list"})
	root.SetOut(&so)
	root.SetErr(&se)
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), NoAutostartEnv) || !strings.Contains(err.Error(), app.layout.Socket()) {
		t.Fatalf("want a refusal naming %s and the socket, got %v", NoAutostartEnv, err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("bangerd was started although BANGER_NO_AUTOSTART is set")
	}
}

// TestNoAutostartWithDaemon: the variable changes nothing while a daemon
// answers.
func TestNoAutostartWithDaemon(t *testing.T) {
	f := startFakeDaemon(t, map[string]string{"GET /vms": "[]"})
	var so, se bytes.Buffer
	app := &App{Version: "test", Stdin: strings.NewReader(""), Stdout: &so, Stderr: &se,
		Getenv: func(k string) string {
			if k == NoAutostartEnv {
				return "1"
			}
			return ""
		},
		layout: f.layout}
	root := app.rootCmd()
	root.SetArgs([]string{"vm", "list", "--json"})
	root.SetOut(&so)
	root.SetErr(&se)
	if err := root.Execute(); err != nil {
		t.Fatalf("vm list with a daemon answering: %v\n%s", err, se.String())
	}
	if !f.called("GET /vms") {
		t.Errorf("the daemon was not asked: %v", f.hits)
	}
}
