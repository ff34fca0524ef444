package guest

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent"
)

func TestParseCmdline(t *testing.T) {
	p := ParseCmdline("console=ttyS0 quiet banger.name=box banger.work=/dev/vdb banger.ip=10.0.0.2/24 banger.gw=10.0.0.1 banger.init=/bin/sh junk")
	if p.Hostname != "box" || p.Work != "/dev/vdb" || p.Root != "/dev/vda" || p.IP != "10.0.0.2/24" || p.Gateway != "10.0.0.1" || p.Init != "/bin/sh" {
		t.Errorf("parsed %+v", p)
	}
	if p := ParseCmdline("banger.root=/dev/vdc"); p.Root != "/dev/vdc" || p.Work != "" {
		t.Errorf("parsed %+v", p)
	}
}

// startServer runs the agent server on one end of an in-memory pipe and
// returns a host client session on the other: the real protocol, with
// commands run on the test host instead of a guest.
func startServer(t *testing.T) *yamux.Session {
	t.Helper()
	hostEnd, guestEnd := net.Pipe()
	srv := &Server{Log: log.New(io.Discard, "", 0)}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.ServeConn(ctx, guestEnd)
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.EnableKeepAlive = false
	sess, err := yamux.Client(hostEnd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close(); cancel() })
	return sess
}

type execResult struct {
	stdout, stderr string
	status         agent.ExitStatus
}

func runExecTest(t *testing.T, sess *yamux.Session, req agent.ExecRequest, stdin string) execResult {
	t.Helper()
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b, _ := json.Marshal(agent.Request{Op: agent.OpExec, Exec: &req})
	st.Write(append(b, '\n'))
	fw := agent.NewFrameWriter(st)
	if stdin != "" {
		fw.Write(agent.FrameStdin, []byte(stdin))
	}
	fw.Write(agent.FrameStdin, nil)
	var res execResult
	st.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		typ, p, err := agent.ReadFrame(st)
		if err != nil {
			t.Fatalf("read frame: %v (got so far %+v)", err, res)
		}
		switch typ {
		case agent.FrameStdout:
			res.stdout += string(p)
		case agent.FrameStderr:
			res.stderr += string(p)
		case agent.FrameExit:
			json.Unmarshal(p, &res.status)
			return res
		}
	}
}

func TestExecExitCodeAndStreams(t *testing.T) {
	sess := startServer(t)
	r := runExecTest(t, sess, agent.ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 42"}, Cwd: "/"}, "")
	if r.status.Code != 42 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Errorf("got %+v", r)
	}
}

func TestExecArgumentsIntact(t *testing.T) {
	sess := startServer(t)
	args := []string{"a b", "it's", `"q"`, "", "$HOME", "*"}
	r := runExecTest(t, sess, agent.ExecRequest{Argv: append([]string{"printf", "[%s]"}, args...), Cwd: "/"}, "")
	want := "[a b][it's][\"q\"][][$HOME][*]"
	if r.stdout != want || r.status.Code != 0 {
		t.Errorf("got %q (%+v), want %q", r.stdout, r.status, want)
	}
}

func TestExecStdinAndEnv(t *testing.T) {
	sess := startServer(t)
	r := runExecTest(t, sess, agent.ExecRequest{Argv: []string{"sh", "-c", "cat; echo \"x$FOO\"; echo done"}, Env: []string{"FOO=bar"}, Cwd: "/"}, "piped\n")
	if r.stdout != "piped\nxbar\ndone\n" {
		t.Errorf("got %q", r.stdout)
	}
}

func TestExecMissingCommand(t *testing.T) {
	sess := startServer(t)
	r := runExecTest(t, sess, agent.ExecRequest{Argv: []string{"definitely-not-a-command-xyz"}, Cwd: "/"}, "")
	if r.status.Code != 127 || !strings.Contains(r.status.Error, "definitely-not-a-command-xyz") {
		t.Errorf("got %+v", r.status)
	}
}

func TestExecSignalKillsOnDisconnect(t *testing.T) {
	sess := startServer(t)
	st, _ := sess.OpenStream()
	b, _ := json.Marshal(agent.Request{Op: agent.OpExec, Exec: &agent.ExecRequest{Argv: []string{"sleep", "30"}, Cwd: "/"}})
	st.Write(append(b, '\n'))
	fw := agent.NewFrameWriter(st)
	time.Sleep(200 * time.Millisecond)
	fw.Write(agent.FrameSignal, []byte{15}) // SIGTERM
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		typ, p, err := agent.ReadFrame(st)
		if err != nil {
			t.Fatalf("no exit after signal: %v", err)
		}
		if typ == agent.FrameExit {
			var es agent.ExitStatus
			json.Unmarshal(p, &es)
			if es.Signal == "" || es.Code != 128+15 {
				t.Errorf("want death by SIGTERM, got %+v", es)
			}
			return
		}
	}
}

func TestExecTTY(t *testing.T) {
	sess := startServer(t)
	r := runExecTest(t, sess, agent.ExecRequest{Argv: []string{"sh", "-c", "test -t 0 && echo tty; stty size"}, TTY: true, Rows: 30, Cols: 100, Cwd: "/"}, "")
	if !strings.Contains(r.stdout, "tty") || !strings.Contains(r.stdout, "30 100") {
		t.Errorf("got %q", r.stdout)
	}
}

func TestPingAndUnknownOp(t *testing.T) {
	sess := startServer(t)
	call := func(op string) agent.Response {
		st, _ := sess.OpenStream()
		defer st.Close()
		b, _ := json.Marshal(agent.Request{Op: op})
		st.Write(append(b, '\n'))
		var resp agent.Response
		json.NewDecoder(st).Decode(&resp)
		return resp
	}
	if r := call(agent.OpPing); !r.OK || r.Version == "" {
		t.Errorf("ping: %+v", r)
	}
	if r := call("warp"); r.OK || !strings.Contains(r.Error, "unknown operation") {
		t.Errorf("unknown op: %+v", r)
	}
}

func TestParseNet(t *testing.T) {
	c, err := ParseNet(BootParams{IP: "172.16.0.2/24", Gateway: "172.16.0.1", DNS: "172.16.0.1,1.1.1.1"})
	if err != nil || c.Addr.IPNet.String() != "172.16.0.2/24" || !c.Gateway.Equal([]byte{172, 16, 0, 1}) || len(c.DNS) != 2 {
		t.Errorf("got %+v, %v", c, err)
	}
	if c, err := ParseNet(BootParams{}); err != nil || c.Addr != nil {
		t.Errorf("no ip: %+v %v", c, err)
	}
	for _, bad := range []BootParams{{IP: "nope"}, {IP: "10.0.0.2/24", Gateway: "x"}, {IP: "10.0.0.2/24", DNS: "1.2.3"}} {
		if _, err := ParseNet(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestModuleParams(t *testing.T) {
	cl := "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio-mmio.device=4K@0xd0001000:6 ext4.x=1 banger.name=a"
	if got := moduleParams(cl, "virtio_mmio"); got != "device=4K@0xd0000000:5 device=4K@0xd0001000:6" {
		t.Errorf("got %q", got)
	}
	if got := moduleParams(cl, "virtio_blk"); got != "" {
		t.Errorf("got %q", got)
	}
}

func TestHasVirtioDevice(t *testing.T) {
	dir := t.TempDir()
	for name, id := range map[string]string{"virtio0": "0x0002", "virtio1": "0x0003"} {
		os.MkdirAll(filepath.Join(dir, name), 0o755)
		os.WriteFile(filepath.Join(dir, name, "device"), []byte(id+"\n"), 0o644)
	}
	if hasVirtioDevice(dir, 19) {
		t.Errorf("no vsock device, but found one")
	}
	os.MkdirAll(filepath.Join(dir, "virtio2"), 0o755)
	os.WriteFile(filepath.Join(dir, "virtio2", "device"), []byte("0x0013\n"), 0o644)
	if !hasVirtioDevice(dir, 19) {
		t.Errorf("vsock device not found")
	}
}
