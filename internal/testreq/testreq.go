// Package testreq decides what a test does when something it needs is
// missing on this machine (a tool, a fixture, a reference file): under
// `make unit` and `make test`, which set BANGER_TEST_STRICT=1, it fails and
// says what is missing; under a plain `go test` it skips with the reason.
// Only tests import it.
package testreq

import (
	"os"
	"strings"
	"testing"

	"banger/internal/hosttools"
)

// StrictEnv is the variable that turns Require's skips into failures.
const StrictEnv = "BANGER_TEST_STRICT"

// Strict reports whether missing requirements fail tests.
func Strict() bool { return os.Getenv(StrictEnv) == "1" }

// Require does nothing when ok; otherwise it fails the test (strict) or
// skips it (not strict), both with why.
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if Strict() {
		t.Fatalf("required by %s=1 but not available: %s", StrictEnv, why)
	}
	t.Skipf("skipping: %s (with %s=1 this fails)", why, StrictEnv)
}

// RequireTools requires each tool, found as banger finds it
// (hosttools.Path: $PATH, then the sbin directories), and returns their
// paths in order. hint says how to install them.
func RequireTools(t testing.TB, hint string, tools ...string) []string {
	t.Helper()
	var paths, missing []string
	for _, tool := range tools {
		p, err := hosttools.Path(tool)
		if err != nil {
			missing = append(missing, tool)
			continue
		}
		paths = append(paths, p)
	}
	if len(missing) > 0 {
		why := "not installed: " + strings.Join(missing, ", ")
		if hint != "" {
			why += " (" + hint + ")"
		}
		Require(t, false, why)
	}
	return paths
}
