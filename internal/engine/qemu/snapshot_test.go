package qemu

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/engine"
)

// fakeMigrator answers like a paused QEMU whose migration reports the
// given statuses, one per query-migrate.
func fakeMigrator(t *testing.T, running bool, statuses ...string) *fakeQMP {
	return newFakeQMP(t, func(cmd map[string]any, send func(string)) {
		switch cmd["execute"] {
		case "query-status":
			if running {
				send(reply(cmd, `{"running": true, "status": "running"}`))
			} else {
				send(reply(cmd, `{"running": false, "status": "paused"}`))
			}
		case "query-migrate":
			s := statuses[0]
			if len(statuses) > 1 {
				statuses = statuses[1:]
			}
			if s == "failed" {
				send(reply(cmd, `{"status": "failed"}`))
			} else {
				send(reply(cmd, `{"status": "`+s+`"}`))
			}
		default:
			send(reply(cmd, `{}`))
		}
	})
}

func saveWith(t *testing.T, f *fakeQMP, vmmLog string) error {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	inst := &Instance{spec: engine.Spec{Name: "box", VMMLog: vmmLog}, qmp: dialFake(t, f)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return (&Driver{}).SaveState(ctx, inst, out)
}

func TestSaveStatePollsUntilCompleted(t *testing.T) {
	f := fakeMigrator(t, false, "setup", "active", "active", "completed")
	if err := saveWith(t, f, ""); err != nil {
		t.Fatal(err)
	}
	want := []string{"qmp_capabilities", "query-status", "getfd", "migrate-set-parameters", "migrate",
		"query-migrate", "query-migrate", "query-migrate", "query-migrate"}
	if got := f.seen(); !slices.Equal(got, want) {
		t.Fatalf("commands = %v, want %v", got, want)
	}
}

// TestSaveStateFailureSaysWhy: a failed migration without a description
// is reported with the end of the VMM log.
func TestSaveStateFailureSaysWhy(t *testing.T) {
	log := filepath.Join(t.TempDir(), "vmm.log")
	os.WriteFile(log, []byte("qemu-system-x86_64: failed to save SaveStateEntry with id(name): 2(foo)\n"), 0o600)
	err := saveWith(t, fakeMigrator(t, false, "active", "failed"), log)
	if err == nil || !strings.Contains(err.Error(), "SaveStateEntry") || !strings.Contains(err.Error(), "migration failed") {
		t.Fatalf("err = %v", err)
	}
}

func TestSaveStateRefusesRunningVM(t *testing.T) {
	f := fakeMigrator(t, true, "completed")
	if err := saveWith(t, f, ""); err == nil || !strings.Contains(err.Error(), "paused") {
		t.Fatalf("err = %v", err)
	}
	if slices.Contains(f.seen(), "migrate") {
		t.Fatal("migrated a running vm")
	}
}
