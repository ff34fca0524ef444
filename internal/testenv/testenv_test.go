package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

const childEnv = "BANGER_TESTENV_CHILD"

// TestChildRequire is run by TestRequire in a child process: it requires
// something that is never there.
func TestChildRequire(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("run by TestRequire")
	}
	RequireTools(t, "apt-get install nothing", "banger-no-such-tool")
	t.Log("carried on after a missing requirement")
}

// TestRequire checks both modes: strict fails and names what is missing,
// plain skips with the reason; neither carries on.
func TestRequire(t *testing.T) {
	for _, strict := range []string{"1", ""} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestChildRequire$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"=1", StrictEnv+"="+strict)
		out, err := cmd.CombinedOutput()
		s := string(out)
		if strings.Contains(s, "carried on") || !strings.Contains(s, "not installed: banger-no-such-tool (apt-get install nothing)") {
			t.Errorf("strict=%q:\n%s", strict, s)
		}
		if strict == "1" && (err == nil || !strings.Contains(s, "--- FAIL: TestChildRequire")) {
			t.Errorf("strict run did not fail: %v\n%s", err, s)
		}
		if strict == "" && (err != nil || !strings.Contains(s, "--- SKIP: TestChildRequire")) {
			t.Errorf("plain run did not skip: %v\n%s", err, s)
		}
	}
}

func TestRequireToolsFound(t *testing.T) {
	t.Setenv(StrictEnv, "1")
	paths := RequireTools(t, "", "sh")
	if len(paths) != 1 || !strings.HasSuffix(paths[0], "/sh") {
		t.Errorf("paths = %v", paths)
	}
}
