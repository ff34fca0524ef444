//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestQuickstartWithoutGo runs the README's first command on a machine
// without a Go as new as go.mod asks for: /usr/local (and so /usr/local/go)
// is hidden under an empty tmpfs in a private mount namespace, and PATH is
// Debian's default, so the only go left is Debian's golang-go (1.19, which
// the quick start installs when it is missing). The quick start must fetch
// Go from the module proxy with it, install it in /usr/local/go and build;
// make must then find that Go without a PATH change, and a second run must
// find it too instead of fetching it again.
//
// It runs the quick start with --build-only (the VM part is what every
// other scenario covers), in a copy of the source so that the suite's own
// binaries are not rebuilt under it. The toolchain download is cached in
// the module cache (outside the repository); the first run on a machine
// downloads it once (about 70 MB).
func TestQuickstartWithoutGo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it hides /usr/local in a private mount namespace")
	}
	ctx := ctxFor(t, 20*time.Minute)
	_, thisFile, _, _ := runtime.Caller(0)
	repo := filepath.Join(filepath.Dir(thisFile), "..", "..")
	src := filepath.Join(t.TempDir(), "banger")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	cp := exec.CommandContext(ctx, "sh", "-c", `tar -C "$1" --exclude=./bin --exclude=./dist --exclude=./.git -cf - . | tar -C "$2" -xf -`, "sh", repo, src)
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("copy the source: %v\n%s", err, out)
	}

	script := `
mount -t tmpfs -o mode=755 banger-no-usr-local /usr/local
cd "$1"
test ! -e /usr/local/go
echo "== go before: $(command -v go || echo none) $(go env GOVERSION 2>/dev/null)"
# Something already in /usr/local/go is never replaced.
mkdir /usr/local/go
if scripts/quickstart.sh --build-only; then echo "== ran over /usr/local/go"; exit 1; fi
rmdir /usr/local/go
echo "== install"
scripts/quickstart.sh --build-only
/usr/local/go/bin/go version
/usr/local/go/bin/go version bin/banger
echo "== make"
rm -f bin/banger
# PATH has no /usr/local/go/bin and /usr/bin/go is older: make finds the
# installed Go by itself.
make -s build
/usr/local/go/bin/go version bin/banger
echo "== second run"
scripts/quickstart.sh --build-only
`
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "--", "bash", "-euo", "pipefail", "-c", script, "sh", src)
	// Debian's PATH for root, without the go the suite itself was built
	// with; the caller's Go settings that would pick a toolchain are
	// dropped, the rest (proxy, module cache) kept.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "GOROOT", k == "GOTOOLCHAIN", k == "GOFLAGS", k == "GOBIN":
		case k == "HOME", strings.HasPrefix(k, "GO"), strings.HasSuffix(strings.ToLower(k), "_proxy"):
			cmd.Env = append(cmd.Env, kv)
		}
	}
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	if err != nil {
		t.Fatalf("quick start without Go: %v\n%s", err, out)
	}
	refused, rest, _ := strings.Cut(out, "== install")
	first, second, _ := strings.Cut(rest, "== second run")
	gover := goModVersion(t, repo)
	if want := "quickstart: /usr/local/go holds no Go as new as the " + gover; !strings.Contains(refused, want) || strings.Contains(refused, "fetching") {
		t.Errorf("an empty /usr/local/go: want %q before any download, got:\n%s", want, refused)
	}
	for _, want := range []string{
		"fetching Go " + gover + " (golang.org/toolchain@v0.0.1-go" + gover + ".linux-",
		"installing Go " + gover + " in /usr/local/go",
		"go version go" + gover + " linux/",
		"bin/banger: go" + gover + "\n== make",
		"== make\nbin/banger: go" + gover + "\n",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("first run: no %q in:\n%s", want, first)
		}
	}
	if strings.Contains(second, "fetching") || strings.Contains(second, "installing Go") || !strings.Contains(second, "==> building") {
		t.Errorf("the second run did not just build with the installed Go:\n%s", second)
	}
	if t.Failed() {
		return
	}
	t.Logf("%s", out)
}

// goModVersion is the version go.mod's go line names.
func goModVersion(t *testing.T, repo string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			return v
		}
	}
	t.Fatal("no go line in go.mod")
	return ""
}
