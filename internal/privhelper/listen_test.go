package privhelper

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListen: the socket is 0600 and owned by the allowed uid; a stale
// socket is replaced; a live one, a non-socket file and an unsafe
// directory are refused.
func TestListen(t *testing.T) {
	ctx := context.Background()
	uid := os.Getuid()
	if uid == 0 {
		uid = otherUID
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "helper.sock")

	ln, err := Listen(ctx, sock, uid)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 || ownerOf(t, fi) != uid {
		t.Fatalf("socket mode %v owner %d, want a 0600 socket owned by %d", fi.Mode(), ownerOf(t, fi), uid)
	}
	if di, err := os.Stat(filepath.Dir(sock)); err != nil || di.Mode().Perm() != 0o755 {
		t.Fatalf("socket directory: %v, %v", di.Mode(), err)
	}
	// Someone answers: a second helper must not steal the socket.
	go func(ln net.Listener) {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}(ln)
	if _, err := Listen(ctx, sock, uid); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Fatalf("Listen over a live socket: %v", err)
	}
	ln.Close()

	// A stale socket (left by a killed helper) is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err = Listen(ctx, sock, uid)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}

	// A file that is not a socket is not ours to remove.
	if err := os.WriteFile(sock, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(ctx, sock, uid); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}

	// A directory others may write to would let them swap the socket.
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(ctx, filepath.Join(open, "helper.sock"), uid); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Fatalf("Listen in a world-writable directory: %v", err)
	}
	if _, err := Listen(ctx, "relative.sock", uid); err == nil {
		t.Fatal("Listen accepted a relative path")
	}
}
