//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Caps set in the e2e config (harness_test.go) and exceeded on purpose.
const (
	hostileExportMaxMiB = 16
	hostileSerialMaxMiB = 1
)

// maxDaemonRSS bounds bangerd's resident memory through every hostile
// check: a daemon that buffered what the guest sends would go far beyond.
// A daemon that already holds more when the scenario starts (the Go
// runtime returns memory from earlier work, such as the suite's image
// build, lazily) may keep that much, but not grow past it.
const maxDaemonRSS = 300 << 20

// rssLimit is maxDaemonRSS, or the daemon's RSS at the scenario's start
// plus room for a few frame buffers.
var rssLimit int64 = maxDaemonRSS

// daemonMem reads bangerd's VmRSS and VmHWM in bytes.
func daemonMem(t *testing.T) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.daemonPID))
	if err != nil {
		t.Fatalf("daemon status: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// checkDaemon asserts that bangerd still answers and that its memory
// stayed bounded after the hostile step named what.
func checkDaemon(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	if r := e.cli(ctx, "", "vm", "list"); r.code != 0 {
		t.Errorf("after %s the daemon does not answer: %s", what, r)
	}
	rss, hwm := daemonMem(t)
	t.Logf("after %s: bangerd VmRSS %d MiB, VmHWM %d MiB", what, rss>>20, hwm>>20)
	if rss > rssLimit {
		t.Errorf("after %s bangerd uses %d MiB (limit %d MiB)", what, rss>>20, rssLimit>>20)
	}
}

// sh runs a shell pipeline on the host with the e2e environment (so that
// large outputs go to wc, not into the test's memory).
func hostPipe(ctx context.Context, script string) result {
	return e.command(ctx, "", "sh", "-c", script)
}

// agentPIDScript prints the guest agent's pid (its argv[0] is
// "@banger-agent").
const agentPIDScript = `for p in /proc/[0-9]*; do c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null); case "$c" in "@banger-agent serve"*) echo ${p#/proc/};; esac; done`

// TestHostileGuest: a guest (root in its VM) tries to exhaust the daemon
// and to smuggle files out through an exported patch. One VM serves every
// check; the agent-killing check comes last.
func TestHostileGuest(t *testing.T) {
	ctx := ctxFor(t, 25*time.Minute)
	vm := newVM(t, ctx, "hostile")
	banger := filepath.Join(e.bin, "banger")
	rss0, hwm0 := daemonMem(t)
	t.Logf("start: bangerd VmRSS %d MiB, VmHWM %d MiB", rss0>>20, hwm0>>20)
	rssLimit = max(maxDaemonRSS, rss0+32<<20)

	// 1. An exec whose output is one endless line: streamed through the
	// daemon in bounded frames, never collected.
	t.Run("exec endless line", func(t *testing.T) {
		r := hostPipe(ctx, banger+` vm exec hostile -- sh -c "head -c 16M /dev/zero | tr '\0' x" | wc -c`)
		if r.code != 0 || strings.TrimSpace(r.stdout) != strconv.Itoa(16<<20) {
			t.Errorf("endless line: %s", r)
		}
		checkDaemon(t, ctx, "a 16 MiB output line")
	})

	// 2. Exported patches are the guest's to write: replace git with a
	// script that prints whatever /root/hostile.patch holds.
	must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-ec", `
mkdir -p /root/repo/.git
real=$(command -v git || true)
cat > /usr/local/bin/git <<'EOS'
#!/bin/sh
case "$1" in
diff) exec cat /root/hostile.patch ;;
rev-parse) [ "$2" = --git-dir ] && echo /root/repo/.git ;;
hash-object) echo 4b825dc642cb6eb9a060e54bf8d69288fbee4904 ;;
esac
exit 0
EOS
chmod +x /usr/local/bin/git
[ -z "$real" ] || [ "$real" = /usr/local/bin/git ] || ln -sf /usr/local/bin/git "$real"`))
	outDir := t.TempDir()
	export := func(t *testing.T, patch string) result {
		t.Helper()
		must(t, e.cli(ctx, patch, "vm", "exec", vm, "--", "sh", "-c", "cat > /root/hostile.patch"))
		return e.cli(ctx, "", "vm", "workspace", "export", vm, "-o", filepath.Join(outDir, "out.patch"))
	}
	nothingWritten := func(t *testing.T) {
		t.Helper()
		ents, _ := os.ReadDir(outDir)
		for _, en := range ents {
			t.Errorf("left in the output directory: %s", en.Name())
		}
	}
	t.Run("patch escaping the repository", func(t *testing.T) {
		r := export(t, "diff --git a/../../../etc/cron.d/pwn b/../../../etc/cron.d/pwn\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/../../../etc/cron.d/pwn\n@@ -0,0 +1 @@\n+* * * * * root touch /tmp/pwned\n")
		if r.code == 0 || !strings.Contains(r.stderr, "refused the guest's patch") || !strings.Contains(r.stderr, "../../../etc/cron.d/pwn") {
			t.Errorf("../ patch: %s", r)
		}
		nothingWritten(t)
	})
	t.Run("patch into .git", func(t *testing.T) {
		r := export(t, "diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\nnew file mode 100755\nindex 0000000..1111111\n--- /dev/null\n+++ b/.git/hooks/post-checkout\n@@ -0,0 +1 @@\n+touch /tmp/pwned\n")
		if r.code == 0 || !strings.Contains(r.stderr, "inside .git") {
			t.Errorf(".git patch: %s", r)
		}
		nothingWritten(t)
	})
	t.Run("escaping symlink", func(t *testing.T) {
		r := export(t, "diff --git a/docs/evil b/docs/evil\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/docs/evil\n@@ -0,0 +1 @@\n+../../../../etc\n\\ No newline at end of file\n"+
			"diff --git a/docs/evil/passwd b/docs/evil/passwd\nnew file mode 100644\nindex 0000000..1111111\n--- /dev/null\n+++ b/docs/evil/passwd\n@@ -0,0 +1 @@\n+root::0:0::/:/bin/sh\n")
		if r.code == 0 || !strings.Contains(r.stderr, `"docs/evil"`) || !strings.Contains(r.stderr, "points outside the repository") {
			t.Errorf("symlink patch: %s", r)
		}
		nothingWritten(t)
	})
	t.Run("patch over the export cap", func(t *testing.T) {
		must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c",
			fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x > /root/hostile.patch", (hostileExportMaxMiB+8)<<20)))
		r := e.cli(ctx, "", "vm", "workspace", "export", vm, "-o", filepath.Join(outDir, "out.patch"))
		if r.code == 0 || !strings.Contains(r.stderr, fmt.Sprintf("patch larger than %d MiB", hostileExportMaxMiB)) {
			t.Errorf("oversize patch: %s", r)
		}
		nothingWritten(t)
		checkDaemon(t, ctx, "an oversize patch")
	})
	t.Run("patch never printed to a terminal", func(t *testing.T) {
		r := e.cli(ctx, "", "vm", "workspace", "export", vm)
		if r.code == 0 || !strings.Contains(r.stderr, "-o FILE") {
			t.Errorf("export without -o: %s", r)
		}
	})

	// 3. A console flood: the serial log stays under its cap on disk, and
	// vm logs streams at most that much.
	t.Run("serial console flood", func(t *testing.T) {
		id := showVM(t, ctx, vm).ID
		logs, _ := filepath.Glob(filepath.Join(e.root, "state", "*", "vms", id, "serial.log"))
		if len(logs) != 1 {
			t.Fatalf("serial log of %s not found under %s", id, e.root)
		}
		log := logs[0]
		capBytes := int64(hostileSerialMaxMiB) << 20
		for i := 0; i < 6; i++ {
			if _, err := os.Stat(log + ".1"); err == nil {
				break // rotated at least once: the flood exceeded the cap's half
			}
			e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", `timeout 15 sh -c "tr '\0' x < /dev/zero > /dev/ttyS0"; true`)
		}
		var total int64
		for _, p := range []string{log, log + ".1"} {
			if fi, err := os.Stat(p); err == nil {
				total += fi.Size()
			}
		}
		if _, err := os.Stat(log + ".1"); err != nil {
			t.Errorf("the flood never filled half of the %d MiB cap (%d bytes logged)", hostileSerialMaxMiB, total)
		}
		if total > capBytes {
			t.Errorf("serial log uses %d bytes on disk, cap %d", total, capBytes)
		}
		r := hostPipe(ctx, banger+" vm logs hostile | wc -c")
		n, _ := strconv.ParseInt(strings.TrimSpace(r.stdout), 10, 64)
		if r.code != 0 || n == 0 || n > capBytes {
			t.Errorf("vm logs gave %d bytes: %s", n, r)
		}
		checkDaemon(t, ctx, "a console flood")
	})

	// 4. A guest whose agent stops answering: `vm ports` ends at its
	// deadline instead of hanging, and the VM recovers when the agent
	// resumes.
	t.Run("agent stops answering", func(t *testing.T) {
		must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c",
			"a=$("+agentPIDScript+"); setsid sh -c \"sleep 2; kill -STOP $a; sleep 45; kill -CONT $a\" >/dev/null 2>&1 </dev/null &"))
		time.Sleep(5 * time.Second)
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		r := e.cli(pctx, "", "vm", "ports", vm)
		cancel()
		if r.code == 0 || !strings.Contains(r.stderr, "deadline") {
			t.Errorf("ports against a stopped agent (after %s): %s", time.Since(start).Round(time.Second), r)
		}
		checkDaemon(t, ctx, "a stopped agent")
		// The agent resumes at about 47 s (after the 30 s ports deadline,
		// which started at 5 s); the VM is usable again.
		deadline := time.Now().Add(4 * time.Minute)
		for {
			ectx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			r := e.cli(ectx, "", "vm", "exec", vm, "--", "true")
			cancel()
			if r.code == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the VM did not recover after the agent resumed: %s", r)
			}
			time.Sleep(5 * time.Second)
		}
	})

	// 5. Last: the guest kills its agent and writes an endless line into
	// the agent's port. The daemon drops the garbled session, answers
	// with a clear error and keeps its memory.
	t.Run("garbage on the agent channel", func(t *testing.T) {
		must(t, e.cli(ctx, "", "vm", "exec", vm, "--", "sh", "-c", `
port=""
for n in /sys/class/virtio-ports/*/name; do [ "$(cat $n)" = org.banger.agent ] && port=/dev/$(basename $(dirname $n)); done
[ -n "$port" ] || { echo no agent port >&2; exit 1; }
a=$(`+agentPIDScript+`)
setsid sh -c "sleep 2; kill -9 $a; sleep 1; while :; do tr '\0' x < /dev/zero > $port; sleep 0.2; done" >/dev/null 2>&1 </dev/null &`))
		time.Sleep(10 * time.Second)
		pctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
		r := e.cli(pctx, "", "vm", "ports", vm)
		cancel()
		if r.code == 0 {
			t.Errorf("ports answered from a guest writing garbage: %s", r)
		}
		t.Logf("ports with garbage on the channel: %s", strings.TrimSpace(r.stderr))
		checkDaemon(t, ctx, "garbage on the agent channel")
	})
	// The peak may only have grown by a little (buffers, not the guest's
	// data: the checks above pushed some 40 MiB of guest output through it).
	if _, hwm := daemonMem(t); hwm > max(hwm0+32<<20, maxDaemonRSS) {
		t.Errorf("bangerd peaked at %d MiB during the hostile checks (limit %d MiB)", hwm>>20, max(hwm0+32<<20, maxDaemonRSS)>>20)
	}
}
