// Package apidaemon starts a real bangerd for tests: the test binary
// re-executed as the daemon, on an installation of its own.
package apidaemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/daemon"
	"banger/internal/paths"
)

// childEnv marks the test binary re-executed as a daemon.
const childEnv = "BANGER_TEST_APITEST_DAEMON"

// RunDaemonIfChild makes a test binary serve as bangerd when Daemon
// re-executes it; call it first in TestMain. It returns only in the
// ordinary test run.
func RunDaemonIfChild() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	layout, err := paths.FromEnv()
	if err == nil {
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		err = daemon.Run(context.Background(), daemon.Options{Layout: layout, Version: "apitest", Log: log})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "apitest daemon:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Daemon is a real bangerd (this test binary re-executed, running
// daemon.Run) on its own installation: fresh XDG directories, no VM
// network ("none"), DNS on a free loopback port. It boots no VM: a
// regular file stands in for the guest agent.
type Daemon struct {
	Layout paths.Layout
	Log    string // the daemon's output
}

// Socket is the daemon's API socket.
func (d *Daemon) Socket() string { return d.Layout.Socket() }

// Logs returns what the daemon printed so far.
func (d *Daemon) Logs() string {
	b, _ := os.ReadFile(d.Log)
	return string(b)
}

// StartDaemon starts a daemon for t with extra lines of config.toml and
// stops it when t ends. The test binary must call RunDaemonIfChild from
// TestMain.
func StartDaemon(t testing.TB, extraConfig string) *Daemon {
	t.Helper()
	base, err := os.MkdirTemp("", "bapi") // short: unix socket paths
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	dirs := map[string]string{}
	for _, n := range []string{"home", "state", "config", "run"} {
		dirs[n] = filepath.Join(base, n)
		if err := os.MkdirAll(dirs[n], 0o700); err != nil {
			t.Fatal(err)
		}
	}
	d := &Daemon{
		Layout: paths.Layout{
			State:          filepath.Join(dirs["state"], "banger"),
			Config:         filepath.Join(dirs["config"], "banger"),
			Runtime:        filepath.Join(dirs["run"], "banger"),
			RuntimeManaged: true,
		},
		Log: filepath.Join(base, "bangerd.log"),
	}
	os.MkdirAll(d.Layout.Config, 0o700)
	cfg := "network = \"none\"\ndns_listen = \"127.0.0.1:0\"\n" + extraConfig
	if err := os.WriteFile(d.Layout.ConfigFile(), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(exe)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BANGER_") && !strings.HasPrefix(kv, "XDG_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		childEnv+"=1",
		"HOME="+dirs["home"],
		"XDG_STATE_HOME="+dirs["state"],
		"XDG_CONFIG_HOME="+dirs["config"],
		"XDG_RUNTIME_DIR="+dirs["run"],
		"BANGER_RUNTIME_DIR="+d.Layout.Runtime,
		// Never started: no VM boots here.
		"BANGER_AGENT="+exe,
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", d.Socket())
	}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("daemon exited while starting; log:\n%s", d.Logs())
		default:
		}
		resp, err := hc.Get("http://bangerd/v1/ping")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not answer within 60s (%v); log:\n%s", err, d.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
