package sshkeys

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestEnsureKeyCreatesAndReloads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ssh") // missing: created
	path := filepath.Join(dir, "id_ed25519")
	pub, err := EnsureKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "ssh-ed25519 AAAA") || !strings.HasSuffix(pub, " "+KeyComment) || strings.Contains(pub, "\n") {
		t.Errorf("pub line %q", pub)
	}
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub)); err != nil {
		t.Errorf("pub line does not parse: %v", err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, path + ".pub": 0o644, dir: 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
	if b, _ := os.ReadFile(path + ".pub"); string(b) != pub+"\n" {
		t.Errorf(".pub holds %q", b)
	}
	priv, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(priv), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Errorf("private key not in OpenSSH format")
	}

	// Reload: same key, nothing rewritten.
	again, err := EnsureKey(path)
	if err != nil || again != pub {
		t.Fatalf("reload gave %q, %v", again, err)
	}
	if priv2, _ := os.ReadFile(path); string(priv2) != string(priv) {
		t.Error("private key rewritten")
	}

	// A lost .pub is restored, a loose mode is tightened.
	os.Remove(path + ".pub")
	os.Chmod(path, 0o644)
	if again, err := EnsureKey(path); err != nil || again != pub {
		t.Fatalf("after losing .pub: %q, %v", again, err)
	}
	if b, _ := os.ReadFile(path + ".pub"); string(b) != pub+"\n" {
		t.Errorf(".pub not restored: %q", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode not tightened: %o", fi.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	if path, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command(path, "-y", "-f", filepath.Join(dir, "id_ed25519")).Output()
		if err != nil || !strings.HasPrefix(pub, strings.TrimSpace(string(out))) {
			t.Errorf("ssh-keygen -y: %q, %v", out, err)
		}
	}
}

func TestEnsureKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id_ed25519")
	var wg sync.WaitGroup
	pubs := make([]string, 8)
	for i := range pubs {
		wg.Go(func() {
			p, err := EnsureKey(path)
			if err != nil {
				t.Error(err)
			}
			pubs[i] = p
		})
	}
	wg.Wait()
	for _, p := range pubs[1:] {
		if p != pubs[0] {
			t.Fatalf("racing callers got different keys: %q vs %q", p, pubs[0])
		}
	}
}

func TestEnsureKeyRejectsGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id")
	os.WriteFile(path, []byte("not a key"), 0o600)
	if _, err := EnsureKey(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("garbage key: %v", err)
	}
}
