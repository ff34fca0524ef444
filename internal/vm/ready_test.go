package vm

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
)

// A guest whose sshd listens from the third question on, and whose
// systemd is still starting.
func slowSSH() (func(context.Context) agent.Readiness, *atomic.Int32) {
	var asked atomic.Int32
	return func(context.Context) agent.Readiness {
		n := asked.Add(1)
		return agent.Readiness{SSH: n >= 3, SSHD: true, SystemState: "starting"}
	}, &asked
}

func TestCreateWaitsForSSH(t *testing.T) {
	f := newFixture(t)
	ready, asked := slowSSH()
	f.driver.readiness = ready
	ctx := context.Background()

	// The default (agent) does not ask the guest anything more.
	if _, err := f.create(ctx, api.VMCreateParams{Name: "quick"}, nil); err != nil {
		t.Fatal(err)
	}
	if asked.Load() != 0 {
		t.Errorf("--wait agent asked the guest's readiness %d times", asked.Load())
	}
	r, err := f.m.Readiness(ctx, "quick")
	if err != nil || !r.Agent || r.SSH || r.System || r.SystemState != "starting" {
		t.Errorf("readiness of a booting guest: %+v %v", r, err)
	}

	asked.Store(0)
	var stages []string
	if _, err := f.create(ctx, api.VMCreateParams{Name: "patient", Wait: api.WaitSSH}, func(p api.Progress) { stages = append(stages, p.Stage) }); err != nil {
		t.Fatal(err)
	}
	if asked.Load() < 3 || !slices.Contains(stages, "wait_ssh") {
		t.Errorf("create --wait ssh returned after %d questions, stages %v", asked.Load(), stages)
	}

	// systemd never gets there: a bounded wait with a clear error, the VM
	// left running.
	_, err = f.m.WaitReady(ctx, "patient", api.WaitSystem, 1200*time.Millisecond)
	if apiCode(err) != api.CodeOperationFailed || !strings.Contains(err.Error(), "init system did not finish booting within 1.2s (system state: starting)") {
		t.Errorf("wait for a system that never boots: %v", err)
	}
	if got, _ := f.m.Get(ctx, "patient"); got.State != "running" {
		t.Errorf("a timed-out wait changed the VM: %s", got.State)
	}
	if _, err := f.m.WaitReady(ctx, "patient", "later", time.Second); apiCode(err) != api.CodeBadRequest {
		t.Errorf("bad level: %v", err)
	}
	if _, err := f.m.Stop(ctx, "patient"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.WaitReady(ctx, "patient", api.WaitSSH, time.Second); apiCode(err) != api.CodeNotRunning {
		t.Errorf("wait on a stopped VM: %v", err)
	}
	if r, err := f.m.Readiness(ctx, "patient"); err != nil || r != (api.Readiness{}) {
		t.Errorf("readiness of a stopped VM: %+v %v", r, err)
	}
}

// Waiting for ssh from a guest without an SSH server fails at once.
func TestWaitSSHWithoutSSHD(t *testing.T) {
	f := newFixture(t)
	f.driver.readiness = func(context.Context) agent.Readiness {
		return agent.Readiness{System: true, SystemState: "agent"}
	}
	ctx := context.Background()
	if _, err := f.create(ctx, api.VMCreateParams{Name: "nossh"}, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := f.m.WaitReady(ctx, "nossh", api.WaitSSH, time.Minute)
	if apiCode(err) != api.CodeConflict || !strings.Contains(err.Error(), "has no sshd") || time.Since(start) > 10*time.Second {
		t.Errorf("wait for ssh without sshd: %v after %v", err, time.Since(start))
	}
	if r, err := f.m.WaitReady(ctx, "nossh", api.WaitSystem, time.Minute); err != nil || !r.System {
		t.Errorf("wait for system of an agent-as-PID-1 guest: %+v %v", r, err)
	}
}

// A guest that has finished booting with nothing on port 22 fails after
// the grace period, not the whole timeout.
func TestWaitSSHAfterBootGrace(t *testing.T) {
	f := newFixture(t)
	f.m.testSSHGrace = 600 * time.Millisecond
	f.driver.readiness = func(context.Context) agent.Readiness {
		return agent.Readiness{SSHD: true, System: true, SystemState: "degraded"}
	}
	ctx := context.Background()
	if _, err := f.create(ctx, api.VMCreateParams{Name: "sshdfailed"}, nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := f.m.WaitReady(ctx, "sshdfailed", api.WaitSSH, time.Minute)
	if apiCode(err) != api.CodeOperationFailed || !strings.Contains(err.Error(), "has booted (degraded) but nothing listens") || time.Since(start) > 20*time.Second {
		t.Errorf("booted guest without a listening sshd: %v after %v", err, time.Since(start))
	}
}

// What a guest says about its state reaches terminals: only plain words
// pass.
func TestReadinessFromHostileGuest(t *testing.T) {
	f := newFixture(t)
	var state atomic.Value
	f.driver.readiness = func(context.Context) agent.Readiness {
		return agent.Readiness{SSH: true, SSHD: true, System: true, SystemState: state.Load().(string)}
	}
	ctx := context.Background()
	state.Store("running")
	if _, err := f.create(ctx, api.VMCreateParams{Name: "liar"}, nil); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"degraded":                  "degraded",
		"\x1b]0;pwned\x07running":   "invalid",
		"running\nssh: ok":          "invalid",
		strings.Repeat("a", 64<<10): "invalid",
		// Over agent.MaxResponseLine the whole answer is refused.
		strings.Repeat("a", agent.MaxResponseLine): "",
		"":                      "",
		"initializing":          "initializing",
		"r\u00e9sum\u00e9":      "invalid",
		"$(reboot)":             "invalid",
		strings.Repeat("x", 32): strings.Repeat("x", 32),
		strings.Repeat("x", 33): "invalid",
	} {
		state.Store(in)
		r, err := f.m.Readiness(ctx, "liar")
		if err != nil || r.SystemState != want {
			t.Errorf("guest state %.40q: got %.40q (%v), want %q", in, r.SystemState, err, want)
		}
	}
}
