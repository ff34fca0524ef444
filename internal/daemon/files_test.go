package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/client"
	"banger/internal/guest"
)

// fileVMs adds the files API to the fake manager: "box" is served by a
// real agent server on the test host's files, "off" is stopped, and
// hostile, when set, replaces the agent with a fake guest.
type fileVMs struct {
	*fakeVMs
	agent *agent.Client
	max   int64
}

func (f *fileVMs) FileAgent(ctx context.Context, ref string) (*agent.Client, error) {
	switch ref {
	case "box":
		return f.agent, nil
	case "off":
		return nil, api.Errorf(api.CodeNotRunning, "vm \"off\" is not running (state stopped): start it with `banger vm start off`")
	}
	_, err := f.vm(ref)
	return nil, err
}

func (f *fileVMs) FileMax() int64 { return f.max }

// startFileServer serves the API with a real guest agent (on the test
// host's files) behind VM "box", capped at max bytes.
func startFileServer(t *testing.T, max int64, c *agent.Client) *client.Client {
	t.Helper()
	if c == nil {
		hostEnd, guestEnd := net.Pipe()
		srv := &guest.Server{Log: log.New(io.Discard, "", 0)}
		ctx, cancel := context.WithCancel(context.Background())
		go srv.ServeConn(ctx, guestEnd)
		var err error
		if c, err = agent.NewClient(hostEnd); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); cancel() })
	}
	dir, err := os.MkdirTemp("", "bd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "d.sock")
	srv := &Server{VMs: &fileVMs{fakeVMs: newFakeVMs(), agent: c, max: max}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return client.New(socket)
}

func apiCode(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

func TestFilesAPI(t *testing.T) {
	c := startFileServer(t, 1<<20, nil)
	ctx := context.Background()
	dir := t.TempDir()
	f := filepath.Join(dir, "d", "f")

	fi, err := c.FileWrite(ctx, "box", f, strings.NewReader("hello"), "0600", true)
	if err != nil || fi.Size != 5 || fi.Mode != "0600" || fi.Path != f {
		t.Fatalf("write: %+v %v", fi, err)
	}
	fr, err := c.FileRead(ctx, "box", f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(fr)
	fr.Close()
	if err != nil || string(b) != "hello" || fr.Mode != "0600" || fr.Size != 5 {
		t.Fatalf("read %q mode %s size %d: %v", b, fr.Mode, fr.Size, err)
	}
	if fi, err := c.FileStat(ctx, "box", f); err != nil || fi.Type != api.FileTypeFile {
		t.Fatalf("stat: %+v %v", fi, err)
	}
	if fi, err := c.FileMkdir(ctx, "box", api.MkdirParams{Path: dir + "/m", Mode: "0711"}); err != nil || fi.Mode != "0711" {
		t.Fatalf("mkdir: %+v %v", fi, err)
	}
	l, err := c.FileList(ctx, "box", dir)
	if err != nil || len(l.Entries) != 2 || l.Entries[0].Name != "d" || l.Entries[1].Name != "m" {
		t.Fatalf("list: %+v %v", l, err)
	}
	if err := c.FileRemove(ctx, "box", dir+"/d", false); apiCode(err) != api.CodeConflict {
		t.Fatalf("remove non-empty: %v", err)
	}
	if err := c.FileRemove(ctx, "box", dir+"/d", true); err != nil {
		t.Fatal(err)
	}

	// Archive out and back in.
	os.WriteFile(filepath.Join(dir, "m", "x"), []byte("xx"), 0o644)
	rc, err := c.ArchiveRead(ctx, "box", dir+"/m")
	if err != nil {
		t.Fatal(err)
	}
	var tarBuf bytes.Buffer
	if _, err := io.Copy(&tarBuf, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	dst := t.TempDir()
	res, err := c.ArchiveWrite(ctx, "box", dst, bytes.NewReader(tarBuf.Bytes()))
	if err != nil || res.Files != 2 || res.Bytes != 2 {
		t.Fatalf("archive in: %+v %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "m", "x")); string(b) != "xx" {
		t.Fatalf("extracted %q", b)
	}

	// Errors: bad paths, a directory read, a missing path, a stopped VM,
	// an unknown VM.
	for _, p := range []string{"", "rel/x", "/a\x00b"} {
		if _, err := c.FileStat(ctx, "box", p); apiCode(err) != api.CodeBadRequest {
			t.Errorf("stat %q: %v", p, err)
		}
	}
	if _, err := c.FileRead(ctx, "box", dir); apiCode(err) != api.CodeBadRequest {
		t.Errorf("read a dir: %v", err)
	}
	if _, err := c.FileStat(ctx, "box", dir+"/nope"); apiCode(err) != api.CodeNotFound {
		t.Errorf("stat missing: %v", err)
	}
	_, err = c.FileStat(ctx, "off", "/")
	if apiCode(err) != api.CodeNotRunning || !strings.Contains(err.Error(), "vm start") {
		t.Errorf("stopped VM: %v", err)
	}
	if _, err := c.FileStat(ctx, "ghost", "/"); apiCode(err) != api.CodeNotFound {
		t.Errorf("unknown VM: %v", err)
	}
	if _, err := c.FileWrite(ctx, "box", dir+"/x", strings.NewReader("x"), "0999", false); apiCode(err) != api.CodeBadRequest {
		t.Errorf("bad mode: %v", err)
	}
}

func TestFilesSizeCaps(t *testing.T) {
	c := startFileServer(t, 1<<20, nil)
	ctx := context.Background()
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte("b"), 2<<20), 0o644)

	// Reading a file over the cap.
	_, err := c.FileRead(ctx, "box", big)
	if apiCode(err) != api.CodeBadRequest || !strings.Contains(err.Error(), "file_max_mib") {
		t.Errorf("read over the cap: %v", err)
	}
	// An archive over the cap fails in the trailer.
	rc, err := c.ArchiveRead(ctx, "box", dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if err == nil || !strings.Contains(err.Error(), "file_max_mib") {
		t.Errorf("archive over the cap: %v", err)
	}
	// A body over the cap, announced or streamed; nothing is left.
	_, err = c.FileWrite(ctx, "box", dir+"/w", bytes.NewReader(make([]byte, 2<<20)), "", false)
	if apiCode(err) != api.CodeBadRequest || !strings.Contains(err.Error(), "file_max_mib") {
		t.Errorf("announced body over the cap: %v", err)
	}
	_, err = c.FileWrite(ctx, "box", dir+"/w", io.MultiReader(bytes.NewReader(make([]byte, 2<<20))), "", false)
	if err == nil {
		t.Error("streamed body over the cap accepted")
	}
	time.Sleep(100 * time.Millisecond) // the guest removes its temporary file
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
	_, err = c.ArchiveWrite(ctx, "box", dir, io.MultiReader(bytes.NewReader(make([]byte, 2<<20))))
	if err == nil {
		t.Error("streamed archive over the cap accepted")
	}
}

// TestFilesHostileGuest: what a hostile guest sends is bounded on the way
// to the client.
func TestFilesHostileGuest(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	go hostileGuest(guestEnd)
	ac, err := agent.NewClient(hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	c := startFileServer(t, 1<<20, ac)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A file that never ends, its size unknown: cut at the cap, the
	// failure in the trailer.
	fr, err := c.FileRead(ctx, "box", "/endless")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, fr)
	fr.Close()
	if err == nil || n > 1<<20 {
		t.Errorf("endless file: %d bytes, %v", n, err)
	}
	// More bytes than announced: the connection is cut short of a whole
	// answer.
	if fr, err = c.FileRead(ctx, "box", "/liar"); err == nil {
		b, err := io.ReadAll(fr)
		fr.Close()
		if err == nil || len(b) > 10 {
			t.Errorf("lying size: %d bytes, %v", len(b), err)
		}
	}
	// A listing of endless garbage.
	if _, err := c.FileList(ctx, "box", "/garbage"); err == nil {
		t.Error("garbage listing accepted")
	}
}

// hostileGuest answers every file operation with lies.
func hostileGuest(conn net.Conn) {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	sess, err := yamux.Server(conn, cfg)
	if err != nil {
		return
	}
	for {
		st, err := sess.Accept()
		if err != nil {
			return
		}
		go func() {
			defer st.Close()
			line, err := agent.ReadLine(st, agent.MaxResponseLine)
			if err != nil {
				return
			}
			var req agent.Request
			json.Unmarshal(line, &req)
			p := req.File.Path
			fi := &api.FileInfo{Name: filepath.Base(p), Path: p, Type: "file", Mode: "0644"}
			if p == "/liar" {
				fi.Size = 10
			}
			if p == "/garbage" {
				fi.Type = "dir"
			}
			b, _ := json.Marshal(agent.Response{OK: true, File: fi})
			st.Write(append(b, '\n'))
			fw := agent.NewFrameWriter(st)
			switch p {
			case "/endless", "/liar":
				chunk := bytes.Repeat([]byte("e"), 64<<10)
				for fw.Write(agent.FrameStdout, chunk) == nil {
				}
			case "/garbage":
				for {
					if _, err := st.Write([]byte("{\"file\":\x1b[2J}\n")); err != nil {
						return
					}
				}
			}
		}()
	}
}

func TestFilesWatchRoute(t *testing.T) {
	c := startFileServer(t, 1<<20, nil)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var seen []api.FileEvent
	errStop := errors.New("stop")
	err := c.FileWatch(ctx, "box", dir, false, func(ev api.FileEvent) error {
		seen = append(seen, ev)
		switch {
		case ev.Op == api.FileOpReady:
			os.WriteFile(filepath.Join(dir, "n"), nil, 0o644)
		case ev.Op == api.FileOpCreate:
			os.Remove(filepath.Join(dir, "n"))
		case ev.Op == api.FileOpRemove:
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("watch ended with %v after %+v", err, seen)
	}
	if seen[0].Op != api.FileOpReady || seen[0].Path != dir {
		t.Errorf("first event %+v", seen[0])
	}
}
