package sshkeys

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// newPub returns a fresh "ssh-ed25519 AAAA..." line with a comment.
func newPub(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return authorizedLine(pk, "root@guest")
}

func bare(line string) string {
	f := strings.Fields(line)
	return f[0] + " " + f[1]
}

func hashed(host string) string {
	salt := make([]byte, 20)
	rand.Read(salt)
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte(host))
	return "|1|" + base64.StdEncoding.EncodeToString(salt) + "|" + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func TestKnownHostsSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_hosts")
	k := KnownHosts{Path: path}
	old, other, shared := newPub(t), newPub(t), newPub(t)
	hashedOther := hashed("other.vm")
	initial := "# banger's known hosts\n" +
		"box.vm,172.16.0.2 " + bare(old) + "\n" +
		"other.vm " + bare(other) + "\n" +
		"[127.0.0.1]:2222 " + bare(old) + "\n" +
		"shared.vm,172.16.0.2,keep.vm " + bare(shared) + " comment\n" +
		hashed("box.vm") + " " + bare(old) + "\n" +
		hashedOther + " " + bare(other) + "\n" +
		"@cert-authority *.vm " + bare(other) + "\n" +
		"*.vm " + bare(other) + "\n"
	if err := os.WriteFile(path, []byte(initial), 0o640); err != nil {
		t.Fatal(err)
	}

	k1, k2 := newPub(t), newPub(t)
	if err := k.Set([]string{"BOX.vm", "172.16.0.2", "[127.0.0.1]:2222", "[box.vm]:22"}, []string{k1, k2}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "# banger's known hosts\n" +
		"other.vm " + bare(other) + "\n" +
		"shared.vm,keep.vm " + bare(shared) + " comment\n" +
		hashedOther + " " + bare(other) + "\n" +
		"@cert-authority *.vm " + bare(other) + "\n" +
		"*.vm " + bare(other) + "\n" +
		"box.vm,172.16.0.2,[127.0.0.1]:2222 " + bare(k1) + "\n" +
		"box.vm,172.16.0.2,[127.0.0.1]:2222 " + bare(k2) + "\n"
	if string(got) != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %o", fi.Mode().Perm())
	}

	// Setting the same again changes nothing; Remove drops the lines.
	if err := k.Set([]string{"box.vm", "172.16.0.2", "[127.0.0.1]:2222"}, []string{k1, k2}); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); string(again) != want {
		t.Errorf("second Set changed the file:\n%s", again)
	}
	if err := k.Remove([]string{"box.vm", "172.16.0.2", "[127.0.0.1]:2222"}); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(path)
	if strings.Contains(string(got), "box.vm") || strings.Contains(string(got), bare(k1)) || !strings.Contains(string(got), "shared.vm,keep.vm ") {
		t.Errorf("after Remove:\n%s", got)
	}

	// OpenSSH agrees: the new key is the one for box.vm.
	if err := k.Set([]string{"box.vm"}, []string{k1}); err != nil {
		t.Fatal(err)
	}
	if keygen, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command(keygen, "-F", "box.vm", "-f", path).CombinedOutput()
		if err != nil || !strings.Contains(string(out), bare(k1)) || strings.Contains(string(out), bare(old)) {
			t.Errorf("ssh-keygen -F box.vm: %v\n%s", err, out)
		}
	}
}

func TestKnownHostsCreatesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "known_hosts")
	k := KnownHosts{Path: path}
	pub := newPub(t)
	if err := k.Set([]string{"box.vm"}, []string{pub}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if string(got) != "box.vm "+bare(pub)+"\n" {
		t.Errorf("got %q", got)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o", fi.Mode().Perm())
	}
	// A file without a trailing newline gets one before new lines.
	os.WriteFile(path, []byte("a.vm "+bare(pub)), 0o600)
	if err := k.Set([]string{"b.vm"}, []string{pub}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "a.vm "+bare(pub)+"\nb.vm "+bare(pub)+"\n" {
		t.Errorf("got %q", got)
	}
	if err := k.Remove([]string{"nothing.vm"}); err != nil {
		t.Fatal(err)
	}
}

func TestKnownHostsRejectsBadInput(t *testing.T) {
	k := KnownHosts{Path: filepath.Join(t.TempDir(), "known_hosts")}
	pub := newPub(t)
	for _, c := range []struct {
		hosts, keys []string
	}{
		{nil, []string{pub}},
		{[]string{"a b"}, []string{pub}},
		{[]string{"a,b"}, []string{pub}},
		{[]string{"box.vm"}, []string{"ssh-ed25519 notbase64"}},
	} {
		if err := k.Set(c.hosts, c.keys); err == nil {
			t.Errorf("Set(%q, %q) accepted", c.hosts, c.keys)
		}
	}
	if _, err := os.Stat(k.Path); err == nil {
		t.Error("file written despite errors")
	}
}

func TestHostPattern(t *testing.T) {
	for _, c := range []struct {
		host string
		port int
		want string
	}{
		{"Box.vm", 22, "box.vm"},
		{"172.16.0.2", 0, "172.16.0.2"},
		{"127.0.0.1", 2222, "[127.0.0.1]:2222"},
		{"fd00::2", 22, "fd00::2"},
		{"[fd00::2]", 2200, "[fd00::2]:2200"},
	} {
		if got := HostPattern(c.host, c.port); got != c.want {
			t.Errorf("HostPattern(%q, %d) = %q, want %q", c.host, c.port, got, c.want)
		}
	}
}
