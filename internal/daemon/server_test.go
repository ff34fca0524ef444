package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/image"
	"banger/internal/model"
	"banger/internal/store"
	"banger/internal/vm"
)

// fakeVMs is a VMManager that knows one running VM, "box". The embedded
// nil interface makes any call a test did not plan for panic, which the
// HTTP server turns into a failed request the test notices.
type fakeVMs struct {
	VMManager

	mu sync.Mutex
	// err, when set for an operation name, is what that operation returns.
	err map[string]error
	// agent serves the guest side of an opened stream.
	agent    func(conn net.Conn)
	deleted  []string
	recorded []api.WorkspaceParams
	opened   []string
	streams  map[string]*streamFake
	// calls records CheckCreate and Create (with the image's name).
	calls []string
}

func newFakeVMs() *fakeVMs { return &fakeVMs{err: map[string]error{}} }

func (f *fakeVMs) fail(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err[op]
}

func (f *fakeVMs) vm(ref string) (*model.VM, error) {
	if ref != "box" && ref != "id-box" {
		return nil, fmt.Errorf("vm %q: %w", ref, store.ErrNotFound)
	}
	return &model.VM{ID: "id-box", Name: "box", State: model.StateRunning}, nil
}

func (f *fakeVMs) Get(ctx context.Context, ref string) (*model.VM, error) {
	if err := f.fail("get"); err != nil {
		return nil, err
	}
	return f.vm(ref)
}

func (f *fakeVMs) List(ctx context.Context) ([]*model.VM, error) {
	if err := f.fail("list"); err != nil {
		return nil, err
	}
	v, _ := f.vm("box")
	return []*model.VM{v}, nil
}

func (f *fakeVMs) Show(ctx context.Context, ref string) (*model.VM, error) {
	v, err := f.Get(ctx, ref)
	if err == nil && v.State == model.StateRunning {
		v.Memory = &model.MemoryUsage{HostRSS: 180 << 20, GuestUsed: 130 << 20, GuestTotal: 1 << 30, GuestAvailable: 800 << 20, Balloon: model.BalloonReporting}
	}
	return v, err
}

func (f *fakeVMs) ListWithMemory(ctx context.Context) ([]*model.VM, error) {
	return f.List(ctx)
}

func (f *fakeVMs) CheckCreate(p api.VMCreateParams) error {
	f.mu.Lock()
	f.calls = append(f.calls, "check")
	f.mu.Unlock()
	return f.fail("check")
}

func (f *fakeVMs) Create(ctx context.Context, p api.VMCreateParams, img *model.Image, progress vm.Progress) (*model.VM, error) {
	f.mu.Lock()
	f.calls = append(f.calls, "create "+img.Name)
	f.mu.Unlock()
	progress(api.Progress{Stage: "create_disk", DurationMS: 3})
	progress(api.Progress{Stage: "boot", DurationMS: 5})
	if err := f.fail("create"); err != nil {
		return nil, err
	}
	return &model.VM{ID: "id-" + p.Name, Name: p.Name, State: model.StateRunning}, nil
}

func (f *fakeVMs) Kill(ctx context.Context, ref string, sig syscall.Signal) (*model.VM, error) {
	if sig != syscall.SIGTERM {
		return nil, fmt.Errorf("unexpected signal %v", sig)
	}
	return f.vm(ref)
}

func (f *fakeVMs) Delete(ctx context.Context, ref string) error {
	f.mu.Lock()
	f.deleted = append(f.deleted, ref)
	f.mu.Unlock()
	return nil
}

func (f *fakeVMs) open(ref, what string) (net.Conn, error) {
	if err := f.fail(what); err != nil {
		return nil, err
	}
	if _, err := f.vm(ref); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.opened = append(f.opened, what)
	f.mu.Unlock()
	daemonSide, guestSide := net.Pipe()
	go f.agent(guestSide)
	return daemonSide, nil
}

func (f *fakeVMs) OpenExec(ctx context.Context, ref string, p api.ExecParams) (net.Conn, error) {
	return f.open(ref, "exec")
}

func (f *fakeVMs) OpenUntar(ctx context.Context, ref, dir string, clean bool) (net.Conn, error) {
	return f.open(ref, "untar")
}

func (f *fakeVMs) OpenWorkspaceUntar(ctx context.Context, ref string) (net.Conn, error) {
	return f.open(ref, "untar")
}

func (f *fakeVMs) OpenSession(ctx context.Context, ref, op string, req agent.SessionRequest) (net.Conn, error) {
	return f.open(ref, op+":"+req.Name)
}

func (f *fakeVMs) RecordWorkspace(ctx context.Context, ref string, p api.WorkspaceParams) error {
	f.mu.Lock()
	f.recorded = append(f.recorded, p)
	f.mu.Unlock()
	return nil
}

// echoAgent answers an exec stream: each stdin frame comes back as stdout,
// and the empty one ends the command with exit code 3.
func echoAgent(conn net.Conn) {
	defer conn.Close()
	fw := agent.NewFrameWriter(conn)
	for {
		t, p, err := agent.ReadFrame(conn)
		if err != nil {
			return
		}
		if t != agent.FrameStdin {
			continue
		}
		if len(p) == 0 {
			fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 3})
			return
		}
		fw.Write(agent.FrameStdout, bytes.ToUpper(p))
	}
}

// untarAgent reads an upload up to its empty stdin frame and answers with
// code (and msg), as an agent that knows workspace streams does; oldAgent
// answers as one from before them.
func untarAgent(code int, msg string) func(net.Conn) {
	return untarAnswer(agent.ExitStatus{Code: code, Error: msg, Workspace: true})
}

func oldAgent() func(net.Conn) { return untarAnswer(agent.ExitStatus{}) }

func untarAnswer(es agent.ExitStatus) func(net.Conn) {
	return func(conn net.Conn) {
		defer conn.Close()
		for {
			t, p, err := agent.ReadFrame(conn)
			if err != nil {
				return
			}
			if t == agent.FrameStdin && len(p) == 0 {
				break
			}
		}
		agent.NewFrameWriter(conn).WriteJSON(agent.FrameExit, es)
	}
}

// fakeImages is an ImageService for the bundle download.
type fakeImages struct {
	ImageService
	exportErr error
	// resolved records ResolveImage's refs; resolveErr fails it.
	mu         sync.Mutex
	resolved   []string
	resolveErr error
}

func (f *fakeImages) ResolveImage(ctx context.Context, ref string, progress image.Progress) (*model.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolved = append(f.resolved, ref)
	if f.resolveErr != nil {
		return nil, f.resolveErr
	}
	if ref == "" {
		ref = "debian"
	}
	return &model.Image{Name: ref}, nil
}

func (f *fakeImages) Image(ctx context.Context, name string) (*model.Image, error) {
	if name != "debian" {
		return nil, fmt.Errorf("image %q: %w", name, store.ErrNotFound)
	}
	return &model.Image{Name: name}, nil
}

func (f *fakeImages) ExportBundle(ctx context.Context, name string, w io.Writer) error {
	io.WriteString(w, "partial bundle")
	return f.exportErr
}

// testServer serves a Server with the fakes on a unix socket and returns
// a client for it and the daemon's log.
type testServer struct {
	vms    *fakeVMs
	images *fakeImages
	c      *client.Client
	socket string
	log    *syncBuffer
	stops  chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "bd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ts := &testServer{vms: newFakeVMs(), images: &fakeImages{}, socket: filepath.Join(dir, "d.sock"), log: &syncBuffer{}, stops: make(chan struct{}, 1)}
	ts.vms.agent = echoAgent
	srv := &Server{VMs: ts.vms, Images: ts.images, Version: "v-test", Socket: ts.socket,
		Log:  slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Stop: func() { ts.stops <- struct{}{} }}
	ln, err := net.Listen("unix", ts.socket)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	ts.c = client.New(ts.socket)
	return ts
}

var opIDPattern = regexp.MustCompile(`^[0-9a-f]{8}$`)

// raw makes a request and returns the status and the decoded error.
func (ts *testServer) raw(t *testing.T, method, path, body string) (int, api.Error) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", ts.socket)
	}}}
	req, err := http.NewRequest(method, "http://bangerd"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ae api.Error
	json.NewDecoder(resp.Body).Decode(&ae)
	return resp.StatusCode, ae
}

// Every failure maps to its code and HTTP status and names a fresh
// operation id, which the daemon's log line carries too.
func TestErrorCodes(t *testing.T) {
	ts := startServer(t)
	ts.vms.err["list"] = errors.New("database is locked")
	cases := []struct {
		method, path, body string
		status             int
		code, msg          string
	}{
		{"GET", "/v1/vms/nope", "", 404, api.CodeNotFound, `vm "nope": not found`},
		{"GET", "/v1/vms", "", 500, api.CodeOperationFailed, "database is locked"},
		{"POST", "/v1/vms/box/kill", `{"signal":"NOPE"}`, 400, api.CodeBadRequest, "signal"},
		{"POST", "/v1/vms/box/kill", `{"signal":"TERM","extra":1}`, 400, api.CodeBadRequest, `bad request body: json: unknown field "extra"`},
		{"POST", "/v1/vms/box/kill", `{"signal":`, 400, api.CodeBadRequest, "bad request body"},
		{"GET", "/v1/nothing-here", "", 404, api.CodeUnknownMethod, "no such API call: GET /v1/nothing-here"},
		{"GET", "/v0/vms", "", 404, api.CodeBadVersion, "no such API call: GET /v0/vms"},
		{"POST", "/v1/run", `{"create":{}}`, 400, api.CodeBadRequest, "no command given"},
		{"POST", "/v1/vms/box/workspace", `{"mode":"copy"}`, 400, api.CodeBadRequest, "workspace path is required"},
		{"GET", "/v1/images/nope/bundle", "", 404, api.CodeNotFound, `image "nope": not found`},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		status, ae := ts.raw(t, c.method, c.path, c.body)
		if status != c.status || ae.Code != c.code || !strings.Contains(ae.Message, c.msg) {
			t.Errorf("%s %s: %d %+v; want %d %s %q", c.method, c.path, status, ae, c.status, c.code, c.msg)
		}
		if !opIDPattern.MatchString(ae.OpID) || seen[ae.OpID] {
			t.Errorf("%s %s: op id %q is not a fresh 8-hex id", c.method, c.path, ae.OpID)
		}
		seen[ae.OpID] = true
		// Routed failures are logged with their op id (the catch-all
		// for unknown calls logs nothing).
		if c.code != api.CodeUnknownMethod && c.code != api.CodeBadVersion && !strings.Contains(ts.log.String(), "op="+ae.OpID) {
			t.Errorf("%s %s: op %s not in the log:\n%s", c.method, c.path, ae.OpID, ts.log.String())
		}
	}
	// A good call of the same route works.
	if v, err := ts.callKill("TERM"); err != nil || v.Name != "box" {
		t.Errorf("kill TERM: %+v %v", v, err)
	}
}

func (ts *testServer) callKill(sig string) (*model.VM, error) {
	var v model.VM
	err := ts.c.Do(context.Background(), "POST", "/vms/box/kill", api.VMKillParams{Signal: sig}, &v)
	return &v, err
}

// toAPIError keeps an explicit code, maps the store's sentinel errors and
// keeps the wrapping context in the message.
func TestToAPIError(t *testing.T) {
	s := &Server{}
	for _, c := range []struct {
		err  error
		code string
		msg  string
	}{
		{api.Errorf(api.CodeConflict, "vm %q is running", "a"), api.CodeConflict, `vm "a" is running`},
		{fmt.Errorf("start vm %q: %w", "a", api.Errorf(api.CodeNotRunning, "not running")), api.CodeNotRunning, `start vm "a": not running`},
		{fmt.Errorf("create: %w", store.ErrExists), api.CodeAlreadyExists, "create: "},
		{fmt.Errorf("get: %w", store.ErrNotFound), api.CodeNotFound, "get: "},
		{errors.New("boom"), api.CodeOperationFailed, "boom"},
	} {
		ae := s.toAPIError(c.err, "0badc0de")
		if ae.Code != c.code || !strings.HasPrefix(ae.Message, c.msg) || ae.OpID != "0badc0de" {
			t.Errorf("%v: %+v", c.err, ae)
		}
	}
	for code, status := range map[string]int{
		api.CodeNotFound: 404, api.CodeUnknownMethod: 404, api.CodeBadVersion: 404,
		api.CodeAlreadyExists: 409, api.CodeConflict: 409, api.CodeNotRunning: 409,
		api.CodeBadRequest: 400, api.CodeOperationFailed: 500, "other": 500,
	} {
		if got := httpStatus(code); got != status {
			t.Errorf("httpStatus(%s) = %d, want %d", code, got, status)
		}
	}
}

// A long call streams its progress, then its result; a failure after the
// stream started arrives as an error event with the op id.
func TestStreamedCall(t *testing.T) {
	ts := startServer(t)
	var stages []string
	var v model.VM
	err := ts.c.Stream(context.Background(), "POST", "/vms", api.VMCreateParams{Name: "new"}, func(p api.Progress) {
		stages = append(stages, p.Stage)
	}, &v)
	if err != nil || v.Name != "new" || strings.Join(stages, ",") != "create_disk,boot" {
		t.Fatalf("create: %+v %v, stages %v", v, err, stages)
	}

	ts.vms.err["create"] = api.Errorf(api.CodeConflict, "name taken")
	stages = nil
	err = ts.c.Stream(context.Background(), "POST", "/vms", api.VMCreateParams{Name: "new"}, func(p api.Progress) {
		stages = append(stages, p.Stage)
	}, &v)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeConflict || ae.Message != "name taken" || !opIDPattern.MatchString(ae.OpID) || len(stages) != 2 {
		t.Fatalf("failed create: %v (%+v), stages %v", err, ae, stages)
	}
	if !strings.Contains(ts.log.String(), "op="+ae.OpID) {
		t.Errorf("op %s not logged:\n%s", ae.OpID, ts.log.String())
	}
	// Unknown fields are refused before the stream starts.
	status, bad := ts.raw(t, "POST", "/v1/vms", `{"nam":"x"}`)
	if status != 400 || bad.Code != api.CodeBadRequest {
		t.Errorf("bad create body: %d %+v", status, bad)
	}
}

// exec upgrades the connection and splices it to the agent stream both
// ways; a VM that cannot be opened fails before the upgrade.
func TestExecUpgrade(t *testing.T) {
	ts := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, r, err := ts.c.Upgrade(ctx, "/vms/box/exec", api.ExecParams{Argv: []string{"cat"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fw := agent.NewFrameWriter(conn)
	fw.Write(agent.FrameStdin, []byte("hello"))
	if typ, p, err := agent.ReadFrame(r); err != nil || typ != agent.FrameStdout || string(p) != "HELLO" {
		t.Fatalf("echo: %c %q %v", typ, p, err)
	}
	fw.Write(agent.FrameStdin, nil)
	typ, p, err := agent.ReadFrame(r)
	var es agent.ExitStatus
	if err != nil || typ != agent.FrameExit || json.Unmarshal(p, &es) != nil || es.Code != 3 {
		t.Fatalf("exit: %c %q %v", typ, p, err)
	}
	// The daemon closes the client's connection once the agent ends.
	if _, _, err := agent.ReadFrame(r); !errors.Is(err, io.EOF) {
		t.Errorf("after exit: %v, want EOF", err)
	}

	_, _, err = ts.c.Upgrade(ctx, "/vms/nope/exec", api.ExecParams{Argv: []string{"true"}})
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound || !opIDPattern.MatchString(ae.OpID) {
		t.Errorf("exec in a missing vm: %v", err)
	}
	ts.vms.err["exec"] = api.Errorf(api.CodeNotRunning, `vm "box" is not running`)
	_, _, err = ts.c.Upgrade(ctx, "/vms/box/exec", api.ExecParams{Argv: []string{"true"}})
	if !errors.As(err, &ae) || ae.Code != api.CodeNotRunning {
		t.Errorf("exec in a stopped vm: %v", err)
	}
}

// Session logs and attach are the same splice, for the named session.
func TestSessionStreamUpgrade(t *testing.T) {
	ts := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, r, err := ts.c.Upgrade(ctx, "/vms/box/sessions/agent/attach", agent.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	agent.NewFrameWriter(conn).Write(agent.FrameStdin, []byte("x"))
	if typ, p, err := agent.ReadFrame(r); err != nil || typ != agent.FrameStdout || string(p) != "X" {
		t.Fatalf("attach: %c %q %v", typ, p, err)
	}
	ts.vms.mu.Lock()
	opened := strings.Join(ts.vms.opened, ",")
	ts.vms.mu.Unlock()
	if opened != agent.OpSessionAttach+":agent" {
		t.Errorf("opened %q", opened)
	}
}

// A workspace upload is relayed to the agent; the prepare is recorded
// with all its options only when the guest extracted it, and a failure is
// an error frame with the op id.
func TestWorkspaceUpload(t *testing.T) {
	ts := startServer(t)
	upload := func() (agent.FrameType, []byte) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, r, err := ts.c.Upgrade(ctx, "/vms/box/workspace", api.WorkspaceParams{Path: "/src/repo", Mode: "copy", IncludeUntracked: true, Files: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fw := agent.NewFrameWriter(conn)
		fw.Write(agent.FrameStdin, []byte("tar bytes"))
		fw.Write(agent.FrameStdin, nil)
		typ, p, err := agent.ReadFrame(r)
		if err != nil {
			t.Fatal(err)
		}
		return typ, p
	}
	ts.vms.agent = untarAgent(0, "")
	if typ, p := upload(); typ != agent.FrameExit {
		t.Fatalf("upload: %c %s", typ, p)
	}
	ts.vms.mu.Lock()
	rec := ts.vms.recorded
	ts.vms.mu.Unlock()
	if len(rec) != 1 || rec[0].Path != "/src/repo" || !rec[0].IncludeUntracked || rec[0].Mode != "copy" {
		t.Fatalf("recorded %+v", rec)
	}

	ts.vms.agent = untarAgent(2, "tar: disk full")
	typ, p := upload()
	var ae api.Error
	if typ != agent.FrameError || json.Unmarshal(p, &ae) != nil || !strings.Contains(ae.Message, "extract workspace in the guest: tar: disk full") || !opIDPattern.MatchString(ae.OpID) {
		t.Fatalf("failed upload: %c %s", typ, p)
	}
	// An agent from before workspace streams would leave HEAD's blobs
	// out: refused, with the way out.
	ts.vms.agent = oldAgent()
	typ, p = upload()
	if typ != agent.FrameError || json.Unmarshal(p, &ae) != nil || !strings.Contains(ae.Message, "restart the VM") {
		t.Fatalf("upload to an old agent: %c %s", typ, p)
	}
	ts.vms.mu.Lock()
	n := len(ts.vms.recorded)
	ts.vms.mu.Unlock()
	if n != 1 {
		t.Errorf("a failed upload was recorded")
	}
}

// run deletes an auto-remove VM whatever fails after its creation, and
// reports the failure as an error frame.
func TestRunCleansUp(t *testing.T) {
	ts := startServer(t)
	ts.vms.err["exec"] = errors.New("guest agent unreachable")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, r, err := ts.c.Upgrade(ctx, "/run", api.RunParams{Create: api.VMCreateParams{Name: "tmp", AutoRemove: true}, Exec: api.ExecParams{Argv: []string{"true"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(r)
	var stages []string
	for {
		typ, p, err := agent.ReadFrame(br)
		if err != nil {
			t.Fatalf("run stream ended without an error frame: %v (stages %v)", err, stages)
		}
		if typ == agent.FrameProgress {
			var pg api.Progress
			json.Unmarshal(p, &pg)
			stages = append(stages, pg.Stage)
			continue
		}
		var ae api.Error
		if typ != agent.FrameError || json.Unmarshal(p, &ae) != nil || ae.Message != "guest agent unreachable" || !opIDPattern.MatchString(ae.OpID) {
			t.Fatalf("run: %c %s", typ, p)
		}
		break
	}
	if strings.Join(stages, ",") != "create_disk,boot,vm" {
		t.Errorf("stages %v", stages)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.vms.mu.Lock()
		deleted := strings.Join(ts.vms.deleted, ",")
		ts.vms.mu.Unlock()
		if deleted == "id-tmp" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("auto-remove vm not deleted: %q", deleted)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A bundle download that fails after its first byte reports the error in
// the trailer, so the client never takes a cut stream for a whole bundle.
func TestBundleTrailerError(t *testing.T) {
	ts := startServer(t)
	var buf bytes.Buffer
	if _, err := ts.c.Download(context.Background(), "/images/debian/bundle", &buf); err != nil || buf.String() != "partial bundle" {
		t.Fatalf("download: %q %v", buf.String(), err)
	}
	ts.images.exportErr = errors.New("read rootfs: input/output error")
	buf.Reset()
	_, err := ts.c.Download(context.Background(), "/images/debian/bundle", &buf)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Message != "read rootfs: input/output error" || !opIDPattern.MatchString(ae.OpID) {
		t.Fatalf("failed export: %v", err)
	}
}

func TestPingAndStop(t *testing.T) {
	ts := startServer(t)
	var p api.Ping
	if err := ts.c.Do(context.Background(), "GET", "/ping", nil, &p); err != nil || p.Version != "v-test" || p.Socket != ts.socket || p.PID != os.Getpid() {
		t.Fatalf("ping: %+v %v", p, err)
	}
	if err := ts.c.Do(context.Background(), "POST", "/daemon/stop", nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ts.stops:
	case <-time.After(5 * time.Second):
		t.Fatal("daemon stop did not call Stop")
	}
}

// streamFake is a ReadCloser that records being closed.
type streamFake struct {
	io.Reader
	closed chan struct{}
}

func (s *streamFake) Close() error { close(s.closed); return nil }

func (f *fakeVMs) Logs(ctx context.Context, ref string) (io.ReadCloser, error) {
	if _, err := f.vm(ref); err != nil {
		return nil, err
	}
	return f.stream("logs", "console line\n"), nil
}

func (f *fakeVMs) Export(ctx context.Context, ref, base string) (io.ReadCloser, error) {
	if err := f.fail("export"); err != nil {
		return nil, err
	}
	return f.stream("export", "diff --git a/x b/x\n"), nil
}

func (f *fakeVMs) stream(what, content string) io.ReadCloser {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened = append(f.opened, what)
	s := &streamFake{Reader: strings.NewReader(content), closed: make(chan struct{})}
	if f.streams == nil {
		f.streams = map[string]*streamFake{}
	}
	f.streams[what] = s
	return s
}

// vm logs and workspace export pass the manager's streams through and
// close them; a refused export is an API error, not a patch.
func TestLogsAndExportStream(t *testing.T) {
	ts := startServer(t)
	ctx := context.Background()
	var buf bytes.Buffer
	if err := ts.c.Do(ctx, "GET", "/vms/box/logs", nil, &buf); err != nil || buf.String() != "console line\n" {
		t.Fatalf("logs: %q %v", buf.String(), err)
	}
	buf.Reset()
	if err := ts.c.Do(ctx, "POST", "/vms/box/workspace/export", api.ExportParams{}, &buf); err != nil || buf.String() != "diff --git a/x b/x\n" {
		t.Fatalf("export: %q %v", buf.String(), err)
	}
	for _, what := range []string{"logs", "export"} {
		ts.vms.mu.Lock()
		s := ts.vms.streams[what]
		ts.vms.mu.Unlock()
		select {
		case <-s.closed:
		case <-time.After(5 * time.Second):
			t.Errorf("%s stream not closed", what)
		}
	}
	ts.vms.err["export"] = api.Errorf(api.CodeOperationFailed, `export from vm "box": refused the guest's patch: patch line 1: "../x": path leaves the repository`)
	buf.Reset()
	err := ts.c.Do(ctx, "POST", "/vms/box/workspace/export", api.ExportParams{}, &buf)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeOperationFailed || buf.Len() != 0 {
		t.Fatalf("refused export: %v, %q written", err, buf.String())
	}
}

// A create is checked, then its image resolved (pulled), then the VM made
// from that image; a refused create pulls nothing and a failed pull
// creates nothing.
func TestCreateResolvesTheImageFirst(t *testing.T) {
	ts := startServer(t)
	ctx := context.Background()
	if err := ts.c.Stream(ctx, "POST", "/vms", api.VMCreateParams{Name: "a", Image: "alpine"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ts.vms.calls, ","); got != "check,create alpine" || len(ts.images.resolved) != 1 || ts.images.resolved[0] != "alpine" {
		t.Fatalf("calls %q, resolved %q", got, ts.images.resolved)
	}

	ts.vms.calls, ts.images.resolved = nil, nil
	ts.vms.err["check"] = api.Errorf(api.CodeBadRequest, "invalid vm name")
	if err := ts.c.Stream(ctx, "POST", "/vms", api.VMCreateParams{Name: "Bad", Image: "alpine"}, nil, nil); err == nil {
		t.Fatal("refused create succeeded")
	}
	if len(ts.images.resolved) != 0 || strings.Join(ts.vms.calls, ",") != "check" {
		t.Fatalf("a refused create went on: calls %q, resolved %q", ts.vms.calls, ts.images.resolved)
	}

	delete(ts.vms.err, "check")
	ts.vms.calls = nil
	ts.images.resolveErr = api.Errorf(api.CodeNotFound, `image "nope" not found`)
	err := ts.c.Stream(ctx, "POST", "/vms", api.VMCreateParams{Name: "b", Image: "nope"}, nil, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
		t.Fatalf("create from a missing image: %v", err)
	}
	if got := strings.Join(ts.vms.calls, ","); got != "check" {
		t.Fatalf("a create whose image failed reached the manager: %q", got)
	}
}
