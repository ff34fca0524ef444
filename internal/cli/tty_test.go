package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"banger/internal/cli/style"
	"banger/internal/doctor/report"
)

// ttyApp is an App whose Stderr is the terminal side of a fresh
// pseudo-terminal; read returns what reached the terminal.
func ttyApp(t *testing.T, env map[string]string) (*App, func() string) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close(); ptmx.Close() })
	app := &App{Version: "test", Stdin: strings.NewReader(""), Stdout: &bytes.Buffer{}, Stderr: tty,
		Getenv: func(k string) string { return env[k] }}
	read := func() string {
		got := make(chan string, 1)
		go func() {
			buf := make([]byte, 4096)
			n, _ := ptmx.Read(buf)
			got <- string(buf[:n])
		}()
		select {
		case s := <-got:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("nothing reached the terminal")
			return ""
		}
	}
	return app, read
}

func TestStylesFollowTheTerminal(t *testing.T) {
	t.Parallel()
	app, read := ttyApp(t, map[string]string{"TERM": "xterm-256color"})
	if !app.errStyle().Enabled() {
		t.Fatal("stderr is a terminal but errors are not styled")
	}
	if app.outStyle().Enabled() {
		t.Error("stdout is a buffer but is styled")
	}
	if pr := app.progress(false); !pr.tty || !pr.show {
		t.Errorf("progress on a terminal: tty %v show %v", pr.tty, pr.show)
	}
	app.readyIn(time.Now())
	if got := read(); !strings.HasPrefix(got, "\x1b[2mready in ") {
		t.Errorf("ready line on a terminal: %q", got)
	}

	app, read = ttyApp(t, map[string]string{"TERM": "xterm", "NO_COLOR": "1"})
	if app.errStyle().Enabled() {
		t.Error("NO_COLOR is set but errors are styled")
	}
	if pr := app.progress(false); !pr.tty {
		t.Error("NO_COLOR turned the progress bars off; it is about colour only")
	}
	app.readyIn(time.Now())
	if got := read(); !strings.HasPrefix(got, "ready in ") {
		t.Errorf("ready line under NO_COLOR: %q", got)
	}
}

func TestStylesOffATerminal(t *testing.T) {
	t.Parallel()
	var errOut bytes.Buffer
	app := &App{Stdout: &bytes.Buffer{}, Stderr: &errOut, Getenv: func(string) string { return "" }}
	if app.errStyle().Enabled() || app.outStyle().Enabled() {
		t.Error("buffers are styled")
	}
	if pr := app.progress(false); pr.tty || pr.show {
		t.Errorf("progress off a terminal, not verbose: tty %v show %v", pr.tty, pr.show)
	}
	if pr := app.progress(true); pr.tty || !pr.show {
		t.Errorf("verbose progress off a terminal: tty %v show %v", pr.tty, pr.show)
	}
	app.Getenv = func(k string) string {
		if k == "BANGER_PROGRESS" {
			return "1"
		}
		return ""
	}
	if pr := app.progress(false); pr.tty || !pr.show {
		t.Errorf("BANGER_PROGRESS=1: tty %v show %v", pr.tty, pr.show)
	}
	app.readyIn(time.Now())
	if got := errOut.String(); !strings.HasPrefix(got, "ready in ") || strings.Contains(got, "\x1b") {
		t.Errorf("ready line off a terminal: %q", got)
	}
}

func TestDoctorStatusWords(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		s      report.Status
		styled string
	}{
		{report.Pass, "\x1b[32mPASS\x1b[0m"},
		{report.Warn, "\x1b[33mWARN\x1b[0m"},
		{report.Fail, "\x1b[1;31mFAIL\x1b[0m"},
		{report.Skip, "\x1b[2mSKIP\x1b[0m"},
	} {
		if got := statusWord(style.Forced(), c.s); got != c.styled {
			t.Errorf("%s on a terminal: %q", c.s, got)
		}
		if got := statusWord(style.Plain(), c.s); got != string(c.s) {
			t.Errorf("%s off a terminal: %q", c.s, got)
		}
	}
}
