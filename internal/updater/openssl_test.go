package updater

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestOpenSSLCompatibility checks signatures cross between the openssl
// command line (what release.sh and install.sh use) and this package.
func TestOpenSSLCompatibility(t *testing.T) {
	needTools(t, "openssl")
	dir := t.TempDir()
	key := newTestKey(t)
	priv := filepath.Join(dir, "key.pem")
	pub := filepath.Join(dir, "pub.pem")
	sumsPath := filepath.Join(dir, "SHA256SUMS")
	key.writePrivatePEM(t, priv)
	sums := []byte(strings.Repeat("ab", 32) + "  banger-v0.3.0-linux-amd64.tar.gz\n")
	for path, data := range map[string][]byte{pub: []byte(key.pubPEM), sumsPath: sums} {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("openssl signs, package verifies", func(t *testing.T) {
		sigPath := filepath.Join(dir, "openssl.sig")
		run(t, "openssl", "dgst", "-sha256", "-sign", priv, "-out", sigPath, sumsPath)
		sig, err := os.ReadFile(sigPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifySignature([]byte(key.pubPEM), sums, sig); err != nil {
			t.Errorf("DER: %v", err)
		}
		// base64, one line (cosign) and wrapped (openssl base64).
		for _, flags := range [][]string{{"-A"}, {}} {
			b64 := run(t, "openssl", append([]string{"base64", "-in", sigPath}, flags...)...)
			if err := VerifySignature([]byte(key.pubPEM), sums, []byte(b64)); err != nil {
				t.Errorf("base64 %v: %v", flags, err)
			}
		}
		if err := VerifySignature([]byte(key.pubPEM), append(sums, '\n'), sig); err == nil {
			t.Error("tampered SHA256SUMS verified")
		}
	})

	t.Run("package signs, openssl verifies", func(t *testing.T) {
		sigPath := filepath.Join(dir, "go.sig")
		if err := os.WriteFile(sigPath, key.sign(t, sums), 0o644); err != nil {
			t.Fatal(err)
		}
		out := run(t, "openssl", "dgst", "-sha256", "-verify", pub, "-signature", sigPath, sumsPath)
		if !strings.Contains(out, "Verified OK") {
			t.Errorf("openssl said %q", out)
		}
		tampered := filepath.Join(dir, "tampered")
		if err := os.WriteFile(tampered, append(sums, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := exec.Command("openssl", "dgst", "-sha256", "-verify", pub, "-signature", sigPath, tampered).Run(); err == nil {
			t.Error("openssl verified a tampered file")
		}
	})

	t.Run("openssl key pair", func(t *testing.T) {
		// A key made the way the release key is made (see the report in
		// key.go): traditional "EC PRIVATE KEY" PEM and its public half.
		k := filepath.Join(dir, "ec.pem")
		p := filepath.Join(dir, "ec.pub.pem")
		s := filepath.Join(dir, "ec.sig")
		run(t, "openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", k)
		run(t, "openssl", "ec", "-in", k, "-pubout", "-out", p)
		run(t, "openssl", "dgst", "-sha256", "-sign", k, "-out", s, sumsPath)
		pubPEM, _ := os.ReadFile(p)
		sig, _ := os.ReadFile(s)
		if err := VerifySignature(pubPEM, sums, sig); err != nil {
			t.Error(err)
		}
		if err := VerifySignature([]byte(key.pubPEM), sums, sig); err == nil {
			t.Error("a signature by another key verified")
		}
	})
}
