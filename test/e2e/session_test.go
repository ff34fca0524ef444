//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type sessionInfo struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Attached int    `json:"attached"`
	Exit     *struct {
		Code   int    `json:"code"`
		Signal string `json:"signal"`
	} `json:"exit"`
}

func showSession(t *testing.T, ctx context.Context, vm, s string) sessionInfo {
	t.Helper()
	r := must(t, e.cli(ctx, "", "vm", "session", "show", "--json", vm, s))
	var si sessionInfo
	if err := json.Unmarshal([]byte(r.stdout), &si); err != nil {
		t.Fatalf("session show: %v\n%s", err, r.stdout)
	}
	return si
}

func waitSession(t *testing.T, ctx context.Context, vm, s, state string) sessionInfo {
	t.Helper()
	var si sessionInfo
	if !waitFor(ctx, 2*time.Minute, 200*time.Millisecond, func() bool {
		si = showSession(t, ctx, vm, s)
		return si.State == state
	}) {
		t.Fatalf("session %s never reached %s: %+v", s, state, si)
	}
	return si
}

// TestSessions: a session keeps running with nobody attached and across a
// daemon restart; its output and exit status are kept; attach works
// again after the restart; launch problems are reported up front.
func TestSessions(t *testing.T) {
	ctx := ctxFor(t, 8*time.Minute)
	vm := newVM(t, ctx, "sessions")

	for _, bad := range [][]string{
		{"--cwd", "/no/such/dir", "--", "true"},
		{"--", "no-such-command-xyz"},
		{"--name", "Bad_Name", "--", "true"},
	} {
		r := e.cli(ctx, "", append([]string{"vm", "session", "start", vm}, bad...)...)
		if r.code == 0 {
			t.Errorf("session start %v accepted: %s", bad, r)
		}
	}
	if out := must(t, e.cli(ctx, "", "vm", "session", "list", "--json", vm)).stdout; strings.TrimSpace(out) != "[]" {
		t.Errorf("refused starts left sessions: %s", out)
	}

	must(t, e.cli(ctx, "", "vm", "session", "start", vm, "--name", "ticker", "--",
		"sh", "-c", "echo started; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"))
	must(t, e.cli(ctx, "", "vm", "session", "start", vm, "--name", "echoer", "--", "cat"))
	must(t, e.cli(ctx, "", "vm", "session", "start", vm, "--name", "short", "--", "sh", "-c", "echo bye; exit 3"))
	if r := e.cli(ctx, "", "vm", "session", "start", vm, "--name", "ticker", "--", "true"); r.code == 0 {
		t.Errorf("duplicate session name accepted")
	}

	si := waitSession(t, ctx, vm, "short", "exited")
	if si.Exit == nil || si.Exit.Code != 3 {
		t.Errorf("exit status of a finished session: %+v", si.Exit)
	}
	if out := must(t, e.cli(ctx, "", "vm", "session", "logs", vm, "short")).stdout; out != "bye\n" {
		t.Errorf("logs of finished session: %q", out)
	}

	// The daemon goes away and comes back; the sessions do not notice:
	// the ticker's output goes on from where it was, in one unbroken run.
	tickerLog := func() (string, int) {
		out := must(t, e.cli(ctx, "", "vm", "session", "logs", vm, "ticker")).stdout
		n := 0
		for _, l := range strings.Split(out, "\n") {
			fmt.Sscanf(l, "tick %d", &n)
		}
		return out, n
	}
	var before int
	if !waitFor(ctx, time.Minute, 200*time.Millisecond, func() bool { _, before = tickerLog(); return before >= 1 }) {
		t.Fatalf("ticker never ticked")
	}
	e.restartDaemonAfter(t)
	old := e.daemonPID
	must(t, e.cli(ctx, "", "daemon", "stop"))
	if !waitFor(ctx, 30*time.Second, 100*time.Millisecond, func() bool { return !alive(old) }) {
		t.Fatalf("daemon pid %d still alive after daemon stop", old)
	}
	if err := e.startDaemon(); err != nil {
		t.Fatal(err)
	}
	if si := showSession(t, ctx, vm, "ticker"); si.State != "running" {
		t.Errorf("ticker after daemon restart: %+v", si)
	}
	var out string
	var after int
	if !waitFor(ctx, time.Minute, 200*time.Millisecond, func() bool { out, after = tickerLog(); return after > before+1 }) {
		t.Errorf("ticker stopped ticking across the restart (tick %d before): %q", before, tail(out, 5))
	}
	want := "started\n"
	for i := 1; i <= after; i++ {
		want += fmt.Sprintf("tick %d\n", i)
	}
	if !strings.HasPrefix(out, want) {
		t.Errorf("ticker output is not one unbroken run up to tick %d: %q", after, tail(out, 8))
	}

	// Two attachers to the cat session: input from either, typed while
	// both are attached, reaches both live (not from the replayed log).
	type att struct {
		cmd *exec.Cmd
		in  io.WriteCloser
		out *safeBuf
	}
	var atts []att
	for i := 0; i < 2; i++ {
		cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "banger"), "vm", "session", "attach", vm, "echoer")
		cmd.Env = e.environ
		b := &safeBuf{}
		cmd.Stdout = b
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close(); cmd.Process.Kill() })
		atts = append(atts, att{cmd, in, b})
	}
	if !waitFor(ctx, time.Minute, 200*time.Millisecond, func() bool { return showSession(t, ctx, vm, "echoer").Attached == 2 }) {
		t.Fatalf("two attachers never attached: %+v", showSession(t, ctx, vm, "echoer"))
	}
	seen := func(s string) bool {
		return strings.Contains(atts[0].out.String(), s) && strings.Contains(atts[1].out.String(), s)
	}
	for from := range atts {
		line := fmt.Sprintf("live from attacher %d %d", from, time.Now().UnixNano())
		if _, err := io.WriteString(atts[from].in, line+"\n"); err != nil {
			t.Fatalf("write to attacher %d: %v", from, err)
		}
		if !waitFor(ctx, 30*time.Second, 100*time.Millisecond, func() bool { return seen(line) }) {
			for i, a := range atts {
				t.Errorf("attacher %d did not see %q live: %q", i, line, a.out.String())
			}
		}
	}
	// Stopping the session ends both attachments.
	must(t, e.cli(ctx, "", "vm", "session", "stop", vm, "echoer"))
	for i, a := range atts {
		done := make(chan error, 1)
		go func() { done <- a.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			a.cmd.Process.Kill()
			t.Errorf("attacher %d did not end when the session stopped", i)
		}
	}
	if si := showSession(t, ctx, vm, "echoer"); si.State != "exited" || si.Exit == nil || si.Exit.Signal == "" {
		t.Errorf("stopped session: %+v", si)
	}

	// logs -f follows until the end.
	must(t, e.cli(ctx, "", "vm", "session", "start", vm, "--name", "counter", "--", "sh", "-c", "for i in 1 2 3; do echo n$i; sleep 0.3; done"))
	if out := must(t, e.cli(ctx, "", "vm", "session", "logs", "-f", vm, "counter")).stdout; out != "n1\nn2\nn3\n" {
		t.Errorf("logs -f: %q", out)
	}
	must(t, e.cli(ctx, "", "vm", "session", "stop", vm, "ticker"))
}

type safeBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
