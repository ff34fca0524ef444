package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// fixtures are canned answers for the list and show calls.
func fixtures() map[string]string {
	now := time.Now()
	three, two := rfc(now.Add(-3*time.Minute-5*time.Second)), rfc(now.Add(-2*time.Hour-time.Minute))
	return map[string]string{
		"GET /vms": fmt.Sprintf(`[{"id":"1","name":"alpha","image":"debian","vcpu":2,"memory_mib":1024,"state":"running","created_at":%q,"memory_usage":{"host_rss":188743680}},
			{"id":"2","name":"long-vm-name","image":"alpine","vcpu":1,"memory_mib":512,"state":"stopped","created_at":%q}]`, three, two),
		"GET /vms/alpha":                fmt.Sprintf(`{"id":"1","name":"alpha","image":"debian","kernel":"k6","vcpu":2,"memory_mib":1024,"disk_size":8589934592,"state":"running","created_at":%q,"memory_usage":{"host_rss":188743680,"guest_total":1007235072,"guest_used":136314880,"guest_available":901775360,"balloon":"reporting"}}`, three),
		"GET /kernels":                  fmt.Sprintf(`[{"name":"k6","version":"6.1.0-18-amd64","created_at":%q}]`, two),
		"GET /kernels/k6":               fmt.Sprintf(`{"name":"k6","version":"6.1.0-18-amd64","vmlinux":"/s/vmlinux","initramfs":"/s/initrd","sha256":"ab","source":"x.deb","created_at":%q}`, two),
		"GET /images":                   fmt.Sprintf(`[{"name":"debian","kernel":"k6","size_bytes":4294967296,"source":"debootstrap","created_at":%q}]`, two),
		"GET /images/debian":            fmt.Sprintf(`{"name":"debian","kernel":"k6","rootfs":"/s/rootfs.ext4","size_bytes":4294967296,"source":"debootstrap","created_at":%q}`, two),
		"GET /vms/alpha/sessions":       fmt.Sprintf(`[{"name":"agent","argv":["claude"],"cwd":"/root/repo","state":"running","started_at":%q,"output_bytes":10,"attached":0}]`, three),
		"GET /vms/alpha/sessions/agent": fmt.Sprintf(`{"name":"agent","argv":["claude"],"cwd":"/root/repo","state":"running","started_at":%q,"output_bytes":10,"attached":0}`, three),
		"GET /vms/alpha/ports":          `[{"proto":"tcp","addr":"0.0.0.0","port":22,"process":"sshd","endpoint":"alpha.vm:22"}]`,
		"GET /vms/1/readiness":          `{"agent":true,"ssh":false,"sshd":true,"system":false,"system_state":"starting"}`,
	}
}

// emptyFixtures answer every list with null, as a daemon may.
func emptyFixtures() map[string]string {
	return map[string]string{
		"GET /vms": "null", "GET /kernels": "null", "GET /images": "null",
		"GET /vms/alpha/sessions": "null", "GET /vms/alpha/ports": "null",
	}
}

func TestJSONOutput(t *testing.T) {
	t.Parallel()
	d := startFakeDaemon(t, fixtures())
	cases := []struct {
		args []string
		list bool
		name string // the name of the (first) object
	}{
		{[]string{"vm", "list", "--json"}, true, "alpha"},
		{[]string{"vm", "show", "--json", "alpha"}, false, "alpha"},
		{[]string{"kernel", "list", "--json"}, true, "k6"},
		{[]string{"kernel", "show", "--json", "k6"}, false, "k6"},
		{[]string{"image", "list", "--json"}, true, "debian"},
		{[]string{"image", "show", "--json", "debian"}, false, "debian"},
		{[]string{"vm", "session", "list", "--json", "alpha"}, true, "agent"},
		{[]string{"vm", "session", "show", "--json", "alpha", "agent"}, false, "agent"},
		{[]string{"vm", "ports", "--json", "alpha"}, true, ""},
		{[]string{"daemon", "status", "--json"}, false, ""},
	}
	for _, c := range cases {
		code, out, errOut := runIn(t, d.layout, c.args...)
		if code != 0 {
			t.Errorf("%v: code %d: %s", c.args, code, errOut)
			continue
		}
		if !strings.Contains(out, "\n  ") {
			t.Errorf("%v: not indented: %q", c.args, out)
		}
		var objs []map[string]any
		if c.list {
			if err := json.Unmarshal([]byte(out), &objs); err != nil || len(objs) == 0 {
				t.Errorf("%v: want a JSON list, got %q (%v)", c.args, out, err)
				continue
			}
		} else {
			var o map[string]any
			if err := json.Unmarshal([]byte(out), &o); err != nil {
				t.Errorf("%v: want a JSON object, got %q (%v)", c.args, out, err)
				continue
			}
			objs = append(objs, o)
		}
		if c.name != "" && objs[0]["name"] != c.name {
			t.Errorf("%v: first name %v, want %s", c.args, objs[0]["name"], c.name)
		}
	}
	// The status object is the daemon's identity.
	if _, out, _ := runIn(t, d.layout, "daemon", "status", "--json"); !strings.Contains(out, `"socket": "`+d.layout.Socket()+`"`) {
		t.Errorf("daemon status --json: %q", out)
	}
}

func TestJSONEmptyListsAreArrays(t *testing.T) {
	t.Parallel()
	d := startFakeDaemon(t, emptyFixtures())
	for _, args := range [][]string{
		{"vm", "list", "--json"}, {"kernel", "list", "--json"}, {"image", "list", "--json"},
		{"vm", "session", "list", "--json", "alpha"}, {"vm", "ports", "--json", "alpha"},
	} {
		code, out, errOut := runIn(t, d.layout, args...)
		if code != 0 || out != "[]\n" {
			t.Errorf("%v: code %d, out %q, want []; stderr %s", args, code, out, errOut)
		}
	}
}

func TestTables(t *testing.T) {
	t.Parallel()
	d := startFakeDaemon(t, fixtures())
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"vm", "list"}, "" +
			"NAME          STATE    IMAGE   VCPU  MEMORY    HOST RSS  CREATED\n" +
			"alpha         running  debian  2     1024 MiB  180 MiB   3m ago\n" +
			"long-vm-name  stopped  alpine  1     512 MiB   -         2h ago\n"},
		{[]string{"kernel", "list"}, "" +
			"NAME  VERSION         IMPORTED\n" +
			"k6    6.1.0-18-amd64  2h ago\n"},
		{[]string{"image", "list"}, "" +
			"NAME    KERNEL  SIZE  SOURCE       CREATED\n" +
			"debian  k6      4G    debootstrap  2h ago\n"},
		{[]string{"vm", "session", "list", "alpha"}, "" +
			"NAME   STATE    EXIT  STARTED  COMMAND\n" +
			"agent  running  -     3m ago   [\"claude\"]\n"},
		{[]string{"vm", "ports", "alpha"}, "" +
			"PROTO  ADDRESS  PORT  PROCESS  ENDPOINT\n" +
			"tcp    0.0.0.0  22    sshd     alpha.vm:22\n"},
	}
	for _, c := range cases {
		code, out, errOut := runIn(t, d.layout, c.args...)
		if code != 0 || out != c.want {
			t.Errorf("%v: code %d, stderr %q\ngot:\n%s\nwant:\n%s", c.args, code, errOut, out, c.want)
		}
	}
	// Empty lists still print their headers.
	e := startFakeDaemon(t, emptyFixtures())
	if _, out, _ := runIn(t, e.layout, "vm", "list"); out != "NAME  STATE  IMAGE  VCPU  MEMORY  HOST RSS  CREATED\n" {
		t.Errorf("empty vm list: %q", out)
	}
	// vm show: the memory a running VM holds on the host and in the guest.
	_, shown, _ := runIn(t, d.layout, "vm", "show", "alpha")
	for _, want := range []string{
		"host memory   180 MiB (VMM resident)\n",
		"guest memory  130 MiB used of 960 MiB (860 MiB available)\n",
		"balloon       on, freed guest memory goes back to the host\n",
	} {
		if !strings.Contains(shown, want) {
			t.Errorf("vm show lacks %q:\n%s", want, shown)
		}
	}
	// Key/value listings share the column layout.
	_, out, _ := runIn(t, d.layout, "kernel", "show", "k6")
	if !strings.HasPrefix(out, "name       k6\nversion    6.1.0-18-amd64\n") {
		t.Errorf("kernel show: %q", out)
	}
}

func TestAPIErrorThroughTheCLI(t *testing.T) {
	t.Parallel()
	d := startFakeDaemon(t, nil)
	code, _, errOut := runIn(t, d.layout, "vm", "show", "nope")
	if want := "banger: not found: no route for GET /vms/nope (op feedf00d)\n"; code != 1 || errOut != want {
		t.Errorf("code %d, stderr %q, want %q", code, errOut, want)
	}
}

func TestAgo(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s ago"}, {-time.Minute, "0s ago"}, {59 * time.Second, "59s ago"}, {3*time.Minute + 30*time.Second, "3m ago"},
		{5 * time.Hour, "5h ago"}, {47 * time.Hour, "47h ago"}, {72 * time.Hour, "3d ago"},
	} {
		if got := agoAt(now.Add(-c.d), now); got != c.want {
			t.Errorf("%s: got %q, want %q", c.d, got, c.want)
		}
	}
	if got := agoAt(time.Time{}, now); got != "-" {
		t.Errorf("zero time: %q", got)
	}
}

func TestTableCellsCannotBreakColumns(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	tb := newTable(&b, "name", "error")
	tb.row("a", "line one\nline\ttwo")
	tb.flush()
	if want := "NAME  ERROR\na     line one line two\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}
