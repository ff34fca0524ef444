package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad egress input is refused by the CLI before any daemon is asked.
func TestEgressFlagsRefusedBeforeTheDaemon(t *testing.T) {
	dir := t.TempDir()
	badFile := filepath.Join(dir, "bad.toml")
	os.WriteFile(badFile, []byte("allow = [\"ok.test\"]\nsurprise = 1\n"), 0o600)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"vm", "create", "--allow", "exa mple.com"}, "egress policy"},
		{[]string{"vm", "create", "--allow", "10.1.2.3/8"}, "egress policy"},
		{[]string{"vm", "create", "--egress", "sometimes"}, "egress mode"},
		{[]string{"vm", "create", "--egress", "none", "--allow", "a.test"}, "cannot be combined"},
		{[]string{"vm", "create", "--nat", "--egress", "allow", "--allow", "a.test"}, "--nat is --egress all"},
		{[]string{"vm", "create", "--network", "none", "--egress", "all"}, "needs a network"},
		{[]string{"vm", "create", "--secret", "K"}, "--secret needs --secret-host"},
		{[]string{"vm", "create", "--secret-host", "a.test"}, "--secret-host needs --secret"},
		{[]string{"vm", "create", "--policy", badFile}, "unknown key"},
		{[]string{"vm", "create", "--policy", filepath.Join(dir, "missing.toml")}, "--policy"},
		{[]string{"vm", "run", "--allow", "*.*.x.test", "--", "true"}, "egress policy"},
		{[]string{"vm", "set", "box", "--allow", "a b"}, "egress policy"},
	}
	for _, c := range cases {
		code, _, stderr := run(t, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: code %d, stderr %q; want %q", c.args, code, stderr, c.want)
		}
	}
}

// vm set sends the merged policy (file, then flags) to the daemon, and
// vm show prints it.
func TestEgressSetAndShow(t *testing.T) {
	f := startFakeDaemon(t, map[string]string{
		"PATCH /vms/box": `{}`,
		"GET /vms/box": `{"id":"1","name":"box","state":"stopped","network":"bridge","ip":"172.16.0.2",
			"egress":{"egress":"allow","allow":["api.test:443","*.pkg.test"],"secrets":[{"name":"MY_KEY","hosts":["api.test"]}]}}`,
	})
	pol := filepath.Join(t.TempDir(), "p.toml")
	os.WriteFile(pol, []byte("allow = [\"*.pkg.test\"]\n[[secret]]\nname = \"MY_KEY\"\nhosts = [\"api.test\"]\n"), 0o600)
	if code, _, se := runIn(t, f.layout, "vm", "set", "box", "--policy", pol, "--allow", "api.test:443"); code != 0 {
		t.Fatalf("set: %s", se)
	}
	if !f.called("PATCH /vms/box") {
		t.Fatal("set did not reach the daemon")
	}
	code, out, se := runIn(t, f.layout, "vm", "show", "box")
	if code != 0 {
		t.Fatal(se)
	}
	for _, want := range []string{"egress", "allow api.test:443, *.pkg.test", "secret MY_KEY as $MY_KEY for api.test"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
}

func TestSecretRefusedBeforeTheDaemon(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	os.WriteFile(big, make([]byte, 70<<10), 0o600)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"secret", "set", "../x"}, "secret name"},
		{[]string{"secret", "set", "K", "--from-env", "A", "--from-file", "b"}, "at most one"},
		{[]string{"secret", "set", "K", "--from-file", "/nonexistent/key"}, "--from-file"},
		{[]string{"secret", "set", "K", "--from-file", big}, "larger than"},
		{[]string{"secret", "set", "K", "--from-env", "BANGER_TEST_UNSET_VAR"}, "not set"},
		{[]string{"secret", "set", "K"}, "empty value"}, // empty stdin
	}
	t.Setenv("BANGER_TEST_UNSET_VAR", "")
	for _, c := range cases {
		code, _, stderr := run(t, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: code %d, stderr %q; want %q", c.args, code, stderr, c.want)
		}
	}
}

func TestSecretCommandsReachTheDaemon(t *testing.T) {
	f := startFakeDaemon(t, map[string]string{
		"PUT /secrets/MY_KEY":    ``,
		"GET /secrets":           `{"names":["MY_KEY","other"]}`,
		"DELETE /secrets/MY_KEY": ``,
	})
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, []byte("sk-test\n"), 0o600)
	if code, _, se := runIn(t, f.layout, "secret", "set", "MY_KEY", "--from-file", key); code != 0 {
		t.Fatal(se)
	}
	code, out, se := runIn(t, f.layout, "secret", "list")
	if code != 0 || out != "MY_KEY\nother\n" {
		t.Fatalf("list: %d %q %s", code, out, se)
	}
	if code, _, se := runIn(t, f.layout, "secret", "rm", "MY_KEY"); code != 0 {
		t.Fatal(se)
	}
	for _, k := range []string{"PUT /secrets/MY_KEY", "GET /secrets", "DELETE /secrets/MY_KEY"} {
		if !f.called(k) {
			t.Errorf("%s not called", k)
		}
	}
}

func TestVMEgressPrintsRecords(t *testing.T) {
	f := startFakeDaemon(t, map[string]string{
		"GET /vms/box/egress": `{"time":"2026-01-02T03:04:05Z","vm":"box","name":"api.test","ip":"10.0.0.2","port":443,"proto":"tcp","kind":"tls-intercept","verdict":"allow","bytes_up":10,"bytes_down":20,"secret":true,"secrets":["MY_KEY"]}
not json
{"time":"2026-01-02T03:04:06Z","vm":"box","name":"other.test","ip":"10.0.0.3","port":443,"proto":"tcp","verdict":"deny","reason":"not allowed","bytes_up":0,"bytes_down":0,"secret":false}
`,
	})
	code, out, se := runIn(t, f.layout, "vm", "egress", "box")
	if code != 0 {
		t.Fatal(se)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "allow api.test 10.0.0.2:443") || !strings.Contains(lines[0], "secret:MY_KEY") ||
		!strings.Contains(lines[1], "deny  other.test") || !strings.Contains(lines[1], "(not allowed)") {
		t.Errorf("output:\n%s", out)
	}
	if code, out, _ := runIn(t, f.layout, "vm", "egress", "--json", "box"); code != 0 || !strings.Contains(out, `"secrets":["MY_KEY"]`) {
		t.Errorf("--json: %s", out)
	}
}
