// Package testenv makes unit tests independent of the environment they are
// run from. banger reads BANGER_* overrides (BANGER_ACCEL, BANGER_ENGINE,
// BANGER_RUNTIME_DIR, ...) and finds its files through XDG_STATE_HOME,
// XDG_CONFIG_HOME, XDG_RUNTIME_DIR and HOME; a test that reaches that code
// with the caller's values (a developer's BANGER_ACCEL=tcg, their real
// ~/.config) tests the caller's machine instead of the code.
//
// Isolate does it for one test (with t.Setenv); Main does it once for a
// whole test binary, from TestMain, so that parallel tests (which cannot
// use t.Setenv) and tests added later are covered too. Both clear every
// BANGER_* variable that is set (but the BANGER_TEST_* switches) and point the XDG directories, HOME and
// BANGER_RUNTIME_DIR at fresh, empty directories. `make unit` checks the result by running the
// unit tests a second time in a polluted environment.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Prefix is what every variable banger reads for its own settings starts
// with; all of them are cleared but the test switches.
const Prefix = "BANGER_"

// TestPrefix starts the switches of the test runs themselves (such as
// BANGER_TEST_STRICT, set by make unit: see internal/testreq). They are
// the test runner's choice, not the caller's environment leaking in, and
// are kept.
const TestPrefix = "BANGER_TEST_"

// Dirs are the directories an isolated environment points at, all empty
// and inside one temporary directory (short, for unix socket paths).
type Dirs struct {
	Home    string // HOME
	State   string // XDG_STATE_HOME
	Config  string // XDG_CONFIG_HOME
	Runtime string // XDG_RUNTIME_DIR
	// BangerRuntime is BANGER_RUNTIME_DIR, the only BANGER_* variable set:
	// it wins over /etc/banger/install.json, so that a banger service
	// installed on the machine is never reached (XDG_RUNTIME_DIR/banger).
	BangerRuntime string
}

// vars is every variable Isolate and Main set, with its value in d.
func (d Dirs) vars() [][2]string {
	return [][2]string{
		{"HOME", d.Home},
		{"XDG_STATE_HOME", d.State},
		{"XDG_CONFIG_HOME", d.Config},
		{"XDG_RUNTIME_DIR", d.Runtime},
		{"BANGER_RUNTIME_DIR", d.BangerRuntime},
		// Not read by banger, but by tools tests may run (git, ssh).
		{"XDG_DATA_HOME", filepath.Join(d.Home, ".local", "share")},
		{"XDG_CACHE_HOME", filepath.Join(d.Home, ".cache")},
	}
}

func newDirs(base string) (Dirs, error) {
	d := Dirs{
		Home:    filepath.Join(base, "home"),
		State:   filepath.Join(base, "state"),
		Config:  filepath.Join(base, "config"),
		Runtime: filepath.Join(base, "run"),
	}
	d.BangerRuntime = filepath.Join(d.Runtime, "banger")
	for _, p := range []string{d.Home, d.State, d.Config, d.Runtime} {
		if err := os.Mkdir(p, 0o700); err != nil {
			return Dirs{}, fmt.Errorf("testenv: %w", err)
		}
	}
	return d, nil
}

// Set is the names of the BANGER_* variables set in environ (os.Environ's
// form), but the BANGER_TEST_* switches.
func Set(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, Prefix) && !strings.HasPrefix(k, TestPrefix) {
			out = append(out, k)
		}
	}
	return out
}

// Isolate clears every BANGER_* variable for the rest of t and points HOME,
// the XDG directories and BANGER_RUNTIME_DIR at fresh empty directories,
// which it returns.
// Like t.Setenv, it cannot be used in a parallel test (use Main there).
func Isolate(t testing.TB) Dirs {
	t.Helper()
	base, err := os.MkdirTemp("", "benv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	d, err := newDirs(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Set(os.Environ()) {
		t.Setenv(k, "") // restored when t ends
		os.Unsetenv(k)
	}
	for _, kv := range d.vars() {
		t.Setenv(kv[0], kv[1])
	}
	return d
}

// Main isolates the whole test binary, runs its tests and exits with
// their status. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	base, err := os.MkdirTemp("", "benv")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer os.RemoveAll(base)
	d, err := newDirs(base)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	for _, k := range Set(os.Environ()) {
		os.Unsetenv(k)
	}
	for _, kv := range d.vars() {
		os.Setenv(kv[0], kv[1])
	}
	return m.Run()
}
