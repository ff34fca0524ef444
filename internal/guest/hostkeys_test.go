package guest

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// guestRoot makes a root directory with an /etc/ssh.
func guestRoot(t *testing.T) (root, sshDir string) {
	t.Helper()
	root = t.TempDir()
	sshDir = filepath.Join(root, "etc", "ssh")
	if err := os.MkdirAll(sshDir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(sshDir, "sshd_config"), []byte("PermitRootLogin prohibit-password\n"), 0o644)
	return root, sshDir
}

func readAll(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		m[e.Name()] = string(b)
	}
	return m
}

func TestEnsureHostKeysFresh(t *testing.T) {
	root, dir := guestRoot(t)
	pubs, err := EnsureHostKeys(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 2 || !strings.HasPrefix(pubs[0], "ecdsa-sha2-nistp256 ") || !strings.HasPrefix(pubs[1], "ssh-ed25519 ") {
		t.Fatalf("pubs %q", pubs)
	}
	for i, f := range []string{"ssh_host_ecdsa_key", "ssh_host_ed25519_key"} {
		priv := filepath.Join(dir, f)
		for p, mode := range map[string]os.FileMode{priv: 0o600, priv + ".pub": 0o644} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != mode {
				t.Errorf("%s: mode %o, want %o", p, fi.Mode().Perm(), mode)
			}
		}
		data, _ := os.ReadFile(priv)
		if b, _ := pem.Decode(data); b == nil || b.Type != "OPENSSH PRIVATE KEY" {
			t.Errorf("%s is not an OpenSSH private key", f)
		}
		signer, err := ssh.ParsePrivateKey(data)
		if err != nil {
			t.Fatal(err)
		}
		pubFile, _ := os.ReadFile(priv + ".pub")
		fields := strings.Fields(string(pubFile))
		if len(fields) != 3 || fields[0]+" "+fields[1] != pubs[i] ||
			strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) != pubs[i] {
			t.Errorf("%s.pub %q does not match %q", f, pubFile, pubs[i])
		}
	}
	marker, err := os.ReadFile(filepath.Join(dir, HostKeysMarker))
	if err != nil || strings.Contains(string(marker), "PRIVATE") {
		t.Errorf("marker: %q %v", marker, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// Files OpenSSH accepts: ssh-keygen reads both halves and derives the
	// same public key from the private one.
	keygen, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Log("ssh-keygen not installed; OpenSSH check skipped")
		return
	}
	for i, f := range []string{"ssh_host_ecdsa_key", "ssh_host_ed25519_key"} {
		p := filepath.Join(dir, f)
		for _, file := range []string{p, p + ".pub"} {
			if out, err := exec.Command(keygen, "-l", "-f", file).CombinedOutput(); err != nil {
				t.Errorf("ssh-keygen -l -f %s: %v\n%s", file, err, out)
			}
		}
		out, err := exec.Command(keygen, "-y", "-f", p).Output()
		if err != nil || !strings.HasPrefix(string(out), pubs[i]) {
			t.Errorf("ssh-keygen -y -f %s: %q %v", f, out, err)
		}
	}
}

func TestEnsureHostKeysSecondBoot(t *testing.T) {
	root, dir := guestRoot(t)
	first, err := EnsureHostKeys(root)
	if err != nil {
		t.Fatal(err)
	}
	before := readAll(t, dir)
	second, err := EnsureHostKeys(root)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first, second) {
		t.Errorf("second boot: %q, first %q", second, first)
	}
	if after := readAll(t, dir); !mapsEqual(before, after) {
		t.Error("second boot changed files in /etc/ssh")
	}

	// With the marker, a lost key of banger's is made again, alone.
	os.Remove(filepath.Join(dir, "ssh_host_ecdsa_key"))
	os.Remove(filepath.Join(dir, "ssh_host_ecdsa_key.pub"))
	third, err := EnsureHostKeys(root)
	if err != nil {
		t.Fatal(err)
	}
	if third[1] != first[1] || third[0] == first[0] || !strings.HasPrefix(third[0], "ecdsa-sha2-nistp256 ") {
		t.Errorf("after losing the ecdsa key: %q, first %q", third, first)
	}

	// A lost .pub is derived again from its private key.
	os.Remove(filepath.Join(dir, "ssh_host_ed25519_key.pub"))
	if fourth, err := EnsureHostKeys(root); err != nil || !slices.Equal(fourth, third) {
		t.Errorf("after losing a .pub: %q %v", fourth, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ssh_host_ed25519_key.pub")); err != nil {
		t.Error(".pub not restored")
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestEnsureHostKeysReplacesImageKeys(t *testing.T) {
	root, dir := guestRoot(t)
	// The image's builder keys: an ed25519 pair and an RSA pair.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, _ := ssh.MarshalPrivateKey(priv, "root@builder")
	signer, _ := ssh.NewSignerFromKey(priv)
	imagePub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	os.WriteFile(filepath.Join(dir, "ssh_host_ed25519_key"), pem.EncodeToMemory(block), 0o600)
	os.WriteFile(filepath.Join(dir, "ssh_host_ed25519_key.pub"), []byte(imagePub+" root@builder\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "ssh_host_rsa_key"), []byte("builder's rsa key"), 0o600)
	os.WriteFile(filepath.Join(dir, "ssh_host_rsa_key.pub"), []byte("ssh-rsa AAAA root@builder\n"), 0o644)

	pubs, err := EnsureHostKeys(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 2 || slices.Contains(pubs, imagePub) {
		t.Errorf("image key survived: %q", pubs)
	}
	for _, f := range []string{"ssh_host_rsa_key", "ssh_host_rsa_key.pub"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s survived", f)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sshd_config")); string(b) != "PermitRootLogin prohibit-password\n" {
		t.Error("sshd_config touched")
	}

	// Keys added after the first boot (the user's own) are kept and
	// returned, even those Go cannot parse, through their .pub.
	extra := filepath.Join(dir, "ssh_host_custom_key")
	os.WriteFile(extra, []byte("opaque"), 0o600)
	os.WriteFile(extra+".pub", []byte(pubs[1]+" custom\n"), 0o644)
	again, err := EnsureHostKeys(root)
	// Sorted by file name: custom, ecdsa, ed25519.
	if want := []string{pubs[1], pubs[0], pubs[1]}; err != nil || !slices.Equal(again, want) {
		t.Errorf("with a custom key: %q %v", again, err)
	}
	if _, err := os.Stat(extra); err != nil {
		t.Error("custom key removed")
	}
}

func TestEnsureHostKeysNoSSH(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	pubs, err := EnsureHostKeys(root)
	if pubs != nil || err != nil {
		t.Errorf("no /etc/ssh: %q %v", pubs, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc", "ssh")); err == nil {
		t.Error("/etc/ssh created")
	}
	os.WriteFile(filepath.Join(root, "etc", "ssh"), nil, 0o644)
	if _, err := EnsureHostKeys(root); err == nil {
		t.Error("/etc/ssh as a file accepted")
	}
}
