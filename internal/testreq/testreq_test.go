package testreq

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

const childEnv = "BANGER_TESTREQ_CHILD"

// TestRequire checks both modes in a child process (the same test, which
// then requires a tool that is never there): strict fails and names what
// is missing, plain skips with the reason; neither carries on.
func TestRequire(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		RequireTools(t, "apt-get install nothing", "banger-no-such-tool")
		t.Log("carried on after a missing requirement")
		return
	}
	for _, strict := range []string{"1", ""} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequire$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"=1", StrictEnv+"="+strict)
		out, err := cmd.CombinedOutput()
		s := string(out)
		if strings.Contains(s, "carried on") || !strings.Contains(s, "not installed: banger-no-such-tool (apt-get install nothing)") {
			t.Errorf("strict=%q:\n%s", strict, s)
		}
		if strict == "1" && (err == nil || !strings.Contains(s, "--- FAIL: TestRequire")) {
			t.Errorf("strict run did not fail: %v\n%s", err, s)
		}
		if strict == "" && (err != nil || !strings.Contains(s, "--- SKIP: TestRequire")) {
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
