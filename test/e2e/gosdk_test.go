//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/apitest"
	"banger/pkg/banger"
)

// TestGoSDK drives one real VM through the public Go SDK (pkg/banger),
// with every request and answer (JSON bodies, ndjson events, the frames
// of upgraded calls) checked against api/openapi.yaml: create, get, list,
// exec with stdin, stdout, stderr and exit codes, sessions, a workspace
// round trip, guest files, delete.
func TestGoSDK(t *testing.T) {
	ctx := ctxFor(t, 10*time.Minute)
	doc, err := apitest.Load(ctx, apitest.DocPath())
	if err != nil {
		t.Fatal(err)
	}
	var progress atomic.Int32
	var checked atomic.Int32
	c, err := banger.New(
		banger.WithSocket(filepath.Join(e.root, "run", "banger", "bangerd.sock")),
		banger.WithProgress(func(banger.Progress) { progress.Add(1) }),
		banger.WithTransport(func(rt http.RoundTripper) http.RoundTripper {
			return countingTransport{doc.Transport(rt, func(err error) { t.Errorf("openapi: %v", err) }), &checked}
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	const name = "gosdk"
	t.Cleanup(func() {
		c2, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.cli(c2, "", "vm", "delete", name)
	})

	vm, err := c.Create(ctx, banger.CreateParams{Name: name})
	if err != nil {
		t.Fatalf("create: %v\n%s", err, tail(e.daemonLog(), 30))
	}
	if vm.Name != name || vm.State != "running" {
		t.Fatalf("created %+v", vm)
	}
	if progress.Load() == 0 {
		t.Errorf("create sent no progress events")
	}
	if got, err := c.Get(ctx, name); err != nil || got.ID != vm.ID {
		t.Errorf("get: %+v %v", got, err)
	}
	list, err := c.List(ctx)
	found := false
	for _, v := range list {
		found = found || v.Name == name
	}
	if err != nil || !found {
		t.Errorf("list: %v %v", list, err)
	}
	if _, err := c.Create(ctx, banger.CreateParams{Name: name}); banger.ErrorCode(err) != banger.CodeAlreadyExists {
		t.Errorf("second create of %s: %v, want already_exists", name, err)
	}

	// Exec: stdin in, stdout and stderr apart, the exit code back.
	var so, se bytes.Buffer
	st, err := c.Exec(ctx, name, banger.Cmd{
		Argv:  []string{"sh", "-c", `read x; echo "out:$x"; echo "err:$PWD:$GREETING" >&2; exit 7`},
		Env:   []string{"GREETING=hi"},
		Cwd:   "/tmp",
		Stdin: strings.NewReader("line\n"), Stdout: &so, Stderr: &se,
	})
	if err != nil || st.Code != 7 || so.String() != "out:line\n" || se.String() != "err:/tmp:hi\n" {
		t.Errorf("exec: %+v %v stdout %q stderr %q", st, err, so.String(), se.String())
	}
	// A missing command is an exit status, not a failure of the call.
	if st, err := c.Exec(ctx, name, banger.Cmd{Argv: []string{"/no/such/cmd"}}); err != nil || st.Code != 127 || st.Error == "" {
		t.Errorf("missing command: %+v %v", st, err)
	}
	// Stdin over several frames (3 MiB, more than one frame's 1 MiB).
	big := make([]byte, 3<<20)
	rand.Read(big)
	sum := sha256.Sum256(big)
	so.Reset()
	if st, err := c.Exec(ctx, name, banger.Cmd{Argv: []string{"sh", "-c", "sha256sum | cut -d' ' -f1"}, Stdin: bytes.NewReader(big), Stdout: &so}); err != nil || st.Code != 0 || strings.TrimSpace(so.String()) != hex.EncodeToString(sum[:]) {
		t.Errorf("3 MiB stdin: %+v %v %q, want %x", st, err, so.String(), sum)
	}
	// Output larger than a frame comes back whole.
	if o, err := c.Output(ctx, name, "head", "-c", "2500000", "/dev/zero"); err != nil || o.Code != 0 || len(o.Stdout) != 2500000 {
		t.Errorf("2.5 MB of output: %v, got %d bytes", err, len(o.Stdout))
	}
	// Cancelling the context kills the command and the call returns.
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	start := time.Now()
	_, err = c.Exec(cctx, name, banger.Cmd{Argv: []string{"sleep", "600"}})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Minute {
		t.Errorf("cancelled exec: %v after %s", err, time.Since(start))
	}
	if !waitFor(ctx, 30*time.Second, 500*time.Millisecond, func() bool {
		o, err := c.Output(ctx, name, "sh", "-c", "pgrep -x sleep || true")
		return err == nil && strings.TrimSpace(string(o.Stdout)) == ""
	}) {
		t.Errorf("the command of the cancelled exec still runs")
	}

	// Sessions.
	s, err := c.StartSession(ctx, name, banger.SessionParams{Name: "s1", Argv: []string{"sh", "-c", "echo started; exec sleep 600"}})
	if err != nil || s.Name != "s1" || s.State != banger.SessionRunning {
		t.Fatalf("start session: %+v %v", s, err)
	}
	if ss, err := c.Sessions(ctx, name); err != nil || len(ss) != 1 || ss[0].Name != "s1" {
		t.Errorf("sessions: %+v %v", ss, err)
	}
	var logs bytes.Buffer
	waitFor(ctx, time.Minute, 500*time.Millisecond, func() bool {
		logs.Reset()
		_, err := c.SessionLogs(ctx, name, "s1", &logs, false, 0)
		return err == nil && strings.Contains(logs.String(), "started")
	})
	if !strings.Contains(logs.String(), "started") {
		t.Errorf("session logs: %q", logs.String())
	}
	if s, err := c.StopSession(ctx, name, "s1", 0); err != nil || s.State != banger.SessionExited {
		t.Errorf("stop session: %+v %v", s, err)
	}
	if _, err := c.GetSession(ctx, name, "nope"); !banger.IsNotFound(err) {
		t.Errorf("missing session: %v", err)
	}

	// Workspace: ship a repository, edit it in the guest, export the edit.
	repo := t.TempDir()
	hostSh(t, repo, "git init -q -b main && echo one > a.txt && git add . && git commit -qm init")
	ws, err := c.PrepareWorkspace(ctx, name, repo, banger.WorkspaceOptions{})
	if err != nil || ws.Files != 1 {
		t.Fatalf("prepare workspace: %+v %v", ws, err)
	}
	if o, err := c.Output(ctx, name, "sh", "-c", "cat a.txt && echo two >> a.txt"); err != nil || string(o.Stdout) != "one\n" {
		t.Errorf("workspace in the guest: %+v %v", o, err)
	}
	var patch bytes.Buffer
	if err := c.ExportWorkspace(ctx, name, &patch, ""); err != nil || !strings.Contains(patch.String(), "+two") {
		t.Errorf("export: %v %q", err, patch.String())
	}

	// Files.
	files := c.Files(name)
	if fi, err := files.Stat(ctx, "/root"); err != nil || fi.Type != "dir" {
		t.Fatalf("stat /root: %+v %v", fi, err)
	}
	data := []byte("written by the Go SDK\n")
	if fi, err := files.Write(ctx, "/root/sdk/dir/x.txt", bytes.NewReader(data), banger.WriteOptions{Mode: 0o640, Parents: true}); err != nil || fi.Size != int64(len(data)) || fi.Mode != "0640" || fi.Type != "file" {
		t.Fatalf("write: %+v %v", fi, err)
	}
	if b, err := files.Read(ctx, "/root/sdk/dir/x.txt", 1<<20); err != nil || !bytes.Equal(b, data) {
		t.Errorf("read: %q %v", b, err)
	}
	if o, err := c.Output(ctx, name, "stat", "-c", "%a", "/root/sdk/dir/x.txt"); err != nil || strings.TrimSpace(string(o.Stdout)) != "640" {
		t.Errorf("mode in the guest: %+v %v", o, err)
	}
	if fi, err := files.Mkdir(ctx, "/root/sdk/made", 0o700, false); err != nil || fi.Type != "dir" || fi.Mode != "0700" {
		t.Errorf("mkdir: %+v %v", fi, err)
	}
	if l, err := files.List(ctx, "/root/sdk"); err != nil || len(l.Entries) != 2 || l.Entries[0].Name != "dir" || l.Entries[1].Name != "made" || l.Truncated {
		t.Errorf("list: %+v %v", l, err)
	}
	// A tar out of the guest and back in elsewhere.
	rc, err := files.GetArchive(ctx, "/root/sdk/dir")
	if err != nil {
		t.Fatalf("get archive: %v", err)
	}
	var tarball bytes.Buffer
	_, err = tarball.ReadFrom(rc)
	rc.Close()
	if err != nil || tarball.Len() == 0 {
		t.Fatalf("read archive: %v (%d bytes)", err, tarball.Len())
	}
	if res, err := files.PutArchive(ctx, "/root/sdk/made", &tarball); err != nil || res.Files < 1 {
		t.Errorf("put archive: %+v %v", res, err)
	}
	if o, err := c.Output(ctx, name, "sh", "-c", "cat /root/sdk/made/*/x.txt /root/sdk/made/x.txt 2>/dev/null | head -1"); err != nil || string(o.Stdout) != string(data) {
		t.Errorf("extracted archive: %+v %v", o, err)
	}
	// Watch: a file created after the ready event is reported.
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	seen := make(chan banger.FileEvent, 16)
	werr := make(chan error, 1)
	go func() {
		werr <- files.Watch(wctx, "/root/sdk", false, func(ev banger.FileEvent) error {
			if ev.Op == "ready" {
				go files.Write(wctx, "/root/sdk/new.txt", strings.NewReader("n"), banger.WriteOptions{})
			}
			seen <- ev
			return nil
		})
	}()
	var events []string
	for ev := range seen {
		events = append(events, ev.Op+" "+ev.Path)
		if ev.Path == "/root/sdk/new.txt" || wctx.Err() != nil {
			break
		}
	}
	wcancel()
	if err := <-werr; err != nil {
		t.Errorf("watch: %v", err)
	}
	if len(events) < 2 || !strings.HasPrefix(events[0], "ready") || !strings.HasSuffix(events[len(events)-1], "/root/sdk/new.txt") {
		t.Errorf("watch events: %v", events)
	}
	if err := files.Remove(ctx, "/root/sdk/dir"); err == nil {
		t.Errorf("remove of a non-empty directory without recursive succeeded")
	}
	if err := files.RemoveAll(ctx, "/root/sdk"); err != nil {
		t.Errorf("remove all: %v", err)
	}
	if _, err := files.Stat(ctx, "/root/sdk/dir/x.txt"); !banger.IsNotFound(err) {
		t.Errorf("stat after remove: %v, want not_found", err)
	}
	if _, err := files.Read(ctx, "/root/no-such-file", 1<<20); !banger.IsNotFound(err) {
		t.Errorf("read of a missing file: %v, want not_found", err)
	}
	if _, err := files.Stat(ctx, "relative/path"); banger.ErrorCode(err) != banger.CodeBadRequest {
		t.Errorf("relative path: %v, want bad_request", err)
	}

	if err := c.Delete(ctx, name); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := c.Get(ctx, name); !banger.IsNotFound(err) {
		t.Errorf("get after delete: %v", err)
	}
	if checked.Load() < 20 {
		t.Errorf("only %d calls went through the validator", checked.Load())
	}
}

// countingTransport counts the calls that went through it.
type countingTransport struct {
	http.RoundTripper
	n *atomic.Int32
}

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.RoundTripper.RoundTrip(req)
}
