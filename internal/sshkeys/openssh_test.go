package sshkeys

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/testreq"
)

// fakeSSHD is a minimal SSH server on 127.0.0.1 that accepts one public
// key for root and runs exec requests with sh -c on this machine.
func fakeSSHD(t *testing.T, hostKey ssh.Signer, authorized ssh.PublicKey) int {
	t.Helper()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if c.User() == "root" && bytes.Equal(k.Marshal(), authorized.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("denied")
		},
	}
	cfg.AddHostKey(hostKey)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveSSH(conn, cfg)
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func serveSSH(conn net.Conn, cfg *ssh.ServerConfig) {
	defer conn.Close()
	_, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "session only")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range creqs {
				if req.Type != "exec" {
					req.Reply(req.Type == "env", nil)
					continue
				}
				var p struct{ Command string }
				if err := ssh.Unmarshal(req.Payload, &p); err != nil {
					req.Reply(false, nil)
					return
				}
				req.Reply(true, nil)
				cmd := exec.Command("sh", "-c", p.Command)
				cmd.Stdout, cmd.Stderr = ch, ch.Stderr()
				code := 0
				if err := cmd.Run(); err != nil {
					code = 255
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						code = ee.ExitCode()
					}
				}
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
				return
			}
		}()
	}
}

// TestOpenSSHEndToEnd logs in with the stock ssh client, through a user
// config with banger's Include, banger's key and banger's known_hosts, to
// a fake sshd on 127.0.0.1, and runs a command whose arguments and exit
// status must survive; then replaces the host key and expects ssh to
// refuse.
func TestOpenSSHEndToEnd(t *testing.T) {
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		t.Skip("ssh not installed")
	}
	dir := t.TempDir()
	// ssh takes ~ from the passwd entry, not $HOME, but with -F, an
	// IdentityFile and a UserKnownHostsFile it reads nothing under ~/.ssh
	// and, with strict checking, writes nothing.
	key := filepath.Join(dir, "banger", "id_ed25519")
	pubLine, err := EnsureKey(key)
	if err != nil {
		t.Fatal(err)
	}
	authorized, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pubLine))
	if err != nil {
		t.Fatal(err)
	}
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	port := fakeSSHD(t, hostSigner, authorized)

	kh := KnownHosts{Path: filepath.Join(dir, "banger", "known_hosts")}
	if err := kh.Set([]string{HostPattern("127.0.0.1", port)}, []string{authorizedLine(hostSigner.PublicKey(), "guest")}); err != nil {
		t.Fatal(err)
	}
	gen := filepath.Join(dir, "banger", "ssh_config")
	os.WriteFile(gen, RenderConfig([]Host{{Name: "box", Alias: "box.vm", Addr: "127.0.0.1", Port: port}}, key, kh.Path), 0o600)
	user := filepath.Join(dir, ".ssh", "config")
	if _, err := Install(user, gen); err != nil {
		t.Fatal(err)
	}

	run := func() (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		remote := QuoteArgs([]string{"sh", "-c", `printf '[%s]' "$@"; exit 42`, "sh", "a b", "it's", "", "$HOME", `\`})
		cmd := exec.CommandContext(ctx, sshBin, "-F", user, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "box.vm", "--", remote)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out) + stderr.String(), code
	}
	out, code := run()
	if code != 42 || out != `[a b][it's][][$HOME][\]` {
		t.Fatalf("ssh box.vm: exit %d, output %q", code, out)
	}

	// A new VM on the same address with new host keys: the old key is
	// gone from known_hosts, so ssh refuses the server still presenting it.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(other)
	if err := kh.Set([]string{HostPattern("127.0.0.1", port)}, []string{authorizedLine(otherSigner.PublicKey(), "")}); err != nil {
		t.Fatal(err)
	}
	out, code = run()
	if code != 255 || !strings.Contains(out, "verification failed") {
		t.Errorf("stale key accepted: exit %d, %q", code, out)
	}
}

// TestOpenSSHProxyCommand: stock ssh runs a host's ProxyCommand with its
// arguments intact (a path with a blank, a quote and a '%') and talks to
// sshd through it.
func TestOpenSSHProxyCommand(t *testing.T) {
	sshBin := testreq.RequireTools(t, "apt-get install openssh-client bash", "ssh", "bash")[0]
	dir := t.TempDir()
	key := filepath.Join(dir, "banger", "id_ed25519")
	pubLine, err := EnsureKey(key)
	if err != nil {
		t.Fatal(err)
	}
	authorized, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(pubLine))
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	port := fakeSSHD(t, hostSigner, authorized)

	// The proxy records its arguments, then relays stdio to the fake
	// sshd (bash's /dev/tcp, no netcat needed).
	proxyDir := filepath.Join(dir, "it's 100% here")
	os.MkdirAll(proxyDir, 0o755)
	proxy := filepath.Join(proxyDir, "banger")
	script := "#!/bin/bash\nprintf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\n" +
		"exec 3<>/dev/tcp/127.0.0.1/" + strconv.Itoa(port) + "\ncat <&3 &\ncat >&3\nwait\n"
	os.WriteFile(proxy, []byte(script), 0o755)

	kh := KnownHosts{Path: filepath.Join(dir, "banger", "known_hosts")}
	if err := kh.Set([]string{HostPattern("127.0.0.1", port)}, []string{authorizedLine(hostSigner.PublicKey(), "guest")}); err != nil {
		t.Fatal(err)
	}
	gen := filepath.Join(dir, "banger", "ssh_config")
	hosts := []Host{{Name: "box", Alias: "box.vm", Addr: "127.0.0.1", Port: port,
		ProxyCommand: []string{proxy, "vm", "ssh", "--proxy", "box"}}}
	os.WriteFile(gen, RenderConfig(hosts, key, kh.Path), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sshBin, "-F", gen, "-o", "BatchMode=yes", "box.vm", "--", "echo via-proxy; exit 7")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 || string(out) != "via-proxy\n" {
		t.Fatalf("ssh through the proxy: %v, %q, stderr %q\nconfig:\n%s", err, out, stderr.String(), RenderConfig(hosts, key, kh.Path))
	}
	args, _ := os.ReadFile(filepath.Join(proxyDir, "args"))
	if string(args) != "vm\nssh\n--proxy\nbox\n" {
		t.Errorf("proxy arguments: %q", args)
	}
}
