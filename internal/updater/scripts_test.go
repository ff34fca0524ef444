package updater

import (
	"archive/tar"
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const (
	installScript = "../../scripts/install.sh"
	releaseScript = "../../scripts/release.sh"
)

func TestInstallScriptKeyIsReleasePublicKey(t *testing.T) {
	script := readFile(t, installScript)
	const open, end = "<<'PUBKEY'\n", "\nPUBKEY\n"
	i := strings.Index(script, open)
	if i < 0 {
		t.Fatalf("%s has no <<'PUBKEY' heredoc", installScript)
	}
	rest := script[i+len(open):]
	j := strings.Index(rest, end)
	if j < 0 {
		t.Fatalf("%s: the PUBKEY heredoc does not end", installScript)
	}
	if got := rest[:j+1]; got != ReleasePublicKey {
		t.Fatalf("the key in %s differs from ReleasePublicKey:\n%s\nwant\n%s", installScript, got, ReleasePublicKey)
	}
}

// scriptRun runs a script with bash in a new session (so it has no
// controlling terminal and /dev/tty cannot be opened) and stdin from
// /dev/null.
type scriptRun struct {
	out  string
	err  error
	code int
}

func runScript(t *testing.T, script string, env []string, args ...string) scriptRun {
	t.Helper()
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"TMPDIR=" + t.TempDir(),
		"LC_ALL=C",
	}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return scriptRun{out: out.String(), err: err, code: cmd.ProcessState.ExitCode()}
}

func needInstallTools(t *testing.T) {
	t.Helper()
	needTools(t, "bash", "curl", "openssl", "sha256sum", "tar", "gzip", "awk")
	_, errPy := exec.LookPath("python3")
	_, errJq := exec.LookPath("jq")
	if errPy != nil && errJq != nil {
		t.Skip("neither python3 nor jq is installed")
	}
}

// installEnv is the environment install.sh gets in the tests.
func installEnv(t *testing.T, baseURL string, key testKey, extra ...string) []string {
	t.Helper()
	pub := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(pub, []byte(key.pubPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	return append([]string{"BANGER_INSTALL_BASE_URL=" + baseURL, "BANGER_INSTALL_PUBKEY_FILE=" + pub}, extra...)
}

func assertInstalled(t *testing.T, binDir, version string) {
	t.Helper()
	for _, b := range Binaries() {
		path := filepath.Join(binDir, b)
		if got := readFile(t, path); got != string(fakeBinary(b, version)) {
			t.Errorf("%s is %q, want the %s binary", path, got, version)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, %v", path, st.Mode(), err)
		}
	}
	entries, _ := os.ReadDir(binDir)
	if len(entries) != len(Binaries()) {
		t.Errorf("%s holds %d entries, want %d", binDir, len(entries), len(Binaries()))
	}
}

func assertNothingInstalled(t *testing.T, prefix string) {
	t.Helper()
	entries, err := os.ReadDir(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("%s is not empty: %v", prefix, entries)
	}
}

func TestInstallScript(t *testing.T) {
	needInstallTools(t)
	f := newFixture(t)
	base := f.host.srv.URL
	nonInteractive := "BANGER_INSTALL_NONINTERACTIVE=1"

	t.Run("installs the latest", func(t *testing.T) {
		prefix := t.TempDir()
		r := runScript(t, installScript, installEnv(t, base, f.key, nonInteractive), "--prefix", prefix, "--no-services")
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.out)
		}
		assertInstalled(t, filepath.Join(prefix, "bin"), "v0.3.0")
		for _, want := range []string{"verifying the signature of banger v0.3.0", filepath.Join(prefix, "bin", "banger-helper"), "banger v0.3.0 is installed"} {
			if !strings.Contains(r.out, want) {
				t.Errorf("output lacks %q:\n%s", want, r.out)
			}
		}
		// Again, over the installed files, with --yes and a version.
		r = runScript(t, installScript, installEnv(t, base, f.key), "--yes", "--version", "0.2.0", "--prefix", prefix, "--no-services")
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.out)
		}
		assertInstalled(t, filepath.Join(prefix, "bin"), "v0.2.0")
	})

	t.Run("refuses without a terminal", func(t *testing.T) {
		prefix := t.TempDir()
		r := runScript(t, installScript, installEnv(t, base, f.key), "--prefix", prefix, "--no-services")
		if r.err == nil || !strings.Contains(r.out, "BANGER_INSTALL_NONINTERACTIVE=1") {
			t.Fatalf("err %v, output:\n%s", r.err, r.out)
		}
		assertNothingInstalled(t, prefix)
	})

	t.Run("unknown version", func(t *testing.T) {
		prefix := t.TempDir()
		r := runScript(t, installScript, installEnv(t, base, f.key, nonInteractive), "--version", "v9.9.9", "--prefix", prefix, "--no-services")
		if r.err == nil || !strings.Contains(r.out, "release v9.9.9 not found in manifest (latest is v0.3.0)") {
			t.Fatalf("err %v, output:\n%s", r.err, r.out)
		}
		assertNothingInstalled(t, prefix)
	})

	t.Run("embedded key rejects the test release", func(t *testing.T) {
		prefix := t.TempDir()
		env := []string{"BANGER_INSTALL_BASE_URL=" + base, nonInteractive}
		r := runScript(t, installScript, env, "--prefix", prefix, "--no-services")
		if r.err == nil || !strings.Contains(r.out, "signature check failed") {
			t.Fatalf("err %v, output:\n%s", r.err, r.out)
		}
		assertNothingInstalled(t, prefix)
	})

	for _, c := range []struct {
		name  string
		setup func(t *testing.T, f *fixture)
		want  string
	}{
		{"bad signature", func(t *testing.T, f *fixture) {
			other := newTestKey(t)
			f.host.set("v0.3.0/SHA256SUMS.sig", other.sign(t, f.host.files["v0.3.0/SHA256SUMS"]))
		}, "signature check failed"},
		{"bad archive hash", func(t *testing.T, f *fixture) {
			f.host.set("v0.3.0/banger-v0.3.0-linux-amd64.tar.gz", makeArchive(t, releaseMembers("v0.3.1")))
		}, "archive checksum mismatch"},
		{"extra member", func(t *testing.T, f *fixture) {
			republish(t, f, append(releaseMembers("v0.3.0"), tarMember{name: "../evil", body: []byte("x")}))
		}, "unexpected file: ../evil"},
		{"symlink member", func(t *testing.T, f *fixture) {
			ms := releaseMembers("v0.3.0")
			ms[0] = tarMember{name: ms[0].name, typeflag: tar.TypeSymlink, linkname: "/etc/passwd"}
			republish(t, f, ms)
		}, "not a regular file"},
		{"missing member", func(t *testing.T, f *fixture) {
			republish(t, f, releaseMembers("v0.3.0")[1:])
		}, "lacks banger-agent"},
		{"binaries of another version", func(t *testing.T, f *fixture) {
			republish(t, f, releaseMembers("v0.2.0"))
		}, "not v0.3.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.setup(t, f)
			prefix := t.TempDir()
			r := runScript(t, installScript, installEnv(t, f.host.srv.URL, f.key, nonInteractive), "--prefix", prefix, "--no-services")
			if r.err == nil || !strings.Contains(r.out, c.want) {
				t.Fatalf("err %v, want %q in output:\n%s", r.err, c.want, r.out)
			}
			if !strings.Contains(r.out, "nothing was installed") {
				t.Errorf("output does not say nothing was installed:\n%s", r.out)
			}
			assertNothingInstalled(t, prefix)
		})
	}
}

// TestInstallScriptWithJq runs install.sh with a PATH that has jq but no
// python3.
func TestInstallScriptWithJq(t *testing.T) {
	needInstallTools(t)
	needTools(t, "jq")
	tools := []string{
		"bash", "curl", "openssl", "sha256sum", "tar", "gzip", "awk", "jq", "sed", "sort", "wc", "cut",
		"mktemp", "rm", "mkdir", "chmod", "install", "mv", "id", "uname", "dirname", "cat", "base64", "grep",
	}
	bin := t.TempDir()
	for _, tool := range tools {
		path, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s is not installed", tool)
		}
		if err := os.Symlink(path, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	f := newFixture(t)
	prefix := t.TempDir()
	cmd := exec.Command(filepath.Join(bin, "bash"), installScript, "--prefix", prefix, "--no-services")
	cmd.Env = append([]string{"PATH=" + bin, "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()},
		installEnv(t, f.host.srv.URL, f.key, "BANGER_INSTALL_NONINTERACTIVE=1")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	assertInstalled(t, filepath.Join(prefix, "bin"), "v0.3.0")

	cmd = exec.Command(filepath.Join(bin, "bash"), installScript, "--version", "v9.9.9", "--prefix", t.TempDir(), "--no-services")
	cmd.Env = append([]string{"PATH=" + bin, "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()},
		installEnv(t, f.host.srv.URL, f.key, "BANGER_INSTALL_NONINTERACTIVE=1")...)
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "release v9.9.9 not found in manifest (latest is v0.3.0)") {
		t.Fatalf("err %v:\n%s", err, out)
	}
}

// TestReleaseScript packages prebuilt fake binaries with release.sh and
// updates from the result, served over HTTP.
func TestReleaseScript(t *testing.T) {
	needTools(t, "bash", "openssl", "python3", "sha256sum", "tar", "gzip")
	key := newTestKey(t)
	keyPath := filepath.Join(t.TempDir(), "key.pem")
	key.writePrivatePEM(t, keyPath)
	out := filepath.Join(t.TempDir(), "publish")
	bins := func(version string) string {
		dir := t.TempDir()
		for name, body := range fakeBinaries(version) {
			if err := os.WriteFile(filepath.Join(dir, name), body, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	release := func(version string, extra ...string) scriptRun {
		args := append([]string{"--version", version, "--key", keyPath, "--out", out, "--bin", bins(version)}, extra...)
		return runScript(t, releaseScript, nil, args...)
	}

	// A key banger does not trust is refused...
	if r := release("v0.4.0"); r.err == nil || !strings.Contains(r.out, "not the key built into banger") {
		t.Fatalf("foreign key: err %v:\n%s", r.err, r.out)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("%s was created by a refused release", out)
	}
	// ...unless allowed.
	if r := release("v0.4.0", "--allow-foreign-key", "--notes", "fourth"); r.err != nil {
		t.Fatalf("%v\n%s", r.err, r.out)
	}
	if r := release("v0.4.1-rc.1", "--allow-foreign-key", "--no-latest"); r.err != nil {
		t.Fatalf("%v\n%s", r.err, r.out)
	}
	if r := release("v0.4.0", "--allow-foreign-key"); r.err == nil || !strings.Contains(r.out, "already exists") {
		t.Fatalf("re-release: err %v:\n%s", r.err, r.out)
	}
	wrong := runScript(t, releaseScript, nil, "--version", "v0.5.0", "--key", keyPath, "--out", out, "--bin", bins("v0.4.9"), "--allow-foreign-key")
	if wrong.err == nil || !strings.Contains(wrong.out, "not v0.5.0") {
		t.Fatalf("mislabelled binaries: err %v:\n%s", wrong.err, wrong.out)
	}

	for _, p := range []string{
		"manifest.json", "install.sh",
		"v0.4.0/banger-v0.4.0-linux-amd64.tar.gz", "v0.4.0/SHA256SUMS", "v0.4.0/SHA256SUMS.sig",
		"v0.4.1-rc.1/banger-v0.4.1-rc.1-linux-amd64.tar.gz",
	} {
		if _, err := os.Stat(filepath.Join(out, p)); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "v0.5.0")); err == nil {
		t.Error("the refused v0.5.0 left a directory")
	}

	srv := httptest.NewServer(http.FileServer(http.Dir(out)))
	defer srv.Close()
	manifestURL := srv.URL + "/manifest.json"
	m, err := FetchManifest(t.Context(), srv.Client(), manifestURL)
	if err != nil {
		t.Fatal(err)
	}
	if m.LatestStable != "v0.4.0" || len(m.Releases) != 2 || m.Releases[0].Version != "v0.4.1-rc.1" || m.Releases[1].Notes != "fourth" {
		t.Errorf("manifest %+v", m)
	}

	binDir := installDir(t, "v0.2.0")
	svc := &services{binDir: binDir}
	opts := Options{
		ManifestURL:    manifestURL,
		HTTPClient:     srv.Client(),
		CurrentVersion: "v0.2.0",
		BinDir:         binDir,
		PublicKeyPEM:   key.pubPEM,
		Restart:        svc.restart,
		Health:         svc.health,
	}
	res, err := Update(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.To != "v0.4.0" {
		t.Errorf("updated to %s", res.To)
	}
	for _, b := range Binaries() {
		if got := readFile(t, filepath.Join(binDir, b)); got != string(fakeBinary(b, "v0.4.0")) {
			t.Errorf("%s is %q", b, got)
		}
	}
	opts.CurrentVersion, opts.Version = "v0.4.0", "v0.4.1-rc.1"
	if _, err := Update(t.Context(), opts); err != nil {
		t.Fatal(err)
	}

	// The published install.sh installs from the same directory.
	needInstallTools(t)
	prefix := t.TempDir()
	r := runScript(t, filepath.Join(out, "install.sh"), installEnv(t, srv.URL, key, "BANGER_INSTALL_NONINTERACTIVE=1"), "--prefix", prefix, "--no-services")
	if r.err != nil {
		t.Fatalf("%v\n%s", r.err, r.out)
	}
	assertInstalled(t, filepath.Join(prefix, "bin"), "v0.4.0")
}
