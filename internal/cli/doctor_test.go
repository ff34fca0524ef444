package cli

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testenv"
)

// fakeBangerd puts a bangerd on an otherwise empty PATH that answers
// `bangerd doctor` with body (and exit code code), recording its
// arguments; it returns the file the arguments land in.
func fakeBangerd(t *testing.T, body string, code int) string {
	t.Helper()
	testenv.Isolate(t)
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$*\" > '" + args + "'\nprintf '%s\\n' '" + body + "'\nprintf 'note from bangerd\\n' >&2\nexit " + string(rune('0'+code)) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "bangerd"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	return args
}

func runDoctorCLI(t *testing.T, args ...string) (error, string, string) {
	t.Helper()
	var so, se bytes.Buffer
	app := &App{Version: "test", Stdin: strings.NewReader(""), Stdout: &so, Stderr: &se,
		Getenv: func(k string) string { return os.Getenv(k) }}
	root := app.rootCmd()
	root.SetArgs(append([]string{"doctor"}, args...))
	return root.Execute(), so.String(), se.String()
}

// banger doctor runs `bangerd doctor` and prints its report as it always
// did: one line per check, a fix under a check that did not pass, exit
// status 1 when one failed.
func TestDoctorRunsInBangerd(t *testing.T) {
	argsFile := fakeBangerd(t, `[{"name":"qemu","status":"PASS","detail":"QEMU 7.2","fix":"never shown"},`+
		`{"name":"kvm","status":"FAIL","detail":"no /dev/kvm","fix":"load kvm"},{"name":"store","status":"WARN","detail":"old"}]`, 0)
	err, out, errOut := runDoctorCLI(t, "--probe")
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 1 {
		t.Fatalf("a failed check: %v", err)
	}
	want := "PASS  qemu       QEMU 7.2\nFAIL  kvm        no /dev/kvm\n      fix: load kvm\nWARN  store      old\n"
	if out != want {
		t.Errorf("output:\n%q\nwant\n%q", out, want)
	}
	if errOut != "note from bangerd\n" {
		t.Errorf("bangerd's stderr: %q", errOut)
	}
	if b, _ := os.ReadFile(argsFile); string(b) != "doctor --probe\n" {
		t.Errorf("bangerd ran with %q", b)
	}

	err, out, _ = runDoctorCLI(t, "--json")
	if !errors.As(err, &ee) || !strings.Contains(out, `"fix": "load kvm"`) || !strings.HasPrefix(out, "[\n  {\n    \"name\": \"qemu\"") {
		t.Errorf("--json: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(argsFile); string(b) != "doctor\n" {
		t.Errorf("bangerd ran with %q", b)
	}
}

func TestDoctorAllPassing(t *testing.T) {
	fakeBangerd(t, `[{"name":"qemu","status":"PASS","detail":"ok"},{"name":"dns","status":"SKIP","detail":"no daemon"}]`, 0)
	if err, out, _ := runDoctorCLI(t); err != nil || out != "PASS  qemu       ok\nSKIP  dns        no daemon\n" {
		t.Errorf("%v %q", err, out)
	}
}

func TestDoctorBangerdProblems(t *testing.T) {
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`[{"name":"qemu"`, 0, "unreadable report"},
		{`[]`, 2, "exit status 2"},
	} {
		fakeBangerd(t, c.body, c.code)
		if err, out, _ := runDoctorCLI(t); err == nil || !strings.Contains(err.Error(), c.want) || out != "" {
			t.Errorf("%q exit %d: %v, out %q", c.body, c.code, err, out)
		}
	}
	// No bangerd at all: a clear error.
	testenv.Isolate(t)
	t.Setenv("PATH", t.TempDir())
	if err, _, _ := runDoctorCLI(t); err == nil || !strings.Contains(err.Error(), "bangerd, which was not found") {
		t.Errorf("without bangerd: %v", err)
	}
}
