package banger_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/pkg/banger"
)

// fakeDaemon speaks the upgrade handshake and frames the way bangerd
// does, so the SDK's side of the protocol (and the validator's frame
// checks) are tested without a VM.
func fakeDaemon(t *testing.T, handle func(path string, body []byte, fw *agent.FrameWriter, in *bufio.Reader, raw io.Writer)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Upgrade") != api.Upgrade || r.Header.Get("Connection") != "Upgrade" {
			w.WriteHeader(400)
			return
		}
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.Upgrade)
		rw.Flush()
		handle(r.URL.Path, body, agent.NewFrameWriter(conn), rw.Reader, conn)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// readStdin collects stdin frames until the empty one.
func readStdin(in io.Reader) ([]byte, error) {
	var b bytes.Buffer
	for {
		ft, p, err := agent.ReadFrame(in)
		if err != nil {
			return b.Bytes(), err
		}
		if ft != agent.FrameStdin {
			continue
		}
		if len(p) == 0 {
			return b.Bytes(), nil
		}
		b.Write(p)
	}
}

func TestExecFrames(t *testing.T) {
	doc := loadDoc(t)
	addr := fakeDaemon(t, func(path string, body []byte, fw *agent.FrameWriter, in *bufio.Reader, raw io.Writer) {
		var p api.ExecParams
		json.Unmarshal(body, &p)
		if path != "/v1/vms/box/exec" || strings.Join(p.Argv, " ") != "tr a-z A-Z" || p.Cwd != "/w" {
			fw.WriteJSON(agent.FrameError, api.Error{Code: "bad_request", Message: "unexpected call " + path})
			return
		}
		data, err := readStdin(in)
		if err != nil {
			return
		}
		fw.Write(agent.FrameStdout, bytes.ToUpper(data))
		fw.Write(agent.FrameStderr, []byte("warn\n"))
		fw.Write('z', []byte("a frame type from the future")) // ignored
		fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 3})
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Stdin larger than a frame, split and reassembled.
	big := strings.Repeat("abc", 1<<19)
	var so, se bytes.Buffer
	vc := &collector{}
	cv, _ := banger.New(banger.WithAddress("tcp://"+addr), banger.WithToken("t"), banger.WithTransport(func(rt http.RoundTripper) http.RoundTripper {
		return doc.Transport(rt, vc.report)
	}))
	st, err := cv.Exec(ctx, "box", banger.Cmd{Argv: []string{"tr", "a-z", "A-Z"}, Cwd: "/w", Stdin: strings.NewReader(big), Stdout: &so, Stderr: &se})
	if err != nil || st.Code != 3 || so.String() != strings.ToUpper(big) || se.String() != "warn\n" {
		t.Fatalf("exec: %+v %v, %d bytes of stdout, stderr %q", st, err, so.Len(), se.String())
	}
	errs := vc.take()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `frame type 'z'`) {
		t.Errorf("validator: %v, want exactly the unknown frame type", errs)
	}
	// No stdin: the empty frame is sent at once.
	so.Reset()
	if st, err := cv.Exec(ctx, "box", banger.Cmd{Argv: []string{"tr", "a-z", "A-Z"}, Cwd: "/w", Stdout: &so}); err != nil || st.Code != 3 || so.Len() != 0 {
		t.Errorf("exec without stdin: %+v %v %q", st, err, so.String())
	}
	vc.take()
}

func TestExecFrameErrors(t *testing.T) {
	doc := loadDoc(t)
	addr := fakeDaemon(t, func(path string, body []byte, fw *agent.FrameWriter, in *bufio.Reader, raw io.Writer) {
		switch path {
		case "/v1/vms/fails/exec":
			fw.WriteJSON(agent.FrameError, api.Error{Code: api.CodeNotRunning, Message: "vm stopped meanwhile", OpID: "ab12"})
		case "/v1/vms/cut/exec":
			fw.Write(agent.FrameStdout, []byte("partial"))
		case "/v1/vms/badexit/exec":
			fw.Write(agent.FrameExit, []byte(`{"code":"zero","surprise":1}`))
		case "/v1/vms/huge/exec":
			// A header announcing 4 GiB: refused, never allocated.
			raw.Write([]byte{'o', 0xff, 0xff, 0xff, 0xff})
			io.Copy(io.Discard, in)
		case "/v1/vms/hang/exec":
			io.Copy(io.Discard, in) // until the client goes away
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	col := &collector{}
	c, _ := banger.New(banger.WithAddress("tcp://"+addr), banger.WithToken("t"), banger.WithTransport(func(rt http.RoundTripper) http.RoundTripper {
		return doc.Transport(rt, col.report)
	}))
	cmd := banger.Cmd{Argv: []string{"x"}}
	_, err := c.Exec(ctx, "fails", cmd)
	var ae *banger.Error
	if !errors.As(err, &ae) || ae.Code != banger.CodeNotRunning || ae.OpID != "ab12" {
		t.Errorf("error frame: %v", err)
	}
	if _, err := c.Exec(ctx, "cut", cmd); err == nil || !strings.Contains(err.Error(), "ended before the command finished") {
		t.Errorf("cut stream: %v", err)
	}
	if errs := col.take(); len(errs) != 0 {
		t.Errorf("validator on good frames: %v", errs)
	}
	if _, err := c.Exec(ctx, "badexit", cmd); err == nil {
		t.Errorf("a malformed exit frame was accepted")
	}
	if errs := col.take(); len(errs) != 1 || !strings.Contains(errs[0].Error(), "x frame") {
		t.Errorf("validator on a malformed exit frame: %v", errs)
	}
	if _, err := c.Exec(ctx, "huge", cmd); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("oversized frame: %v", err)
	}
	if errs := col.take(); len(errs) != 1 {
		t.Errorf("validator on an oversized frame: %v", errs)
	}
	hctx, hcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer hcancel()
	if _, err := c.Exec(hctx, "hang", cmd); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled exec: %v", err)
	}
}

// TestRunFrames: progress before the command, stdin only after the
// "exec" stage, the VM's name, and a deletion failure after the exit.
func TestRunFrames(t *testing.T) {
	doc := loadDoc(t)
	addr := fakeDaemon(t, func(path string, body []byte, fw *agent.FrameWriter, in *bufio.Reader, raw io.Writer) {
		var p api.RunParams
		json.Unmarshal(body, &p)
		fw.WriteJSON(agent.FrameProgress, api.Progress{Stage: "boot", DurationMS: 5})
		fw.WriteJSON(agent.FrameProgress, api.Progress{Stage: "vm", Detail: "fresh-vm"})
		// Nothing may arrive before the exec stage.
		got := make(chan []byte, 1)
		early := make(chan struct{})
		go func() {
			ft, p, err := agent.ReadFrame(in)
			if err != nil {
				close(early)
				return
			}
			close(early)
			var b bytes.Buffer
			for err == nil && !(ft == agent.FrameStdin && len(p) == 0) {
				b.Write(p)
				ft, p, err = agent.ReadFrame(in)
			}
			got <- b.Bytes()
		}()
		select {
		case <-early:
			fw.WriteJSON(agent.FrameError, api.Error{Code: "bad_request", Message: "stdin before exec"})
			return
		case <-time.After(200 * time.Millisecond):
		}
		fw.WriteJSON(agent.FrameProgress, api.Progress{Stage: "exec"})
		fw.Write(agent.FrameStdout, <-got)
		fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 0})
		if p.Create.AutoRemove {
			fw.WriteJSON(agent.FrameError, api.Error{Code: api.CodeOperationFailed, Message: "delete failed"})
		}
	})
	var stages []string
	c := validated(t, doc, banger.WithAddress("tcp://"+addr), banger.WithToken("t"), banger.WithProgress(func(p banger.Progress) { stages = append(stages, p.Stage) }))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var so bytes.Buffer
	name, st, err := c.Run(ctx, banger.CreateParams{}, banger.Cmd{Argv: []string{"cat"}, Stdin: strings.NewReader("in"), Stdout: &so})
	if err != nil || name != "fresh-vm" || st.Code != 0 || so.String() != "in" {
		t.Fatalf("run: %q %+v %v %q", name, st, err, so.String())
	}
	if strings.Join(stages, ",") != "boot,vm,exec" {
		t.Errorf("progress stages %v", stages)
	}
	name, st, err = c.Run(ctx, banger.CreateParams{AutoRemove: true}, banger.Cmd{Argv: []string{"cat"}})
	if st == nil || st.Code != 0 || banger.ErrorCode(err) != banger.CodeOperationFailed {
		t.Errorf("run whose VM could not be deleted: %q %+v %v", name, st, err)
	}
}
