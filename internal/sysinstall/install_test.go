package sysinstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func planInstall(t *testing.T, e *env) *Plan {
	t.Helper()
	p, err := PlanInstall(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// planCommands are the systemctl commands a plan runs, in order.
func planCommands(p *Plan) []string {
	var out []string
	for _, c := range append(slices.Clone(p.Before), p.Commands...) {
		out = append(out, strings.Join(c.Args, " "))
	}
	return out
}

func TestPlanInstall(t *testing.T) {
	e := newEnv(t)
	before := snapshot(t, e.root)
	p := planInstall(t, e)
	if d := diffSnapshots(before, snapshot(t, e.root)); d != "" {
		t.Fatalf("planning changed the root:\n%s", d)
	}
	if p.Kind != KindInstall || !p.NeedsRoot || p.Owner.Name != "alice" || p.Root != e.root {
		t.Errorf("plan %+v", p)
	}
	var files []string
	for _, f := range p.Files {
		files = append(files, f.Path)
	}
	want := []string{"/usr/local/bin/banger", "/usr/local/bin/bangerd", "/usr/local/bin/banger-agent", "/usr/local/bin/banger-helper",
		"/etc/systemd/system/banger-helper.service", "/etc/systemd/system/bangerd.service", "/etc/banger/install.json"}
	if !slices.Equal(files, want) {
		t.Errorf("files %q, want %q", files, want)
	}
	var dirs []string
	for _, d := range p.Dirs {
		dirs = append(dirs, d.Path)
	}
	// The temp root has only /home/alice: every directory is missing.
	wantDirs := []string{"/usr", "/usr/local", "/usr/local/bin", "/etc", "/etc/systemd", "/etc/systemd/system", "/etc/banger",
		"/home/alice/.local", "/home/alice/.local/state", "/home/alice/.local/state/banger", "/home/alice/.config", "/home/alice/.config/banger"}
	if !slices.Equal(dirs, wantDirs) {
		t.Errorf("dirs %q, want %q", dirs, wantDirs)
	}
	for _, d := range p.Dirs {
		inHome := strings.HasPrefix(d.Path, "/home/alice/")
		if inHome != (d.UID == e.alice.UID && d.GID == e.alice.GID) || inHome != (d.Mode == 0o700) {
			t.Errorf("dir %s: uid %d gid %d mode %v", d.Path, d.UID, d.GID, d.Mode)
		}
	}
	wantCmds := []string{"show --property=Version", "daemon-reload",
		"enable banger-helper.service bangerd.service", "restart banger-helper.service bangerd.service"}
	if got := planCommands(p); !slices.Equal(got, wantCmds) {
		t.Errorf("commands %q, want %q", got, wantCmds)
	}

	var b bytes.Buffer
	p.Describe(&b)
	out := b.String()
	for _, s := range append(append(files, dirs...), "root", "bridge", "taps", "firewall", "/usr/local/bin", "/etc/systemd/system",
		e.src+"/bangerd", "/run/bangerd/bangerd.sock", "config.toml") {
		if !strings.Contains(out, s) {
			t.Errorf("Describe lacks %q", s)
		}
	}
	for _, c := range append(p.Before, p.Commands...) {
		if !strings.Contains(out, c.String()) || !strings.Contains(out, c.Why) {
			t.Errorf("Describe lacks command %q and why", c)
		}
	}
	for _, f := range p.Files {
		if !strings.Contains(out, f.Why) {
			t.Errorf("Describe lacks why of %s", f.Path)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

// The plan shown before sudo (and by --dry-run) holds the full text of
// every file it generates, exactly as installed: what will run as root can
// be read before it does. The copied binaries are named, not dumped.
func TestPlanInstallDescribeShowsGeneratedFiles(t *testing.T) {
	e := newEnv(t)
	p := planInstall(t, e)
	var b bytes.Buffer
	p.Describe(&b)
	out := b.String()
	if err := Apply(context.Background(), p, e.opts); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/etc/systemd/system/banger-helper.service", "/etc/systemd/system/bangerd.service", "/etc/banger/install.json"} {
		installed, err := os.ReadFile(filepath.Join(e.root, path))
		if err != nil {
			t.Fatal(err)
		}
		if block := "==> " + path + " <==\n" + string(installed); !strings.Contains(out, block) {
			t.Errorf("the plan does not show %s as installed:\n%s", path, installed)
		}
	}
	for _, s := range []string{"ExecStart=/usr/local/bin/banger-helper --socket", "CapabilityBoundingSet=CAP_NET_ADMIN", "User=alice", `"owner": "alice"`} {
		if !strings.Contains(out, s) {
			t.Errorf("the plan lacks %q", s)
		}
	}
	for _, bin := range binaries() {
		if strings.Contains(out, "echo "+bin+"\n") || strings.Contains(out, "==> /usr/local/bin/"+bin) {
			t.Errorf("the plan dumps the binary %s", bin)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

func TestPlanInstallChecksBinaries(t *testing.T) {
	e := newEnv(t)
	os.Remove(filepath.Join(e.src, "bangerd"))
	os.Remove(filepath.Join(e.src, "banger-helper"))
	_, err := PlanInstall(e.opts)
	if err == nil || !strings.Contains(err.Error(), "bangerd, banger-helper") {
		t.Errorf("missing binaries: %v", err)
	}
	e = newEnv(t)
	os.Chmod(filepath.Join(e.src, "banger"), 0o644)
	if _, err := PlanInstall(e.opts); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Errorf("non-executable binary: %v", err)
	}
}

// The helper serves the bridge the owner's config names; a config that
// does not parse or validate stops the install before anything is written.
func TestPlanInstallHelperNetworkFromOwnerConfig(t *testing.T) {
	e := newEnv(t)
	cfg := filepath.Join(e.root, "home/alice/.config/banger/config.toml")
	write(t, cfg, "bridge_name = \"br-dev\"\nbridge_cidr = \"10.9.0.1/24\"\ntap_pool_size = 0\n", 0o644)
	p, err := PlanInstall(e.opts)
	if err != nil {
		t.Fatal(err)
	}
	var unit string
	for _, f := range p.Files {
		if strings.HasSuffix(f.Path, HelperUnit) {
			unit = string(f.Content)
		}
	}
	if !strings.Contains(unit, "--bridge br-dev --cidr 10.9.0.1/24 --tap-pool 0\n") {
		t.Errorf("helper unit does not serve the owner's bridge:\n%s", unit)
	}
	for _, bad := range []string{"bridge_name = \"a b\"\n", "bridge_cidr = \"nope\"\n", "unknown_key = 1\n"} {
		write(t, cfg, bad, 0o644)
		if _, err := PlanInstall(e.opts); err == nil || !strings.Contains(err.Error(), "owner's config") {
			t.Errorf("config %q: want a refusal naming the owner's config, got %v", bad, err)
		}
	}
}

// The services never see the installing shell's BANGER_* overrides, so
// the plan does not read them either: one the config would refuse (a
// developer's BANGER_ACCEL, sudo -E) neither stops the install nor
// changes the units.
func TestPlanInstallIgnoresCallerEnvironment(t *testing.T) {
	e := newEnv(t)
	clean := planInstall(t, e)
	for _, k := range []string{"BANGER_ACCEL", "BANGER_ENGINE", "BANGER_NETWORK", "BANGER_QEMU", "BANGER_HELPER_SOCKET", "BANGER_CATALOG", "BANGER_RUNTIME_DIR"} {
		t.Setenv(k, "polluted")
	}
	p, err := PlanInstall(e.opts)
	if err != nil {
		t.Fatalf("the caller's BANGER_* variables stopped the install: %v", err)
	}
	for i, f := range p.Files {
		if !bytes.Equal(f.Content, clean.Files[i].Content) {
			t.Errorf("%s changed with the caller's environment:\n%s", f.Path, f.Content)
		}
	}
}

func TestPlanInstallNeedsHome(t *testing.T) {
	e := newEnv(t)
	os.RemoveAll(filepath.Join(e.root, "home/alice"))
	if _, err := PlanInstall(e.opts); err == nil || !strings.Contains(err.Error(), "home") {
		t.Errorf("missing home: %v", err)
	}
}

// checkInstalled compares what Apply wrote with the plan: exactly the
// planned directories and files, with their modes, owners and contents.
func checkInstalled(t *testing.T, e *env, p *Plan, before map[string]entry) {
	t.Helper()
	after := snapshot(t, e.root)
	want := map[string]bool{}
	for _, d := range p.Dirs {
		want[d.Path] = true
	}
	for _, f := range p.Files {
		want[f.Path] = true
	}
	for path := range after {
		if _, ok := before[path]; !ok && !want[path] {
			t.Errorf("unplanned %s", path)
		}
	}
	for _, d := range p.Dirs {
		fi, err := os.Stat(filepath.Join(e.root, d.Path))
		if err != nil {
			t.Errorf("dir %s: %v", d.Path, err)
			continue
		}
		if fi.Mode().Perm() != d.Mode || !fi.IsDir() {
			t.Errorf("dir %s: mode %v, want %v", d.Path, fi.Mode(), d.Mode)
		}
		if st := fi.Sys().(*syscall.Stat_t); d.UID >= 0 && (int(st.Uid) != d.UID || int(st.Gid) != d.GID) {
			t.Errorf("dir %s: owner %d:%d, want %d:%d", d.Path, st.Uid, st.Gid, d.UID, d.GID)
		}
	}
	for _, f := range p.Files {
		full := filepath.Join(e.root, f.Path)
		fi, err := os.Lstat(full)
		if err != nil {
			t.Errorf("file %s: %v", f.Path, err)
			continue
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != f.Mode {
			t.Errorf("file %s: mode %v, want %v", f.Path, fi.Mode(), f.Mode)
		}
		got, _ := os.ReadFile(full)
		want := f.Content
		if f.Source != "" {
			want, _ = os.ReadFile(f.Source)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("file %s: content differs from the plan", f.Path)
		}
	}
}

func TestApplyInstall(t *testing.T) {
	e := newEnv(t)
	before := snapshot(t, e.root)
	p := planInstall(t, e)
	if err := Apply(context.Background(), p, e.opts); err != nil {
		t.Fatal(err)
	}
	checkInstalled(t, e, p, before)
	if got := e.sc.commands(); !slices.Equal(got, planCommands(p)) {
		t.Errorf("ran %q, want %q", got, planCommands(p))
	}
	m, err := ReadMetadata(e.root)
	if err != nil {
		t.Fatal(err)
	}
	if m.Owner != "alice" || m.UID != e.alice.UID || m.Home != "/home/alice" || m.BinDir != "/usr/local/bin" ||
		m.RuntimeDir != "/run/bangerd" || m.HelperSocket != "/run/banger/helper.sock" || m.Version != "v1.2.3" ||
		!m.InstalledAt.Equal(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("metadata %+v", m)
	}
}

func TestApplyInstallIdempotent(t *testing.T) {
	e := newEnv(t)
	if err := Apply(context.Background(), planInstall(t, e), e.opts); err != nil {
		t.Fatal(err)
	}
	first := snapshot(t, e.root)
	bin := filepath.Join(e.root, "usr/local/bin/bangerd")
	fi1, _ := os.Stat(bin)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(bin, old, old)

	p := planInstall(t, e)
	if len(p.Dirs) != 0 {
		t.Errorf("second plan creates directories: %+v", p.Dirs)
	}
	if err := Apply(context.Background(), p, e.opts); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(first, snapshot(t, e.root)); d != "" {
		t.Errorf("re-install changed:\n%s", d)
	}
	if fi2, _ := os.Stat(bin); !fi2.ModTime().Equal(old) || !os.SameFile(fi1, fi2) {
		t.Error("re-install rewrote an unchanged binary")
	}
}

func TestApplyInstallFailureLeavesRootAsItWas(t *testing.T) {
	e := newEnv(t)
	steps := planCommands(planInstall(t, e))
	for i, step := range steps {
		t.Run(step, func(t *testing.T) {
			e := newEnv(t)
			before := snapshot(t, e.root)
			p := planInstall(t, e)
			e.sc.fail = func(args []string) error {
				if strings.Join(args, " ") == step {
					return errors.New("boom")
				}
				return nil
			}
			err := Apply(context.Background(), p, e.opts)
			if err == nil || !strings.Contains(err.Error(), "boom") {
				t.Fatalf("Apply: %v", err)
			}
			if d := diffSnapshots(before, snapshot(t, e.root)); d != "" {
				t.Errorf("root changed:\n%s", d)
			}
			got := e.sc.commands()
			want := steps[:i+1]
			if i >= 2 { // enable or restart ran: a fresh install's units are disabled again
				want = append(slices.Clone(want), "disable --now bangerd.service banger-helper.service")
			}
			if i >= 1 {
				want = append(slices.Clone(want), "daemon-reload")
			}
			if !slices.Equal(got, want) {
				t.Errorf("ran %q, want %q", got, want)
			}
		})
	}
}

func TestApplyReinstallFailureRestoresPreviousInstall(t *testing.T) {
	e := newEnv(t)
	if err := Apply(context.Background(), planInstall(t, e), e.opts); err != nil {
		t.Fatal(err)
	}
	installed := snapshot(t, e.root)
	// A new version with a new binary fails to start.
	write(t, filepath.Join(e.src, "bangerd"), "#!/bin/sh\necho new\n", 0o755)
	e.opts.Version = "v2"
	p := planInstall(t, e)
	sc := e.newSystemctl()
	sc.fail = func(args []string) error {
		if args[0] == "restart" && len(sc.calls) == 4 {
			return errors.New("boom")
		}
		return nil
	}
	if err := Apply(context.Background(), p, e.opts); err == nil {
		t.Fatal("Apply succeeded")
	}
	if d := diffSnapshots(installed, snapshot(t, e.root)); d != "" {
		t.Errorf("previous install not restored:\n%s", d)
	}
	want := append(planCommands(p), "daemon-reload", "restart banger-helper.service bangerd.service")
	if got := e.sc.commands(); !slices.Equal(got, want) {
		t.Errorf("ran %q, want %q", got, want)
	}
}

func TestApplyChecks(t *testing.T) {
	e := newEnv(t)
	p := planInstall(t, e)
	o := e.opts
	o.Root = t.TempDir()
	if err := Apply(context.Background(), p, o); err == nil {
		t.Error("Apply accepted options for another root")
	}
	o = e.opts
	o.Systemctl = nil
	if err := Apply(context.Background(), p, o); err == nil || !strings.Contains(err.Error(), "systemctl") {
		t.Errorf("no systemctl: %v", err)
	}
	// Systemd not running: nothing is written.
	before := snapshot(t, e.root)
	e.opts.Systemctl = HostSystemctl{Root: t.TempDir()}
	err := Apply(context.Background(), p, e.opts)
	if !errors.Is(err, ErrSystemdNotRunning) {
		t.Errorf("no systemd: %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, e.root)); d != "" {
		t.Errorf("root changed:\n%s", d)
	}
}

// userFiles are the owner's files no uninstall may touch.
func userFiles(e *env) map[string]string {
	return map[string]string{
		"/home/alice/.ssh/config":                       "Include ~/.config/banger/ssh/config\n",
		"/home/alice/.ssh/id_ed25519":                   "private\n",
		"/home/alice/.config/banger/config.toml":        "vcpu = 4\n",
		"/home/alice/.config/banger/ssh/id_ed25519":     "banger private key\n",
		"/home/alice/.config/banger/ssh/id_ed25519.pub": "banger public key\n",
		"/home/alice/.config/banger/ssh/config":         "Host *.vm\n",
	}
}

func TestUninstall(t *testing.T) {
	for _, purge := range []bool{false, true} {
		t.Run(fmt.Sprint("purge=", purge), func(t *testing.T) {
			e := newEnv(t)
			pristine := snapshot(t, e.root)
			install := planInstall(t, e)
			if err := Apply(context.Background(), install, e.opts); err != nil {
				t.Fatal(err)
			}
			for p, c := range userFiles(e) {
				write(t, filepath.Join(e.root, p), c, 0o600)
			}
			// What running services leave behind.
			state := "/home/alice/.local/state/banger/banger.db"
			write(t, filepath.Join(e.root, state), "db", 0o600)
			write(t, filepath.Join(e.root, "/run/bangerd/bangerd.sock"), "", 0o600)
			write(t, filepath.Join(e.root, "/run/banger/helper.sock"), "", 0o600)
			keep := snapshot(t, e.root)

			e.newSystemctl()
			p, err := PlanUninstall(e.opts, purge)
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			p.Describe(&b)
			for _, r := range p.Removals {
				if !strings.Contains(b.String(), r.Path) {
					t.Errorf("Describe lacks %s", r.Path)
				}
			}
			if err := Apply(context.Background(), p, e.opts); err != nil {
				t.Fatal(err)
			}
			want := []string{"show --property=Version", "disable --now bangerd.service banger-helper.service", "daemon-reload"}
			if got := e.sc.commands(); !slices.Equal(got, want) {
				t.Errorf("ran %q, want %q", got, want)
			}
			after := snapshot(t, e.root)
			for _, f := range install.Files {
				if _, ok := after[f.Path]; ok {
					t.Errorf("%s survived the uninstall", f.Path)
				}
			}
			if _, ok := after["/etc/banger"]; ok {
				t.Error("/etc/banger survived")
			}
			for path := range userFiles(e) {
				if after[path] != keep[path] {
					t.Errorf("%s changed", path)
				}
			}
			for _, path := range []string{"/home/alice/.ssh", "/home/alice/.config/banger", "/home/alice/.config/banger/ssh"} {
				if after[path] != keep[path] {
					t.Errorf("%s changed", path)
				}
			}
			_, stateKept := after[state]
			_, runKept := after["/run/bangerd"]
			if stateKept == purge || runKept == purge {
				t.Errorf("purge %v: state kept %v, /run/bangerd kept %v", purge, stateKept, runKept)
			}
			if purge {
				// All that is left of the install: directories that
				// already are, or hold, the owner's files.
				for path := range after {
					if _, ok := pristine[path]; !ok && !strings.HasPrefix(path, "/home/alice/") &&
						!slices.Contains([]string{"/usr", "/usr/local", "/usr/local/bin", "/etc", "/etc/systemd", "/etc/systemd/system", "/run"}, path) {
						t.Errorf("left behind: %s", path)
					}
				}
			}
			for path := range after {
				if strings.Contains(path, ".banger-") {
					t.Errorf("stray file %s", path)
				}
			}

			// Uninstalling again has nothing to do.
			e.newSystemctl()
			p, err = PlanUninstall(e.opts, purge)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Empty() {
				t.Errorf("second uninstall plans %+v", p)
			}
			if err := Apply(context.Background(), p, e.opts); err != nil || len(e.sc.calls) > 0 {
				t.Errorf("second uninstall: %v, ran %q", err, e.sc.commands())
			}
		})
	}
}

func TestUninstallRemovalFailurePutsBack(t *testing.T) {
	e := newEnv(t)
	if err := Apply(context.Background(), planInstall(t, e), e.opts); err != nil {
		t.Fatal(err)
	}
	p, err := PlanUninstall(e.opts, true)
	if err != nil {
		t.Fatal(err)
	}
	// A path that cannot be moved aside (its parent is a file) after the
	// real removals.
	write(t, filepath.Join(e.root, "etc/hostname"), "host\n", 0o644)
	before := snapshot(t, e.root)
	p.Removals = append(p.Removals, PlannedRemoval{Path: "/etc/hostname/x"})
	e.newSystemctl()
	if err := Apply(context.Background(), p, e.opts); err == nil {
		t.Fatal("Apply succeeded")
	}
	if d := diffSnapshots(before, snapshot(t, e.root)); d != "" {
		t.Errorf("root changed:\n%s", d)
	}
	if got := e.sc.commands(); slices.Contains(got, "daemon-reload") {
		t.Errorf("ran %q after a failed removal", got)
	}
}

func TestUninstallNeverRemovesUserFiles(t *testing.T) {
	a := Account{Name: "alice", UID: 1000, GID: 1000, Home: "/home/alice"}
	for _, path := range []string{"/home/alice", "/home/alice/.ssh", "/home/alice/.ssh/config", "/home/alice/.config",
		"/home/alice/.config/banger", "/home/alice/.config/banger/ssh", "/home/alice/.config/banger/config.toml", "/home", "/home/alice/.config/banger/ssh/id_ed25519"} {
		if err := checkProtected([]PlannedRemoval{{Path: path}}, a); err == nil {
			t.Errorf("removing %s accepted", path)
		}
	}
	if err := checkProtected([]PlannedRemoval{{Path: a.StateDir()}, {Path: "/etc/banger"}}, a); err != nil {
		t.Error(err)
	}
}

func TestUninstallWithoutMetadataUsesOwner(t *testing.T) {
	e := newEnv(t)
	write(t, filepath.Join(e.root, "home/alice/.local/state/banger/banger.db"), "db", 0o600)
	write(t, filepath.Join(e.root, UnitDir, DaemonUnit), "[Unit]\n", 0o644)
	write(t, filepath.Join(e.root, "usr/local/bin/bangerd"), "x", 0o755)
	p, err := PlanUninstall(e.opts, true)
	if err != nil {
		t.Fatal(err)
	}
	var removed []string
	for _, r := range p.Removals {
		removed = append(removed, r.Path)
	}
	want := []string{"/etc/systemd/system/bangerd.service", "/usr/local/bin/bangerd", "/home/alice/.local/state/banger"}
	if !slices.Equal(removed, want) {
		t.Errorf("removes %q, want %q", removed, want)
	}
	if got := planCommands(p); !slices.Equal(got, []string{"show --property=Version", "disable --now bangerd.service", "daemon-reload"}) {
		t.Errorf("commands %q", got)
	}
}

func TestResolveOwner(t *testing.T) {
	e := newEnv(t)
	bob := Account{Name: "bob", UID: 54321, GID: 54321, Home: "/home/bob"}
	e.users.users["bob"] = bob
	e.users.users["root"] = Account{Name: "root", UID: 0, GID: 0, Home: "/root"}
	mkdir(t, filepath.Join(e.root, "home/bob"))
	mkdir(t, filepath.Join(e.root, "root"))
	for _, c := range []struct {
		name     string
		owner    string
		euid     int
		sudoUser string
		want     string // owner name, or an error substring after "!"
	}{
		{"sudo user honoured", "", 0, "alice", "alice"},
		{"explicit owner wins over sudo", "bob", 0, "alice", "bob"},
		{"owner by uid", "54321", 0, "", "bob"},
		{"root without owner", "", 0, "", "!--owner"},
		{"sudo from root", "", 0, "root", "!--owner"},
		{"unknown owner", "carol", 0, "", "!unknown owner \"carol\""},
		{"unknown sudo user", "", 0, "carol", "!unknown owner \"carol\""},
		{"root as owner", "root", 0, "", "!is root"},
		{"not root: the caller", "", 54321, "", "bob"},
		{"not root: explicit owner", "alice", 54321, "", "alice"},
	} {
		o := e.opts
		o.Owner = c.owner
		o.Geteuid = func() int { return c.euid }
		o.Getenv = func(k string) string {
			if k == "SUDO_USER" {
				return c.sudoUser
			}
			return ""
		}
		a, err := ResolveOwner(o)
		switch {
		case strings.HasPrefix(c.want, "!"):
			if err == nil || !strings.Contains(err.Error(), c.want[1:]) {
				t.Errorf("%s: got %v, %v; want error with %q", c.name, a, err, c.want[1:])
			}
		case err != nil || a.Name != c.want:
			t.Errorf("%s: got %v, %v; want %s", c.name, a, err, c.want)
		}
		if strings.HasPrefix(c.want, "!") && c.owner == "" {
			if _, err := PlanInstall(o); err == nil {
				t.Errorf("%s: PlanInstall succeeded", c.name)
			}
		}
	}
	o := e.opts
	o.Owner = "carol"
	if _, err := ResolveOwner(o); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown owner does not wrap ErrUnknownUser: %v", err)
	}
}

func TestSystemUsers(t *testing.T) {
	a, err := SystemUsers{}.LookupUser("0")
	if err != nil || a.Name != "root" || a.UID != 0 {
		t.Errorf("uid 0: %+v, %v", a, err)
	}
	if _, err := (SystemUsers{}).LookupUser("no-such-user-banger-test"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown user: %v", err)
	}
	if ok, err := (SystemUsers{}).HasGroup("no-such-group-banger-test"); ok || err != nil {
		t.Errorf("unknown group: %v, %v", ok, err)
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	e.sc.output = func(args []string) ([]byte, error) {
		switch args[len(args)-1] {
		case HelperUnit:
			return []byte("LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\nMainPID=4242\n"), nil
		default:
			return []byte("LoadState=loaded\nActiveState=failed\nSubState=failed\nUnitFileState=enabled\nMainPID=0\n"), nil
		}
	}
	r, err := Status(context.Background(), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.Installed || r.Metadata != nil {
		t.Errorf("not installed: %+v", r)
	}
	if err := Apply(context.Background(), planInstall(t, e), e.opts); err != nil {
		t.Fatal(err)
	}
	e.sc.calls = nil
	r, err = Status(context.Background(), e.opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []UnitStatus{
		{Name: HelperUnit, Load: "loaded", Active: "active", Sub: "running", Enabled: "enabled", MainPID: 4242},
		{Name: DaemonUnit, Load: "loaded", Active: "failed", Sub: "failed", Enabled: "enabled"},
	}
	if !r.Installed || r.Metadata == nil || r.Metadata.Owner != "alice" || !slices.Equal(r.Units, want) || r.SystemdErr != "" {
		t.Errorf("status %+v", r)
	}
	for _, c := range e.sc.commands() {
		if !strings.HasPrefix(c, "show ") {
			t.Errorf("status ran %q", c)
		}
	}
	var b bytes.Buffer
	r.Describe(&b)
	for _, s := range []string{"alice", "/run/bangerd/bangerd.sock", "banger-helper.service: active (running), pid 4242, enabled", "bangerd.service: failed"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("Describe lacks %q:\n%s", s, b.String())
		}
	}

	// No systemd: the metadata still shows, the reason too.
	e.opts.Systemctl = HostSystemctl{Root: t.TempDir()}
	r, err = Status(context.Background(), e.opts)
	if err != nil || !r.Installed || len(r.Units) != 0 || !strings.Contains(r.SystemdErr, "systemd is not running") {
		t.Errorf("no systemd: %+v, %v", r, err)
	}
}

func TestRestart(t *testing.T) {
	e := newEnv(t)
	if err := Restart(context.Background(), e.opts); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Errorf("not installed: %v", err)
	}
	if err := Apply(context.Background(), planInstall(t, e), e.opts); err != nil {
		t.Fatal(err)
	}
	e.sc.calls = nil
	if err := Restart(context.Background(), e.opts); err != nil {
		t.Fatal(err)
	}
	want := []string{"restart banger-helper.service", "restart bangerd.service"}
	if got := e.sc.commands(); !slices.Equal(got, want) {
		t.Errorf("ran %q, want %q", got, want)
	}
	e.sc.fail = func(args []string) error { return errors.New("boom") }
	if err := Restart(context.Background(), e.opts); err == nil || !strings.Contains(err.Error(), HelperUnit) {
		t.Errorf("failing restart: %v", err)
	}
}

func TestHostSystemctl(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "proc/1/comm"), "process_api\n", 0o644)
	s := HostSystemctl{Root: root, Binary: "/nonexistent/systemctl-must-not-run"}
	err := s.Run(context.Background(), "daemon-reload")
	want := "systemd is not running on this machine (PID 1 is process_api); banger can still run without services: the CLI starts bangerd on demand"
	if err == nil || err.Error() != want || !errors.Is(err, ErrSystemdNotRunning) {
		t.Errorf("got %v, want %q", err, want)
	}

	// With systemd "running", a stand-in systemctl shows what is run and
	// how failures read.
	mkdir(t, filepath.Join(root, "run/systemd/system"))
	bin := filepath.Join(t.TempDir(), "systemctl")
	write(t, bin, "#!/bin/sh\necho \"args: $*\"\n[ \"$1\" = fail ] && { echo 'Unit x not found.' >&2; exit 5; }\nexit 0\n", 0o755)
	s.Binary = bin
	out, err := s.Output(context.Background(), "show", "--property=Version")
	if err != nil || string(out) != "args: show --property=Version\n" {
		t.Errorf("output %q, %v", out, err)
	}
	err = s.Run(context.Background(), "fail", "x")
	if err == nil || !strings.Contains(err.Error(), "systemctl fail x: exit status 5: Unit x not found.") {
		t.Errorf("failure: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx, "show"); err == nil {
		t.Error("cancelled context: ran")
	}
}

func TestCheckUnitPath(t *testing.T) {
	for p, ok := range map[string]bool{
		"/usr/local/bin": true, "/home/a.b-c_d+e@f": true, "relative": false, "/a/../b": false,
		"/a b": false, "/a%i": false, "/a$HOME": false, `/a\b`: false, "/a\"b": false, "/a/": false,
	} {
		if err := checkUnitPath("p", p); (err == nil) != ok {
			t.Errorf("%q: %v", p, err)
		}
	}
}

func TestCheckRootOnly(t *testing.T) {
	// /usr/local/bin on this machine is root's.
	if fi, err := os.Stat("/usr/local/bin"); err == nil && fi.Mode().Perm()&0o022 == 0 {
		if err := checkRootOnly("/usr/local/bin"); err != nil {
			t.Error(err)
		}
	}
	if err := checkRootOnly("/tmp/banger-bin"); err == nil {
		t.Error("a bin dir under /tmp accepted")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	if err := checkRootOnly(filepath.Join(dir, "bin")); err == nil {
		t.Error("a bin dir under a world-writable directory accepted")
	}
}
