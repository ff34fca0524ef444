//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// pythonForTests is Debian's python3, where python3-venv and
// python3-pytest install (scripts/quickstart.sh).
const pythonForTests = "/usr/bin/python3"

// TestPythonSDK installs the Python SDK into a fresh venv with
// `pip install --no-index` (no package index is reachable) and runs its
// tests under Debian's pytest: the unit tests against a fake daemon, and
// tests/test_real.py against this run's daemon, sharing one Sandbox; then
// checks that the Sandbox's VM was deleted when its block ended.
func TestPythonSDK(t *testing.T) {
	ctx := ctxFor(t, 15*time.Minute)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	venv := filepath.Join(work, "venv")
	// System site packages: pytest is Debian's; the SDK itself comes
	// only from the repository.
	must(t, e.command(ctx, "", pythonForTests, "-m", "venv", "--system-site-packages", venv))
	py := filepath.Join(venv, "bin", "python")
	must(t, e.command(ctx, "", py, "-m", "pip", "install", "--no-index", "--no-cache-dir", filepath.Join(repo, "sdk/python")))
	// The tests import the installed package, not the source tree.
	where := must(t, e.command(ctx, "", py, "-c", "import banger; print(banger.__file__)")).stdout
	if !strings.HasPrefix(where, venv) {
		t.Fatalf("banger imported from %s, not from the venv", where)
	}
	tests := filepath.Join(work, "tests")
	os.MkdirAll(tests, 0o755)
	for _, f := range []string{"test_unit.py", "test_real.py"} {
		b, err := os.ReadFile(filepath.Join(repo, "sdk/python/tests", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(tests, f), b, 0o644)
	}

	nameFile := filepath.Join(work, "sandbox-name")
	cmd := exec.CommandContext(ctx, py, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", tests)
	cmd.Dir = work
	cmd.Env = append(append([]string{}, e.environ...),
		"BANGER_TEST_PYTHON_SDK=1",
		"BANGER_TEST_PYTHON_SDK_NAME_FILE="+nameFile,
		"PYTHONDONTWRITEBYTECODE=1",
	)
	t.Cleanup(func() {
		// Whatever pytest did, never leave its VM behind.
		if b, err := os.ReadFile(nameFile); err == nil && len(b) > 0 {
			c, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			e.cli(c, "", "vm", "delete", string(b))
		}
	})
	r := runCmd(cmd)
	t.Logf("pytest:\n%s%s", r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("pytest failed (exit %d)\ndaemon log tail:\n%s", r.code, tail(e.daemonLog(), 40))
	}
	// Every test ran: none skipped (the real ones skip without a daemon).
	summary := regexp.MustCompile(`=+ (\d+) passed(.*) in `).FindStringSubmatch(r.stdout)
	if summary == nil || summary[2] != "" {
		t.Fatalf("pytest summary is not all-passed: %q", summary)
	}
	if !strings.Contains(r.stdout, "test_real.py::test_files PASSED") || !strings.Contains(r.stdout, "test_unit.py::test_exec_stdin_env_cwd_and_exit PASSED") {
		t.Fatal("the real or the unit tests did not run")
	}

	name, err := os.ReadFile(nameFile)
	if err != nil || len(name) == 0 {
		t.Fatalf("the real tests did not report their sandbox: %v", err)
	}
	vms, err := e.listVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vms {
		if v.Name == string(name) {
			t.Errorf("sandbox %s still exists after its with-block: %+v", name, v)
		}
	}
	// pip built the wheel without writing into the repository.
	if out := must(t, e.command(ctx, "", "git", "-C", repo, "status", "--porcelain", "sdk/python")).stdout; strings.TrimSpace(out) != "" {
		t.Errorf("the install or the tests left files in sdk/python:\n%s", out)
	}
}
