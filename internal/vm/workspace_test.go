package vm

import (
	"context"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// exportFixture runs a VM whose "export" is the shell command cmd.
func exportFixture(t *testing.T, maxMiB int, cmd string) *fixture {
	t.Helper()
	f := newFixture(t)
	f.m.cfg.ExportMaxMiB = maxMiB
	f.m.exportCmd = func(string) []string { return []string{"sh", "-c", cmd} }
	if _, err := f.create(context.Background(), api.VMCreateParams{Name: "box"}, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

// spoolFiles lists export spool files left in the VM's directory.
func spoolFiles(t *testing.T, f *fixture) []string {
	t.Helper()
	vm, err := f.m.Get(context.Background(), "box")
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(f.layout.VMDir(vm.ID))
	var left []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".export") {
			left = append(left, e.Name())
		}
	}
	return left
}

// A guest that writes a 64 MiB "patch" against a 1 MiB cap gets a clear
// error; the output was never held in memory and nothing is left on disk.
func TestExportCap(t *testing.T) {
	f := exportFixture(t, 1, "head -c 67108864 /dev/zero")
	var before, after goruntime.MemStats
	goruntime.GC()
	goruntime.ReadMemStats(&before)
	p, err := f.m.Export(context.Background(), "box", "")
	goruntime.ReadMemStats(&after)
	if err == nil {
		p.Close()
		t.Fatal("a 64 MiB patch passed a 1 MiB cap")
	}
	if !strings.Contains(err.Error(), "patch larger than 1 MiB") || apiCode(err) != api.CodeOperationFailed {
		t.Errorf("error: %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 48<<20 {
		t.Errorf("export allocated %d MiB", grew>>20)
	}
	if left := spoolFiles(t, f); len(left) > 0 {
		t.Errorf("spool files left: %v", left)
	}
}

func TestExportRefusesHostilePatch(t *testing.T) {
	f := exportFixture(t, 1, `printf 'diff --git a/../../etc/cron.d/x b/../../etc/cron.d/x\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/../../etc/cron.d/x\n@@ -0,0 +1 @@\n+* * * * * root sh\n'`)
	p, err := f.m.Export(context.Background(), "box", "")
	if err == nil {
		p.Close()
		t.Fatal("a patch writing ../../etc was accepted")
	}
	if !strings.Contains(err.Error(), "refused the guest's patch") || !strings.Contains(err.Error(), "../../etc/cron.d/x") {
		t.Errorf("error: %v", err)
	}
	if left := spoolFiles(t, f); len(left) > 0 {
		t.Errorf("spool files left: %v", left)
	}
}

func TestExportGoodPatch(t *testing.T) {
	const patch = "diff --git a/x b/x\nindex 1111111..2222222 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
	f := exportFixture(t, 1, "printf '"+strings.ReplaceAll(patch, "\n", `\n`)+"'")
	p, err := f.m.Export(context.Background(), "box", "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	b, _ := io.ReadAll(p)
	if string(b) != patch {
		t.Errorf("patch %q", b)
	}
}

// A streaming guest command that stays silent past its idle timeout ends
// with an error instead of holding the caller.
func TestCaptureIdleTimeout(t *testing.T) {
	f := exportFixture(t, 1, "true")
	start := time.Now()
	_, err := f.m.captureTo(context.Background(), "box", []string{"sleep", "30"}, io.Discard, io.Discard, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "sent nothing") {
		t.Fatalf("err %v", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("took %s", time.Since(start))
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 8}
	for _, s := range []string{"abc", "defgh", "ij", "0123456789xyz", "!"} {
		tb.Write([]byte(s))
	}
	if got := string(tb.Bytes()); got != "56789xyz"[1:]+"!" {
		t.Errorf("tail %q", got)
	}
	cw := &capWriter{w: io.Discard, max: 10}
	if _, err := cw.Write(make([]byte, 10)); err != nil {
		t.Error(err)
	}
	if _, err := cw.Write([]byte{1}); err != errTooLarge {
		t.Errorf("over cap: %v", err)
	}
}

// A guest flooding its console fills at most serial_log_max_mib on disk;
// vm logs streams the newest output.
func TestSerialLogCapped(t *testing.T) {
	f := newFixture(t)
	f.driver.serialFlood = 20 << 20
	f.m.cfg.SerialLogMaxMiB = 1
	ctx := context.Background()
	vm, err := f.create(ctx, api.VMCreateParams{Name: "box"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(f.layout.VMDir(vm.ID), "serial.log")
	deadline := time.Now().Add(60 * time.Second)
	var got []byte
	for time.Now().Before(deadline) {
		rc, err := f.m.Logs(ctx, "box")
		if err != nil {
			t.Fatal(err)
		}
		got, _ = io.ReadAll(rc)
		rc.Close()
		if strings.HasSuffix(string(got), "LAST LINE\n") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.HasSuffix(string(got), "LAST LINE\n") {
		t.Fatalf("the flood's end never reached the log (%d bytes)", len(got))
	}
	var total int64
	for _, p := range []string{log, log + ".1"} {
		if fi, err := os.Stat(p); err == nil {
			total += fi.Size()
		}
	}
	if total > 1<<20 || len(got) > 1<<20 {
		t.Errorf("%d bytes on disk, %d read, for a 1 MiB cap after a 20 MiB flood", total, len(got))
	}
}

// Guest-written text in an error message cannot drive the user's terminal.
func TestPrintableGuestText(t *testing.T) {
	for in, want := range map[string]string{
		"fatal: not a git repository\n\tat /root": "fatal: not a git repository\n\tat /root",
		"\x1b]0;pwned\x07\x1b[2J":                 `\x1b]0;pwned\x07\x1b[2J`,
		"a\rb\x00c":                               `a\x0db\x00c`,
		"caf\xc3\xa9 \xff":                        `café \xff`,
		"\u009b31m":                               `\xc2\x9b31m`,
	} {
		if got := printable([]byte(in)); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
