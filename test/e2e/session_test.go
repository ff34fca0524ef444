//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type sessionInfo struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Exit  *struct {
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
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if si := showSession(t, ctx, vm, s); si.State == state {
			return si
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("session %s never reached %s", s, state)
	return sessionInfo{}
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

	// The daemon goes away and comes back; the sessions do not notice.
	must(t, e.cli(ctx, "", "daemon", "stop"))
	time.Sleep(time.Second)
	if err := e.startDaemon(); err != nil {
		t.Fatal(err)
	}
	if si := showSession(t, ctx, vm, "ticker"); si.State != "running" {
		t.Errorf("ticker after daemon restart: %+v", si)
	}
	out := must(t, e.cli(ctx, "", "vm", "session", "logs", vm, "ticker")).stdout
	if !strings.HasPrefix(out, "started\ntick 1\n") || !strings.Contains(out, "tick 3") {
		t.Errorf("ticker output across the restart: %q", out)
	}

	// Two attachers to the cat session: input from one is seen by both.
	type att struct {
		cmd *exec.Cmd
		out *safeBuf
	}
	var atts []att
	for i := 0; i < 2; i++ {
		cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "banger"), "vm", "session", "attach", vm, "echoer")
		cmd.Env = e.environ
		b := &safeBuf{}
		cmd.Stdout = b
		if i == 0 {
			cmd.Stdin = strings.NewReader("ping from attacher\n")
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		atts = append(atts, att{cmd, b})
		if i == 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !(strings.Contains(atts[0].out.String(), "ping from attacher") && strings.Contains(atts[1].out.String(), "ping from attacher")) {
		time.Sleep(100 * time.Millisecond)
	}
	for i, a := range atts {
		if !strings.Contains(a.out.String(), "ping from attacher") {
			t.Errorf("attacher %d did not see the input echoed: %q", i, a.out.String())
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
