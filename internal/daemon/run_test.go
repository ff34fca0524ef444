package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/paths"
	"banger/internal/store"
	"banger/internal/testreq"
)

func TestWritePIDFileRefusesSymlinksAndLinks(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := filepath.Join(dir, "bangerd.pid")
	if err := os.Symlink(victim, pid); err != nil {
		t.Fatal(err)
	}
	if err := writePIDFile(pid, 42); err == nil {
		t.Error("pid file written through a symbolic link")
	}
	os.Remove(pid)
	if err := os.Link(victim, pid); err != nil {
		t.Fatal(err)
	}
	if err := writePIDFile(pid, 42); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("hard link: err = %v", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("victim changed: %q", b)
	}
	os.Remove(pid)
	os.WriteFile(pid, []byte("123456789\n"), 0o600)
	if err := writePIDFile(pid, 42); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(pid); string(b) != "42\n" {
		t.Errorf("pid file %q", b)
	}
}

// TestRunRefusesRuntimeDirOfAnotherUser: uid 65534 pre-created the /tmp
// fallback; the daemon refuses to start and creates nothing in it.
func TestRunRefusesRuntimeDirOfAnotherUser(t *testing.T) {
	testreq.Require(t, os.Geteuid() == 0, "needs root to make a directory owned by another user (uid 65534)")
	for _, k := range []string{"BANGER_RUNTIME_DIR", "XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME"} {
		t.Setenv(k, "")
	}
	base := t.TempDir()
	parent := filepath.Join(base, "banger-0")
	if err := os.Mkdir(parent, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(parent, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	l := paths.Layout{State: filepath.Join(base, "state"), Config: filepath.Join(base, "config"),
		RuntimeParent: parent, Runtime: filepath.Join(parent, "banger")}
	err := Run(context.Background(), Options{Layout: l, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("created in the hostile directory: %v", ents)
	}
}

// TestSSHRefreshReportsErrors: a config that cannot be written is an
// error (it used to be dropped silently), and a good one is written whole.
func TestSSHRefreshReportsErrors(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(context.Background(), filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &sshService{key: "/k", knownHosts: "/kh", config: filepath.Join(dir, "missing", "config"), store: st,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := s.refresh(); err == nil || !strings.Contains(err.Error(), "ssh config") {
		t.Fatalf("err = %v, want an error", err)
	}
	s.config = filepath.Join(dir, "config")
	if err := s.refresh(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.config); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), "tmp") {
			t.Errorf("leftover %s", e.Name())
		}
	}
}
