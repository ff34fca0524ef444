package testenv

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestIsolate(t *testing.T) {
	t.Setenv("BANGER_ACCEL", "tcg")
	t.Setenv("BANGER_SOMETHING_NEW", "x")
	t.Setenv("XDG_STATE_HOME", "/caller/state")
	t.Setenv("BANGER_TEST_STRICT", "1")
	t.Run("isolated", func(t *testing.T) {
		d := Isolate(t)
		if os.Getenv("BANGER_TEST_STRICT") != "1" {
			t.Error("the test run's own switch BANGER_TEST_STRICT was cleared")
		}
		for _, k := range []string{"BANGER_ACCEL", "BANGER_SOMETHING_NEW"} {
			if v, ok := os.LookupEnv(k); ok {
				t.Errorf("%s=%q is still set", k, v)
			}
		}
		for k, want := range map[string]string{"HOME": d.Home, "XDG_STATE_HOME": d.State, "XDG_CONFIG_HOME": d.Config,
			"XDG_RUNTIME_DIR": d.Runtime, "BANGER_RUNTIME_DIR": d.BangerRuntime} {
			if got := os.Getenv(k); got != want || want == "" {
				t.Errorf("%s=%q, want %q", k, got, want)
			}
		}
		for _, p := range []string{d.Home, d.State, d.Config, d.Runtime} {
			if entries, err := os.ReadDir(p); err != nil || len(entries) != 0 {
				t.Errorf("%s: %v %v, want an empty directory", p, entries, err)
			}
		}
		if !strings.HasPrefix(d.BangerRuntime, d.Runtime+"/") {
			t.Errorf("BANGER_RUNTIME_DIR %s is not under XDG_RUNTIME_DIR %s", d.BangerRuntime, d.Runtime)
		}
	})
	// The caller's values come back once the test is over.
	if os.Getenv("BANGER_ACCEL") != "tcg" || os.Getenv("BANGER_SOMETHING_NEW") != "x" || os.Getenv("XDG_STATE_HOME") != "/caller/state" {
		t.Errorf("environment not restored: %q %q %q", os.Getenv("BANGER_ACCEL"), os.Getenv("BANGER_SOMETHING_NEW"), os.Getenv("XDG_STATE_HOME"))
	}
}

func TestSet(t *testing.T) {
	got := Set([]string{"BANGER_A=1", "PATH=/bin", "BANGER_B=", "XBANGER_C=1", "BANGER_D=x=y", "BANGER_TEST_STRICT=1"})
	if !slices.Equal(got, []string{"BANGER_A", "BANGER_B", "BANGER_D"}) {
		t.Errorf("Set: %q", got)
	}
}

// `make unit` runs the unit tests again with every BANGER_* variable that
// banger's code and scripts read set to a hostile value (POLLUTED_ENV in
// the Makefile). A variable added to the code must be added there too.
func TestPollutedRunCoversEveryVariable(t *testing.T) {
	root := moduleRoot(t)
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	polluted := pollutedVars(string(makefile))
	for _, k := range []string{"XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "HOME"} {
		if !polluted[k] {
			t.Errorf("POLLUTED_ENV does not set %s", k)
		}
	}
	goVar := regexp.MustCompile(`"(BANGER_[A-Z0-9_]+)"`)
	shVar := regexp.MustCompile(`\$[{(]?(BANGER_[A-Z0-9_]+)`)
	read := map[string]string{} // variable -> a file that reads it
	err = filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if e.IsDir() {
			if rel != "." && (strings.HasPrefix(e.Name(), ".") && rel != ".ci" || rel == "bin" || rel == "dist") {
				return filepath.SkipDir
			}
			return nil
		}
		var re *regexp.Regexp
		switch {
		case strings.HasSuffix(p, "_test.go"):
			return nil // the tests' own switches
		case strings.HasSuffix(p, ".go"):
			re = goVar
		case strings.HasSuffix(p, ".sh"), rel == "Makefile", rel == filepath.Join(".ci", "run"):
			re = shVar
		default:
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			if !strings.HasPrefix(m[1], TestPrefix) { // the test runs' own switches
				read[m[1]] = rel
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(read) < 10 {
		t.Fatalf("found only %d variables read: %v", len(read), read)
	}
	for k, file := range read {
		if !polluted[k] {
			t.Errorf("%s reads %s, which POLLUTED_ENV in the Makefile does not set", file, k)
		}
	}
}

// pollutedVars is the set of variables the Makefile's POLLUTED_ENV sets.
func pollutedVars(makefile string) map[string]bool {
	var def strings.Builder
	in := false
	for line := range strings.Lines(makefile) {
		if strings.HasPrefix(line, "POLLUTED_ENV :=") {
			in = true
			line = strings.TrimPrefix(line, "POLLUTED_ENV :=")
		}
		if !in {
			continue
		}
		trimmed := strings.TrimRight(line, "\n")
		def.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
		if !strings.HasSuffix(trimmed, "\\") {
			break
		}
	}
	out := map[string]bool{}
	for _, f := range strings.Fields(def.String()) {
		if k, _, ok := strings.Cut(f, "="); ok {
			out[k] = true
		}
	}
	return out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
