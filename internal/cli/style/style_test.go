package style

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/creack/pty"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// openTTY returns the terminal side of a fresh pseudo-terminal.
func openTTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close(); ptmx.Close() })
	return tty
}

type helper struct {
	name string
	f    func(Style, string) string
}

func helpers() []helper {
	return []helper{
		{"Bold", Style.Bold}, {"Dim", Style.Dim}, {"Red", Style.Red}, {"Green", Style.Green},
		{"Yellow", Style.Yellow}, {"BoldRed", Style.BoldRed}, {"Pass", Style.Pass},
		{"Warn", Style.Warn}, {"Fail", Style.Fail},
	}
}

func assertPlain(t *testing.T, s Style) {
	t.Helper()
	if s.Enabled() {
		t.Fatalf("style enabled")
	}
	for _, h := range helpers() {
		if got := h.f(s, "text"); got != "text" {
			t.Errorf("%s: got %q, want the plain text", h.name, got)
		}
	}
}

func TestPlainOnNonTTY(t *testing.T) {
	t.Parallel()
	assertPlain(t, New(&bytes.Buffer{}, env("TERM", "xterm-256color")))
	assertPlain(t, New(&bytes.Buffer{}, nil))
	assertPlain(t, Style{})
	assertPlain(t, Plain())
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	assertPlain(t, New(f, env("TERM", "xterm"))) // a file, not a terminal
}

func TestPlainUnderNoColorOnTTY(t *testing.T) {
	t.Parallel()
	tty := openTTY(t)
	assertPlain(t, New(tty, env("TERM", "xterm", "NO_COLOR", "1")))
	assertPlain(t, New(tty, env("NO_COLOR", "anything")))
}

func TestPlainOnDumbTTY(t *testing.T) {
	t.Parallel()
	assertPlain(t, New(openTTY(t), env("TERM", "dumb")))
}

func TestStyledOnTTY(t *testing.T) {
	t.Parallel()
	tty := openTTY(t)
	for _, s := range []Style{
		New(tty, env("TERM", "xterm-256color")),
		New(tty, env("TERM", "xterm", "NO_COLOR", "")), // empty NO_COLOR does not count
		Forced(),
	} {
		if !s.Enabled() {
			t.Fatalf("style not enabled on a terminal")
		}
		for _, h := range helpers() {
			got := h.f(s, "text")
			if !strings.HasPrefix(got, "\x1b[") || !strings.Contains(got, "text") || !strings.HasSuffix(got, "\x1b[0m") {
				t.Errorf("%s: got %q, want text wrapped in escapes", h.name, got)
			}
		}
		if got := s.Green("ok"); got != "\x1b[32mok\x1b[0m" {
			t.Errorf("Green: %q", got)
		}
		if got := s.BoldRed("x"); got != "\x1b[1;31mx\x1b[0m" {
			t.Errorf("BoldRed: %q", got)
		}
		if got := s.Dim(""); got != "" {
			t.Errorf("empty text gets escapes: %q", got)
		}
	}
}
