package qemu

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"banger/internal/engine"
)

// TestPauseResumeOverQMP drives Pause, Paused and Resume against a fake QMP
// server that keeps a run state as QEMU does.
func TestPauseResumeOverQMP(t *testing.T) {
	var mu sync.Mutex
	running := true
	f := newFakeQMP(t, func(cmd map[string]any, send func(string)) {
		mu.Lock()
		defer mu.Unlock()
		switch cmd["execute"] {
		case "stop":
			running = false
			send(reply(cmd, `{}`))
		case "cont":
			running = true
			send(reply(cmd, `{}`))
		case "query-status":
			if running {
				send(reply(cmd, `{"running": true, "status": "running"}`))
			} else {
				send(reply(cmd, `{"running": false, "status": "paused"}`))
			}
		default:
			send(`{"error": {"class": "CommandNotFound", "desc": "no"}, "id": 0}`)
		}
	})
	inst := &Instance{spec: engine.Spec{Name: "box"}, qmp: dialFake(t, f)}
	d := &Driver{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if p, err := d.Paused(ctx, inst); err != nil || p {
		t.Fatalf("Paused before pause = %v, %v", p, err)
	}
	if err := d.Pause(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if p, err := d.Paused(ctx, inst); err != nil || !p {
		t.Fatalf("Paused after pause = %v, %v", p, err)
	}
	if err := d.Resume(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if p, err := d.Paused(ctx, inst); err != nil || p {
		t.Fatalf("Paused after resume = %v, %v", p, err)
	}
	want := []string{"qmp_capabilities", "query-status", "stop", "query-status", "cont", "query-status"}
	if got := f.seen(); !slices.Equal(got, want) {
		t.Fatalf("commands = %v, want %v", got, want)
	}
}

// TestPauseRefusesForeignInstance: another engine's handle is an error,
// not a panic.
func TestPauseRefusesForeignInstance(t *testing.T) {
	var d Driver
	if err := d.Pause(context.Background(), nil); err == nil {
		t.Fatal("Pause(nil) succeeded")
	}
}
