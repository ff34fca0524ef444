//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReadyAfterCreate: the moment `vm create` returns (default --wait
// agent, so the image's sshd may not listen yet), everything a user does
// next works without a sleep: `vm ssh` (which says it waits), stock
// `ssh NAME.vm` through the installed ssh config, `vm ports`, `vm session
// start` and `vm workspace prepare`, all at once. `vm show` reports the
// readiness the guest has reached, and a bad --wait is refused before
// anything is created.
func TestReadyAfterCreate(t *testing.T) {
	needNetns(t)
	ctx := ctxFor(t, 10*time.Minute)

	r := e.cli(ctx, "", "vm", "create", "--name", "readybad", "--wait", "sometime")
	if r.code == 0 || !strings.Contains(r.stderr, "sometime") {
		t.Errorf("--wait sometime accepted: %s", r)
	}
	if _, ok := vmNames(t, ctx)["readybad"]; ok {
		t.Error("a refused create left a VM behind")
	}

	// Plain ssh goes through the user's config with banger's included.
	home := t.TempDir()
	userCfg := filepath.Join(home, ".ssh", "config")
	os.MkdirAll(filepath.Dir(userCfg), 0o700)
	ev := *e
	ev.environ = append(append([]string{}, e.environ...), "HOME="+home)
	must(t, ev.cli(ctx, "", "ssh-config", "--install"))
	repo := makeRepo(t)

	vm := newVM(t, ctx, "readybox")
	// No sleep: every command starts as soon as create has returned.
	var wg sync.WaitGroup
	var viaVMSSH, viaSSH, ports, session, prepare result
	for _, f := range []func(){
		func() { viaVMSSH = e.cliNS(ctx, "", "vm", "ssh", vm, "--", "echo", "via-vm-ssh") },
		func() {
			viaSSH = e.inNS(ctx, "ssh", "-F", userCfg, "-o", "BatchMode=yes", vm+".vm", "echo", "via-openssh")
		},
		func() { ports = e.cli(ctx, "", "vm", "ports", vm, "--json") },
		func() {
			session = e.cli(ctx, "", "vm", "session", "start", vm, "--name", "early", "--", "sleep", "600")
		},
		func() { prepare = e.cli(ctx, "", "vm", "workspace", "prepare", vm, repo) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	wg.Wait()
	if viaVMSSH.code != 0 || viaVMSSH.stdout != "via-vm-ssh\n" {
		t.Errorf("vm ssh right after create: %s", viaVMSSH)
	}
	if viaSSH.code != 0 || viaSSH.stdout != "via-openssh\n" {
		t.Errorf("ssh %s.vm right after create: %s", vm, viaSSH)
	}
	t.Logf("vm ssh waited: %v; ssh NAME.vm waited: %v",
		strings.Contains(viaVMSSH.stderr, "waiting for sshd on "+vm), strings.Contains(viaSSH.stderr, "waiting for sshd on "+vm))
	for what, r := range map[string]result{"vm ports": ports, "vm session start": session, "vm workspace prepare": prepare} {
		if r.code != 0 {
			t.Errorf("%s right after create: %s", what, r)
		}
	}

	// Now sshd listens, so vm ssh has nothing to wait for and says nothing.
	r = must(t, e.cliNS(ctx, "", "vm", "ssh", vm, "--", "true"))
	if strings.Contains(r.stderr, "waiting") {
		t.Errorf("vm ssh waited for a listening sshd: %s", r)
	}
	type readiness struct {
		Agent, SSH, SSHD, System bool
		SystemState              string `json:"system_state"`
	}
	var shown struct{ Readiness *readiness }
	jsonUnmarshal(t, must(t, e.cli(ctx, "", "vm", "show", "--json", vm)).stdout, &shown)
	if rd := shown.Readiness; rd == nil || !rd.Agent || !rd.SSH || !rd.SSHD {
		t.Errorf("vm show readiness after ssh worked: %+v", rd)
	}
	// systemd finishes booting (running, or degraded with a unit failed).
	deadline := time.Now().Add(3 * time.Minute)
	for {
		jsonUnmarshal(t, must(t, e.cli(ctx, "", "vm", "show", "--json", vm)).stdout, &shown)
		if rd := shown.Readiness; rd != nil && rd.System {
			if rd.SystemState != "running" && rd.SystemState != "degraded" {
				t.Errorf("system ready in state %q", rd.SystemState)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd never finished booting: %+v", shown.Readiness)
		}
		time.Sleep(time.Second)
	}
	r = must(t, e.cli(ctx, "", "vm", "show", vm))
	if !strings.Contains(r.stdout, "agent, ssh, system") {
		t.Errorf("vm show does not list the readiness reached:\n%s", r.stdout)
	}
	// A stopped VM has reached nothing; vm ssh says it is not running.
	must(t, e.cli(ctx, "", "vm", "stop", vm))
	if r = e.cliNS(ctx, "", "vm", "ssh", vm, "--", "true"); r.code == 0 || !strings.Contains(r.stderr, "not running") {
		t.Errorf("vm ssh to a stopped VM: %s", r)
	}
}
