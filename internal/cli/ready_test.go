package cli

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"banger/internal/api"
)

func TestVMShowReadiness(t *testing.T) {
	t.Parallel()
	d := startFakeDaemon(t, fixtures())
	code, out, errOut := runIn(t, d.layout, "vm", "show", "alpha")
	if code != 0 || !strings.Contains(out, "agent (system: starting)") {
		t.Errorf("vm show: code %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runIn(t, d.layout, "vm", "show", "--json", "alpha")
	if code != 0 || !strings.Contains(out, `"system_state": "starting"`) || !strings.Contains(out, `"name": "alpha"`) {
		t.Errorf("vm show --json: %s", out)
	}
}

func TestReadinessText(t *testing.T) {
	for _, c := range []struct {
		r    api.Readiness
		want string
	}{
		{api.Readiness{}, "nothing yet"},
		{api.Readiness{Agent: true, SSH: true, SSHD: true, System: true, SystemState: "running"}, "agent, ssh, system"},
		{api.Readiness{Agent: true, SSHD: true, System: true, SystemState: "degraded"}, "agent, system (system: degraded)"},
		{api.Readiness{Agent: true, System: true, SystemState: "agent"}, "agent, system (no sshd in the image)"},
	} {
		if got := readinessText(c.r); got != c.want {
			t.Errorf("readinessText(%+v) = %q, want %q", c.r, got, c.want)
		}
	}
}

func TestCreateRefusesBadWait(t *testing.T) {
	t.Parallel()
	d := startFakeDaemon(t, fixtures())
	for _, cmd := range [][]string{{"vm", "create", "--wait", "later"}, {"vm", "run", "--wait", "later", "--", "true"}} {
		code, _, errOut := runIn(t, d.layout, cmd...)
		if code == 0 || !strings.Contains(errOut, `unknown readiness "later"`) {
			t.Errorf("%v: code %d: %s", cmd, code, errOut)
		}
	}
	if d.called("POST /vms") || d.called("POST /run") {
		t.Error("a bad --wait reached the daemon")
	}
}

// vm ssh says it waits only when sshd does not listen yet, and a wait
// that fails is an error with the daemon's reason.
func TestVMSSHWaits(t *testing.T) {
	t.Parallel()
	routes := fixtures()
	routes["GET /vms/slow"] = `{"id":"7","name":"slow","state":"running","network":"bridge","ip":"192.0.2.7"}`
	routes["GET /vms/7/readiness"] = `{"agent":true,"ssh":false,"sshd":true}`
	routes["POST /vms/7/wait"] = `!vm "slow": sshd did not listen on the guest's port 22 within 2s`
	d := startFakeDaemon(t, routes)
	code, out, errOut := runIn(t, d.layout, "vm", "ssh", "slow", "--wait-timeout", "2s", "--", "true")
	if code == 0 || !strings.Contains(errOut, "waiting for sshd on slow…\n") || !strings.Contains(errOut, "did not listen") {
		t.Errorf("vm ssh to a booting guest: code %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runIn(t, d.layout, "vm", "ssh", "slow", "--wait-timeout", "0s"); code == 0 || !strings.Contains(errOut, "--wait-timeout") {
		t.Errorf("--wait-timeout 0: %s", errOut)
	}
}

// vm ssh --proxy relays stdio to the guest's sshd once it listens,
// without a word on stderr.
func TestVMSSHProxy(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("SSH-2.0-fake\r\n"))
		c.Close()
	}()
	routes := fixtures()
	routes["GET /vms/up"] = fmt.Sprintf(`{"id":"8","name":"up","state":"running","network":"user","ssh_port":%d}`, l.Addr().(*net.TCPAddr).Port)
	routes["GET /vms/8/readiness"] = `{"agent":true,"ssh":true,"sshd":true}`
	d := startFakeDaemon(t, routes)
	code, out, errOut := runIn(t, d.layout, "vm", "ssh", "--proxy", "up")
	if code != 0 || out != "SSH-2.0-fake\r\n" || errOut != "" {
		t.Errorf("vm ssh --proxy: code %d, out %q, err %q", code, out, errOut)
	}
	if d.called("POST /vms/8/wait") {
		t.Error("waited for an sshd that listens")
	}
	if code, _, errOut := runIn(t, d.layout, "vm", "ssh", "--proxy", "up", "--", "ls"); code == 0 || !strings.Contains(errOut, "--proxy takes no command") {
		t.Errorf("--proxy with a command: %s", errOut)
	}
}
