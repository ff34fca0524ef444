//go:build e2e

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// install is a second banger installation, in its own directories, whose
// binaries the update scenario replaces. Its daemon starts on demand inside
// the suite's network namespace.
type install struct {
	bin     string
	environ []string
}

func (in *install) cli(t *testing.T, args ...string) result {
	t.Helper()
	ctx := ctxFor(t, 5*time.Minute)
	name, argv := filepath.Join(in.bin, "banger"), args
	if e.netns {
		name, argv = "nsenter", append([]string{"-t", fmt.Sprint(e.daemonPID), "-n", filepath.Join(in.bin, "banger")}, args...)
	}
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Env = in.environ
	return runCmd(cmd)
}

// digest hashes the files in dir (all of them, or only those named), to
// prove a refused update changed nothing.
func digest(t *testing.T, dir string, only ...string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, en := range ents {
		if len(only) > 0 && !slices.Contains(only, en.Name()) {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, en.Name()))
		fmt.Fprintf(h, "%s %x\n", en.Name(), sha256.Sum256(b))
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

func writeKey(t *testing.T, dir, name string) (priv, pub string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pder, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	priv, pub = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".pub")
	os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644)
	return priv, pub
}

// TestUpdate: `banger update` against releases served locally and signed
// with a test key: check, unknown version and bad signature refused with
// nothing changed, dry run, a real swap whose new daemon adopts the running
// VM, and a release whose daemon cannot start rolled back automatically with
// the VM still answering.
func TestUpdate(t *testing.T) {
	ctx := ctxFor(t, 15*time.Minute)
	work := t.TempDir()
	_, thisFile, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(thisFile), "..", "..")

	// The installation: a copy of the suite's binaries.
	in := &install{bin: filepath.Join(work, "bin")}
	os.MkdirAll(in.bin, 0o755)
	for _, b := range []string{"banger", "bangerd", "banger-agent", "banger-helper"} {
		copyFile(t, filepath.Join(e.bin, b), filepath.Join(in.bin, b), 0o755)
	}
	root := filepath.Join(work, "home")
	for _, d := range []string{"state", "config/banger", "run"} {
		os.MkdirAll(filepath.Join(root, d), 0o700)
	}
	// The suite's KVM verdict saves this installation a probe boot.
	if b, err := os.ReadFile(filepath.Join(e.root, "state/banger/kvm-probe.json")); err == nil {
		os.MkdirAll(filepath.Join(root, "state/banger"), 0o700)
		os.WriteFile(filepath.Join(root, "state/banger/kvm-probe.json"), b, 0o600)
	}
	os.WriteFile(filepath.Join(root, "config/banger/config.toml"), []byte(
		"vcpu = 1\nmemory_mib = 512\ndisk_size = \"256M\"\nnetwork = \"none\"\ndns_listen = \"127.0.0.1:42070\"\n"), 0o600)
	in.environ = append(os.Environ(),
		"XDG_STATE_HOME="+filepath.Join(root, "state"),
		"XDG_CONFIG_HOME="+filepath.Join(root, "config"),
		"XDG_RUNTIME_DIR="+filepath.Join(root, "run"),
		"BANGER_RUNTIME_DIR="+filepath.Join(root, "run/banger"),
		"NO_COLOR=1")
	t.Cleanup(func() {
		in.cli(t, "vm", "delete", "upd")
		in.cli(t, "daemon", "stop")
	})
	oldVersion := strings.TrimSpace(must(t, in.cli(t, "--version")).stdout)

	// Releases: v9.0.0 (real banger and bangerd built at that version) and
	// v9.0.1, whose bangerd passes its checks but exits 1 as a daemon.
	rel := filepath.Join(work, "rel")
	priv, pub := writeKey(t, work, "release")
	_, otherPub := writeKey(t, work, "other")
	good := filepath.Join(work, "good")
	os.MkdirAll(good, 0o755)
	for _, b := range []string{"banger", "bangerd"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-s -w -X main.version=v9.0.0", "-o", filepath.Join(good, b), "./cmd/"+b)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b, err, out)
		}
	}
	broken := filepath.Join(work, "broken")
	os.MkdirAll(broken, 0o755)
	for _, b := range []string{"banger-agent", "banger-helper"} {
		copyFile(t, filepath.Join(e.bin, b), filepath.Join(good, b), 0o755)
		copyFile(t, filepath.Join(e.bin, b), filepath.Join(broken, b), 0o755)
	}
	os.WriteFile(filepath.Join(broken, "banger"), []byte("#!/bin/sh\necho banger version v9.0.1\n"), 0o755)
	os.WriteFile(filepath.Join(broken, "bangerd"), []byte(
		"#!/bin/sh\ncase \"$1\" in --version) echo v9.0.1 ;; --check-migrations) exit 0 ;; *) echo broken daemon >&2; exit 1 ;; esac\n"), 0o755)
	for _, r := range []struct {
		version, bin string
		extra        []string
	}{{"v9.0.0", good, nil}, {"v9.0.1", broken, []string{"--no-latest"}}} {
		args := append([]string{filepath.Join(repo, "scripts/release.sh"), "--version", r.version, "--key", priv,
			"--out", rel, "--bin", r.bin, "--allow-foreign-key"}, r.extra...)
		if out, err := exec.CommandContext(ctx, "bash", args...).CombinedOutput(); err != nil {
			t.Fatalf("release %s: %v\n%s", r.version, err, out)
		}
	}
	l := listenInDaemonNS(t)
	srv := &http.Server{Handler: http.FileServer(http.Dir(rel))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	manifest := "http://" + l.Addr().String() + "/manifest.json"
	upd := func(args ...string) result {
		return in.cli(t, append([]string{"update", "--manifest-url", manifest, "--pubkey-file", pub}, args...)...)
	}

	// A VM that must survive every restart below.
	deb := filepath.Join(os.Getenv("BANGER_FIXTURES"), "kernel/linux-image.deb")
	must(t, in.cli(t, "kernel", "import", "k", "--from", deb))
	must(t, in.cli(t, "image", "register", "img", "--kernel", "k",
		"--rootfs", filepath.Join(e.root, "state/banger/images/debian/rootfs.ext4")))
	must(t, in.cli(t, "vm", "create", "--name", "upd", "--image", "img"))
	boot := func() string {
		t.Helper()
		return strings.TrimSpace(must(t, in.cli(t, "vm", "exec", "upd", "--", "cat", "/proc/sys/kernel/random/boot_id")).stdout)
	}
	bootBefore := boot()
	before := digest(t, in.bin)

	r := must(t, upd("--check"))
	if !strings.Contains(r.stdout, "update available") || !strings.Contains(r.stdout, "v9.0.0") {
		t.Errorf("--check: %s", r)
	}
	r = upd("--to", "v9.9.9")
	if r.code == 0 || !strings.Contains(r.stderr, "v9.9.9 not found") {
		t.Errorf("unknown version: %s", r)
	}
	r = in.cli(t, "update", "--manifest-url", manifest, "--pubkey-file", otherPub)
	if r.code == 0 || !strings.Contains(r.stderr, "signature") {
		t.Errorf("release signed by another key: %s", r)
	}
	r = must(t, upd("--dry-run"))
	if !strings.Contains(r.stdout, "dry run") {
		t.Errorf("dry run: %s", r)
	}
	if digest(t, in.bin) != before {
		t.Fatal("a refused update or a dry run changed the installed binaries")
	}
	if v := strings.TrimSpace(must(t, in.cli(t, "--version")).stdout); v != oldVersion {
		t.Errorf("version after dry run: %q", v)
	}

	// The real update: new binaries, new daemon, same VM.
	must(t, upd())
	if v := must(t, in.cli(t, "--version")).stdout; !strings.Contains(v, "v9.0.0") {
		t.Errorf("banger --version after update: %q", v)
	}
	if _, err := os.Stat(filepath.Join(in.bin, "bangerd.previous")); err != nil {
		t.Errorf("no bangerd.previous: %v", err)
	}
	if r := must(t, in.cli(t, "daemon", "status")); !strings.Contains(r.stdout, "v9.0.0") {
		t.Errorf("daemon after update: %s", r.stdout)
	}
	if b := boot(); b != bootBefore {
		t.Errorf("the VM rebooted across the update: %s -> %s", bootBefore, b)
	}

	// A release whose daemon cannot start: rolled back, VM still up.
	// The rollback puts back the binaries (their .previous copies are
	// used up by it).
	binaries := []string{"banger", "bangerd", "banger-agent", "banger-helper"}
	afterGood := digest(t, in.bin, binaries...)
	r = upd("--to", "v9.0.1")
	if r.code == 0 || !strings.Contains(r.stderr, "rolled back") {
		t.Errorf("broken release: want an automatic rollback, got %s", r)
	}
	if digest(t, in.bin, binaries...) != afterGood {
		t.Error("the rollback did not restore the v9.0.0 binaries")
	}
	if r := must(t, in.cli(t, "daemon", "status")); !strings.Contains(r.stdout, "v9.0.0") {
		t.Errorf("daemon after rollback: %s", r.stdout)
	}
	if b := boot(); b != bootBefore {
		t.Errorf("the VM rebooted across the rollback: %s -> %s", bootBefore, b)
	}
}
