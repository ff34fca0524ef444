package sysinstall

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/config"
)

func testMeta(e *env) Metadata {
	return newMetadata(Options{BinDir: DefaultBinDir, Version: "v1.2.3", Now: e.opts.Now}, e.alice, config.Default())
}

func renderTest(t *testing.T, kvm bool) (map[string][]byte, Metadata) {
	t.Helper()
	e := newEnv(t)
	e.users.groups["kvm"] = kvm
	meta := testMeta(e)
	units, err := RenderUnits(e.opts, meta)
	if err != nil {
		t.Fatal(err)
	}
	return units, meta
}

// directives parses a unit into section -> key -> values.
func directives(t *testing.T, unit []byte) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("bad line %q", line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

func TestUnitsProperties(t *testing.T) {
	units, meta := renderTest(t, true)
	helper, daemon := directives(t, units[HelperUnit]), directives(t, units[DaemonUnit])
	want := func(name string, d map[string]map[string][]string, section, key, value string) {
		t.Helper()
		if !slices.Contains(d[section][key], value) {
			t.Errorf("%s: [%s] %s=%s missing (have %q)", name, section, key, value, d[section][key])
		}
	}
	want(HelperUnit, helper, "Service", "PrivateTmp", "yes")
	if _, ok := daemon["Service"]["PrivateTmp"]; ok {
		t.Errorf("bangerd must see the user's /tmp (paths given to kernel import, image build)")
	}
	for name, d := range map[string]map[string]map[string][]string{HelperUnit: helper, DaemonUnit: daemon} {
		want(name, d, "Service", "KillMode", "process")
		want(name, d, "Service", "SendSIGKILL", "no")
		want(name, d, "Service", "TimeoutStopSec", "30")
		want(name, d, "Service", "Restart", "on-failure")
		want(name, d, "Service", "NoNewPrivileges", "yes")
		want(name, d, "Service", "ProtectSystem", "strict")
		want(name, d, "Service", "LockPersonality", "yes")
		want(name, d, "Service", "RuntimeDirectoryPreserve", "yes")
		want(name, d, "Install", "WantedBy", "multi-user.target")
	}

	want(HelperUnit, helper, "Service", "ExecStart", "/usr/local/bin/banger-helper --socket /run/banger/helper.sock --allow-uid "+fmt.Sprint(meta.UID)+" --bridge banger0 --cidr 172.16.0.1/24 --tap-pool 2")
	want(HelperUnit, helper, "Service", "RuntimeDirectory", "banger")
	want(HelperUnit, helper, "Service", "RuntimeDirectoryMode", "0755")
	want(HelperUnit, helper, "Service", "ProtectHome", "yes")
	want(HelperUnit, helper, "Service", "DeviceAllow", "/dev/net/tun rw")
	want(HelperUnit, helper, "Service", "DevicePolicy", "closed")
	want(HelperUnit, helper, "Service", "RestrictAddressFamilies", "AF_UNIX AF_NETLINK AF_INET AF_INET6")
	want(HelperUnit, helper, "Service", "RestrictRealtime", "yes")
	want(HelperUnit, helper, "Service", "SystemCallArchitectures", "native")
	want(HelperUnit, helper, "Service", "AmbientCapabilities", "")
	caps := strings.Fields(helper["Service"]["CapabilityBoundingSet"][0])
	for _, c := range []string{"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"} {
		if !slices.Contains(caps, c) {
			t.Errorf("helper: CapabilityBoundingSet lacks %s", c)
		}
	}
	for _, k := range []string{"User", "Group", "DynamicUser", "ProtectKernelTunables", "ReadOnlyPaths"} {
		if _, ok := helper["Service"][k]; ok {
			t.Errorf("helper: %s= set; it runs as root and must write /proc/sys/net", k)
		}
	}

	home := meta.Home
	want(DaemonUnit, daemon, "Unit", "Wants", HelperUnit)
	want(DaemonUnit, daemon, "Unit", "After", HelperUnit+" network.target")
	if _, ok := daemon["Unit"]["Requires"]; ok {
		t.Error("daemon: Requires= would stop the daemon with the helper")
	}
	want(DaemonUnit, daemon, "Service", "User", "alice")
	want(DaemonUnit, daemon, "Service", "Group", "alice")
	want(DaemonUnit, daemon, "Service", "SupplementaryGroups", "kvm")
	want(DaemonUnit, daemon, "Service", "ExecStart", "/usr/local/bin/bangerd")
	want(DaemonUnit, daemon, "Service", "Environment",
		"HOME="+home+" XDG_STATE_HOME="+home+"/.local/state XDG_CONFIG_HOME="+home+"/.config BANGER_RUNTIME_DIR=/run/bangerd")
	want(DaemonUnit, daemon, "Service", "RuntimeDirectory", "bangerd")
	want(DaemonUnit, daemon, "Service", "ReadWritePaths", home+"/.local/state/banger "+home+"/.config/banger")
	want(DaemonUnit, daemon, "Service", "ProtectKernelModules", "yes")
	want(DaemonUnit, daemon, "Service", "ProtectControlGroups", "yes")
	want(DaemonUnit, daemon, "Service", "RestrictSUIDSGID", "yes")
	want(DaemonUnit, daemon, "Service", "OOMPolicy", "continue")
	for _, p := range strings.Fields(daemon["Service"]["ReadWritePaths"][0]) {
		if strings.Contains(p, ".ssh") || p == home {
			t.Errorf("daemon: %s is writable", p)
		}
	}
	// /dev/kvm and /dev/net/tun must stay reachable.
	for _, k := range []string{"PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock"} {
		if _, ok := daemon["Service"][k]; ok {
			t.Errorf("daemon: %s= would restrict /dev/kvm or /dev/net/tun", k)
		}
	}

	units, _ = renderTest(t, false)
	if bytes.Contains(units[DaemonUnit], []byte("SupplementaryGroups")) {
		t.Error("SupplementaryGroups=kvm without a kvm group")
	}
}

func TestRenderUnitsRejectsUnsafeValues(t *testing.T) {
	e := newEnv(t)
	for name, mut := range map[string]func(*Metadata){
		"home with space":   func(m *Metadata) { m.Home = "/home/al ice" },
		"home with percent": func(m *Metadata) { m.Home = "/home/%i" },
		"relative bin dir":  func(m *Metadata) { m.BinDir = "bin" },
		"bad user name":     func(m *Metadata) { m.Owner = "al ice" },
		"root owner":        func(m *Metadata) { m.UID = 0 },
		"other runtime dir": func(m *Metadata) { m.RuntimeDir = "/run/other" },
		"newline version":   func(m *Metadata) { m.Version = "1\nExecStart=/bin/evil" },
	} {
		m := testMeta(e)
		mut(&m)
		if _, err := RenderUnits(e.opts, m); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}

// The allow-list check: every directive is one this package means to use,
// in the right section, with a sensible value. It runs even where
// systemd-analyze does not.
var knownKeys = map[string][]string{
	"Unit": {"Description", "Documentation", "After", "Before", "Wants", "Requires", "BindsTo", "PartOf",
		"Conflicts", "StartLimitIntervalSec", "StartLimitBurst", "DefaultDependencies"},
	"Service": {"Type", "ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "Restart", "RestartSec",
		"TimeoutStartSec", "TimeoutStopSec", "KillMode", "KillSignal", "SendSIGKILL", "OOMPolicy",
		"User", "Group", "SupplementaryGroups", "Environment", "UMask",
		"RuntimeDirectory", "RuntimeDirectoryMode", "RuntimeDirectoryPreserve",
		"CapabilityBoundingSet", "AmbientCapabilities", "NoNewPrivileges",
		"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "DevicePolicy", "DeviceAllow",
		"ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "RestrictAddressFamilies",
		"ProtectKernelModules", "ProtectKernelLogs", "ProtectKernelTunables", "ProtectControlGroups",
		"ProtectClock", "ProtectHostname", "LockPersonality", "MemoryDenyWriteExecute", "RestrictRealtime",
		"RestrictSUIDSGID", "RestrictNamespaces", "SystemCallArchitectures", "SystemCallFilter",
		"SystemCallErrorNumber"},
	"Install": {"WantedBy", "RequiredBy", "Alias", "Also"},
}

var knownValues = map[string][]string{
	"Type":                     {"simple", "exec", "notify", "forking", "oneshot"},
	"Restart":                  {"no", "on-success", "on-failure", "on-abnormal", "on-abort", "always"},
	"KillMode":                 {"control-group", "mixed", "process", "none"},
	"OOMPolicy":                {"continue", "stop", "kill"},
	"ProtectSystem":            {"yes", "no", "full", "strict"},
	"ProtectHome":              {"yes", "no", "read-only", "tmpfs"},
	"DevicePolicy":             {"auto", "closed", "strict"},
	"RuntimeDirectoryPreserve": {"yes", "no", "restart"},
	"SystemCallArchitectures":  {"native"},
	"SendSIGKILL":              {"yes", "no"},
	"NoNewPrivileges":          {"yes", "no"},
	"PrivateTmp":               {"yes", "no"},
	"LockPersonality":          {"yes", "no"},
	"MemoryDenyWriteExecute":   {"yes", "no"},
	"RestrictRealtime":         {"yes", "no"},
	"RestrictSUIDSGID":         {"yes", "no"},
	"ProtectKernelModules":     {"yes", "no"},
	"ProtectKernelLogs":        {"yes", "no"},
	"ProtectControlGroups":     {"yes", "no"},
}

// knownCaps are the capabilities a unit of this package may name.
var knownCaps = []string{"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_CHOWN", "CAP_SYS_ADMIN",
	"CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_SYS_PTRACE"}

// lintUnit returns the problems the allow-list check finds in a unit.
func lintUnit(unit []byte) []string {
	var problems []string
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			if _, ok := knownKeys[section]; !ok {
				problems = append(problems, fmt.Sprintf("line %d: unknown section [%s]", n, section))
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("line %d: not KEY=VALUE: %q", n, line))
			case section == "":
				problems = append(problems, fmt.Sprintf("line %d: %s outside a section", n, k))
			case !slices.Contains(knownKeys[section], k):
				problems = append(problems, fmt.Sprintf("line %d: unknown key %s in [%s]", n, k, section))
			case knownValues[k] != nil && !slices.Contains(knownValues[k], v):
				problems = append(problems, fmt.Sprintf("line %d: %s=%q: want one of %q", n, k, v, knownValues[k]))
			case k == "ExecStart" && !filepath.IsAbs(strings.Fields(v)[0]):
				problems = append(problems, fmt.Sprintf("line %d: ExecStart %q is not absolute", n, v))
			case k == "CapabilityBoundingSet":
				for _, c := range strings.Fields(v) {
					if !slices.Contains(knownCaps, c) {
						problems = append(problems, fmt.Sprintf("line %d: unknown capability %s", n, c))
					}
				}
			}
		}
	}
	return problems
}

func TestUnitsAllowList(t *testing.T) {
	for _, kvm := range []bool{true, false} {
		units, _ := renderTest(t, kvm)
		for name, u := range units {
			if p := lintUnit(u); len(p) > 0 {
				t.Errorf("%s (kvm %v):\n%s", name, kvm, strings.Join(p, "\n"))
			}
		}
	}
	// And the check does catch typos.
	units, _ := renderTest(t, true)
	for _, bad := range [][3]string{
		{DaemonUnit, "SendSIGKILL=no", "SendSIGKIL=no"},
		{DaemonUnit, "KillMode=process", "KillMode=proces"},
		{DaemonUnit, "[Install]", "[Instal]"},
		{HelperUnit, "CAP_NET_BIND_SERVICE CAP_CHOWN", "CAP_NET_BIND_SERVICE CAP_CHWN"},
	} {
		if !bytes.Contains(units[bad[0]], []byte(bad[1])) {
			t.Fatalf("%s has no %q", bad[0], bad[1])
		}
		u := bytes.Replace(units[bad[0]], []byte(bad[1]), []byte(bad[2]), 1)
		if len(lintUnit(u)) == 0 {
			t.Errorf("allow-list check missed %q", bad[2])
		}
	}
}

// verifyRoot lays out a root that systemd-analyze verify can load: the
// units, executables for their ExecStart=, and stand-ins for the targets
// they depend on.
func verifyRoot(t *testing.T, units map[string][]byte, meta Metadata) string {
	t.Helper()
	root := t.TempDir()
	for name, b := range units {
		write(t, filepath.Join(root, UnitDir, name), string(b), 0o644)
	}
	for _, b := range []string{"bangerd", "banger-helper"} {
		write(t, filepath.Join(root, meta.BinDir, b), "#!/bin/sh\n", 0o755)
	}
	for _, target := range []string{"sysinit.target", "basic.target", "multi-user.target", "shutdown.target", "network.target"} {
		write(t, filepath.Join(root, "usr/lib/systemd/system", target), "[Unit]\nDescription=stand-in for "+target+"\n", 0o644)
	}
	return root
}

// analyzeVerify runs systemd-analyze verify on units inside root and
// returns its output (which is empty for units systemd has nothing to say
// about: it reports unknown keys and bad values as warnings, with exit
// status 0, so the output is what counts).
func analyzeVerify(t *testing.T, root string, units ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed; only the allow-list check (TestUnitsAllowList) ran")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"verify", "--man=no", "--root=" + root}, units...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=cat", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func TestUnitsSystemdAnalyzeVerify(t *testing.T) {
	for _, kvm := range []bool{true, false} {
		units, meta := renderTest(t, kvm)
		root := verifyRoot(t, units, meta)
		out, err := analyzeVerify(t, root, HelperUnit, DaemonUnit)
		if err != nil || out != "" {
			t.Errorf("systemd-analyze verify (kvm %v): err %v, output:\n%s", kvm, err, out)
		}
	}
}

// TestUnitsCapabilityNames checks CapabilityBoundingSet= against systemd's
// own table: verify silently drops a capability name it does not know.
func TestUnitsCapabilityNames(t *testing.T) {
	units, _ := renderTest(t, true)
	caps := strings.Fields(directives(t, units[HelperUnit])["Service"]["CapabilityBoundingSet"][0])
	if out, err := analyzeCapabilities(t, caps...); err != nil {
		t.Errorf("systemd-analyze capability %v: %v\n%s", caps, err, out)
	}
	if _, err := analyzeCapabilities(t, "CAP_NET_ADMN"); err == nil {
		t.Error("systemd-analyze capability accepted CAP_NET_ADMN")
	}
}

func analyzeCapabilities(t *testing.T, caps ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"capability"}, caps...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_PAGER=cat", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestUnitsSystemdAnalyzeVerifyCatchesMistakes proves the check above would
// fail: the same units with one mistake each make systemd-analyze talk.
func TestUnitsSystemdAnalyzeVerifyCatchesMistakes(t *testing.T) {
	units, meta := renderTest(t, true)
	for _, c := range []struct {
		unit, old, new, want string
	}{
		{DaemonUnit, "SendSIGKILL=no", "SendSIGKIL=no", "Unknown key 'SendSIGKIL'"},
		{HelperUnit, "KillMode=process", "KillMode=proces", "Failed to parse kill mode"},
		{DaemonUnit, "\nWants=", "\nWnats=", "Unknown key 'Wnats'"},
		{HelperUnit, "ProtectSystem=strict", "ProtectSystem=strcit", "Failed to parse protect system value"},
		{HelperUnit, "SystemCallFilter=@system-service", "SystemCallFilter=@system-servce", "Unknown system call group"},
		{HelperUnit, "AF_NETLINK", "AF_NETLNK", "Failed to parse address family"},
		{HelperUnit, "DeviceAllow=/dev/net/tun rw", "DeviceAllow=/dev/net/tun rwx", "Invalid device rights"},
		{DaemonUnit, "\nReadWritePaths=/", "\nReadWritePaths=", "path is not absolute"},
		{DaemonUnit, "ExecStart=/usr/local/bin/bangerd", "ExecStart=/usr/local/bin/bangerdd", "is not executable"},
	} {
		t.Run(c.new, func(t *testing.T) {
			mutated := map[string][]byte{}
			for k, v := range units {
				mutated[k] = v
			}
			if !bytes.Contains(units[c.unit], []byte(c.old)) {
				t.Fatalf("%s has no %q", c.unit, c.old)
			}
			mutated[c.unit] = bytes.Replace(units[c.unit], []byte(c.old), []byte(c.new), 1)
			root := verifyRoot(t, mutated, meta)
			out, _ := analyzeVerify(t, root, c.unit)
			if !strings.Contains(out, c.want) {
				t.Errorf("systemd-analyze verify did not report %q; output:\n%s", c.want, out)
			}
		})
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	e := newEnv(t)
	if _, err := ReadMetadata(e.root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no metadata: got %v, want fs.ErrNotExist", err)
	}
	m := testMeta(e)
	b, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"owner", "uid", "gid", "home", "bin_dir", "runtime_dir", "helper_socket", "version", "installed_at"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("install.json lacks %q: %s", k, b)
		}
	}
	write(t, filepath.Join(e.root, MetadataPath), string(b), 0o644)
	got, err := ReadMetadata(e.root)
	if err != nil {
		t.Fatal(err)
	}
	if *got != m {
		t.Errorf("read %+v, wrote %+v", *got, m)
	}
	if got.DaemonSocket() != "/run/bangerd/bangerd.sock" {
		t.Errorf("daemon socket %s", got.DaemonSocket())
	}
	write(t, filepath.Join(e.root, MetadataPath), "{", 0o644)
	if _, err := ReadMetadata(e.root); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("corrupt metadata: %v", err)
	}
}
