package guest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func fakeProcNet(t *testing.T, tcp, tcp6 string) string {
	t.Helper()
	proc := t.TempDir()
	os.MkdirAll(filepath.Join(proc, "net"), 0o755)
	if tcp != "" {
		os.WriteFile(filepath.Join(proc, "net/tcp"), []byte(tcp), 0o644)
	}
	if tcp6 != "" {
		os.WriteFile(filepath.Join(proc, "net/tcp6"), []byte(tcp6), 0o644)
	}
	return proc
}

const procHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

func TestListensTCP(t *testing.T) {
	listen22 := procHeader + "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0\n"
	// An established connection from port 22 is not a listener.
	established22 := procHeader + "   0: 0200000A:0016 0100000A:D431 01 00000000:00000000 02:000A7B5C 00000000     0        0 1003 4 0000000000000000 20 4 31 10 -1\n"
	listen80v6 := procHeader + "   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0\n"
	listen22v6 := procHeader + "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0\n"
	for _, c := range []struct {
		name, tcp, tcp6 string
		want            bool
	}{
		{"v4 listener", listen22, "", true},
		{"v6 listener", "", listen22v6, true},
		{"established only", established22, listen80v6, false},
		{"nothing", "", "", false},
		{"garbage", "not a table\n\x00\xff", "", false},
	} {
		if got := listensTCP(fakeProcNet(t, c.tcp, c.tcp6), 22); got != c.want {
			t.Errorf("%s: listensTCP = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSystemState(t *testing.T) {
	if ok, st := systemState(context.Background(), "banger-agent"); !ok || st != "agent" {
		t.Errorf("agent as PID 1: %v %q", ok, st)
	}
	if ok, st := systemState(context.Background(), "tini"); !ok || st != "tini" {
		t.Errorf("another init: %v %q", ok, st)
	}
	for state, want := range map[string]bool{"running": true, "degraded": true, "starting": false, "initializing": false, "maintenance": false, "stopping": false, "unknown": false} {
		if systemBooted(state) != want {
			t.Errorf("systemBooted(%q) != %v", state, want)
		}
	}
}

func TestHasSSHD(t *testing.T) {
	root := t.TempDir()
	if hasSSHD(root) {
		t.Error("empty root has sshd")
	}
	os.MkdirAll(filepath.Join(root, "usr/sbin/sshd"), 0o755) // a directory is not a server
	if hasSSHD(root) {
		t.Error("directory taken for sshd")
	}
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	os.WriteFile(filepath.Join(root, "sbin/sshd"), []byte("ELF"), 0o755)
	if !hasSSHD(root) {
		t.Error("sshd not found")
	}
}

func TestSystemCache(t *testing.T) {
	var c systemCache
	// Not systemd: answered without a process, and remembered.
	if ok, st := c.get(context.Background(), "banger-agent"); !ok || st != "agent" {
		t.Fatalf("%v %q", ok, st)
	}
	if ok, st := c.get(context.Background(), "systemd"); !ok || st != "agent" {
		t.Errorf("answer not reused within %v: %v %q", systemAskEvery, ok, st)
	}
}
