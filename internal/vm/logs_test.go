package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConsoleTail: the last lines of a big log, read boundedly, with the
// guest's control bytes escaped; no log gives "".
func TestConsoleTail(t *testing.T) {
	dir := t.TempDir()
	if got := consoleTail(filepath.Join(dir, "missing"), 5); got != "" {
		t.Errorf("missing log: %q", got)
	}
	var b strings.Builder
	for i := 0; i < 100000; i++ {
		b.WriteString("boot line\r\n")
	}
	b.WriteString("watchdog: BUG: soft lockup - CPU#0 stuck\x1b[2J\r\nlast\r\n")
	p := filepath.Join(dir, "serial.log")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got := consoleTail(p, 2)
	want := "watchdog: BUG: soft lockup - CPU#0 stuck\\x1b[2J\nlast"
	if got != want {
		t.Errorf("consoleTail = %q, want %q", got, want)
	}
}
