package cli

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/model"
	"banger/internal/workspace"
)

// workspaceDaemon serves GET /vms/box (a VM with a recorded workspace) and
// the workspace upload, recording the parameters and the files sent.
type workspaceDaemon struct {
	mu     sync.Mutex
	params []api.WorkspaceParams
	files  [][]string
}

func startWorkspaceDaemon(t *testing.T, vm model.VM) (*workspaceDaemon, *App) {
	t.Helper()
	layout := testLayout(t)
	if err := os.MkdirAll(layout.Runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", layout.Socket())
	if err != nil {
		t.Fatal(err)
	}
	d := &workspaceDaemon{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.Ping{Version: "test", Socket: layout.Socket()})
	})
	mux.HandleFunc("GET /v1/vms/box", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(vm)
	})
	mux.HandleFunc("POST /v1/vms/box/workspace", func(w http.ResponseWriter, r *http.Request) {
		var p api.WorkspaceParams
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.Upgrade)
		rw.Flush()
		files, err := readTarFrames(rw.Reader)
		fw := agent.NewFrameWriter(conn)
		if err != nil {
			fw.WriteJSON(agent.FrameError, api.Errorf(api.CodeOperationFailed, "%v", err))
			return
		}
		d.mu.Lock()
		d.params = append(d.params, p)
		d.files = append(d.files, files)
		d.mu.Unlock()
		fw.WriteJSON(agent.FrameExit, agent.ExitStatus{})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	var so, se bytes.Buffer
	app := &App{Version: "test", Stdin: strings.NewReader(""), Stdout: &so, Stderr: &se,
		Getenv: func(string) string { return "" }, layout: layout}
	return d, app
}

// readTarFrames reads stdin frames up to the empty one and lists the
// regular files of the tar stream they carry (without .git).
func readTarFrames(r *bufio.Reader) ([]string, error) {
	var buf bytes.Buffer
	for {
		t, p, err := agent.ReadFrame(r)
		if err != nil {
			return nil, err
		}
		if t != agent.FrameStdin {
			continue
		}
		if len(p) == 0 {
			break
		}
		buf.Write(p)
	}
	var files []string
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg && !strings.HasPrefix(h.Name, ".git/") && !strings.Contains(h.Name, "/.git/") {
			files = append(files, strings.TrimPrefix(h.Name, "./"))
		}
	}
}

// gitRepo makes a repository with a tracked and an untracked file.
func gitRepo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git is needed to build the test repository")
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", `git init -q -b main && echo t > tracked.txt && git add . && git commit -qm one && echo u > untracked.txt`)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return dir
}

// --auto-prepare repeats the recorded prepare with all of its options: a
// workspace prepared with --include-untracked keeps its untracked files,
// one prepared without does not gain them.
func TestAutoPrepareReusesOptions(t *testing.T) {
	repo := gitRepo(t)
	for _, untracked := range []bool{true, false} {
		d, app := startWorkspaceDaemon(t, model.VM{ID: "1", Name: "box", State: model.StateRunning,
			WorkspacePath: repo, WorkspaceMode: "copy", WorkspaceIncludeUntracked: untracked})
		if err := app.setup(); err != nil {
			t.Fatal(err)
		}
		if err := app.autoPrepare(t.Context(), "box"); err != nil {
			t.Fatalf("untracked=%v: %v", untracked, err)
		}
		if len(d.params) != 1 {
			t.Fatalf("untracked=%v: %d uploads", untracked, len(d.params))
		}
		p, files := d.params[0], d.files[0]
		if p.Mode != "copy" || p.IncludeUntracked != untracked || p.Path != repo {
			t.Errorf("untracked=%v: params %+v", untracked, p)
		}
		if got := slices.Contains(files, "untracked.txt"); got != untracked || !slices.Contains(files, "tracked.txt") {
			t.Errorf("untracked=%v: files sent %v", untracked, files)
		}
	}
}

// The prepare's options travel to the daemon, which records them.
func TestPlanParamsCarryOptions(t *testing.T) {
	repo := gitRepo(t)
	_, app := startWorkspaceDaemon(t, model.VM{})
	plan, err := app.inspect(t.Context(), filepath.Join(repo, "."), workspace.Options{IncludeUntracked: true})
	if err != nil {
		t.Fatal(err)
	}
	if p := plan.Params(); !p.IncludeUntracked || p.Files != 2 {
		t.Errorf("params %+v", p)
	}
}
