package updater

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fixture is a fake release host with v0.2.0 and v0.3.0 and an install
// directory holding v0.2.0.
type fixture struct {
	key    testKey
	host   *fakeHost
	binDir string
	svc    *services
	stages []Stage
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{key: newTestKey(t), host: newFakeHost(t)}
	f.host.publish(t, f.key, "v0.2.0", makeArchive(t, releaseMembers("v0.2.0")))
	f.host.publish(t, f.key, "v0.3.0", makeArchive(t, releaseMembers("v0.3.0")))
	f.binDir = installDir(t, "v0.2.0")
	f.svc = &services{binDir: f.binDir}
	return f
}

func (f *fixture) options() Options {
	return Options{
		ManifestURL:    f.host.manifestURL(),
		HTTPClient:     f.host.srv.Client(),
		CurrentVersion: "v0.2.0",
		BinDir:         f.binDir,
		PublicKeyPEM:   f.key.pubPEM,
		Progress:       func(s Stage, _ string) { f.stages = append(f.stages, s) },
		Restart:        f.svc.restart,
		Health:         f.svc.health,
	}
}

func TestCheck(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	for _, c := range []struct {
		current, version string
		want             bool
		target           string
	}{
		{"v0.2.0", "", true, "v0.3.0"},
		{"v0.3.0", "", false, "v0.3.0"},
		{"v0.3.1", "latest", false, "v0.3.0"},
		{"dev", "", true, "v0.3.0"},
		{"27736fe-dirty", "", true, "v0.3.0"},
		{"v0.3.0", "v0.2.0", false, "v0.2.0"},
	} {
		opts := f.options()
		opts.CurrentVersion, opts.Version = c.current, c.version
		res, err := Check(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.UpdateAvailable != c.want || res.Target.Version != c.target || res.Latest != "v0.3.0" || res.Current != c.current {
			t.Errorf("Check(current %s, version %q) = %+v", c.current, c.version, res)
		}
	}
	opts := f.options()
	opts.Version = "v9.9.9"
	if _, err := Check(ctx, opts); err == nil || err.Error() != "release v9.9.9 not found in manifest (latest is v0.3.0)" {
		t.Errorf("unknown version: %v", err)
	}
}

func TestUpdate(t *testing.T) {
	f := newFixture(t)
	// A binary the install directory lacks is installed too.
	if err := os.Remove(filepath.Join(f.binDir, BinHelper)); err != nil {
		t.Fatal(err)
	}
	// What a killed update left behind goes.
	stale := filepath.Join(f.binDir, stagingPattern+"1234")
	if err := os.MkdirAll(filepath.Join(stale, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	res, err := Update(t.Context(), f.options())
	if err != nil {
		t.Fatal(err)
	}
	if res.From != "v0.2.0" || res.To != "v0.3.0" || res.DryRun || len(res.Installed) != 4 || res.BinDir != f.binDir {
		t.Errorf("result %+v", res)
	}
	for _, b := range Binaries() {
		if got := readFile(t, filepath.Join(f.binDir, b)); got != string(fakeBinary(b, "v0.3.0")) {
			t.Errorf("%s is %q", b, got)
		}
		st, err := os.Stat(filepath.Join(f.binDir, b))
		if err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v", b, st.Mode(), err)
		}
		prev := filepath.Join(f.binDir, b+PreviousSuffix)
		if b == BinHelper {
			if _, err := os.Lstat(prev); err == nil {
				t.Errorf("%s exists though there was no previous %s", prev, b)
			}
			continue
		}
		if got := readFile(t, prev); got != string(fakeBinary(b, "v0.2.0")) {
			t.Errorf("%s is %q", prev, got)
		}
	}
	if f.svc.restarts != 1 || strings.Join(f.svc.healthCalls, ",") != "v0.3.0" {
		t.Errorf("restarts %d, health calls %v", f.svc.restarts, f.svc.healthCalls)
	}
	want := []Stage{StageResolve, StagePreflight, StageSignature, StageDownload, StageExtract, StageVerify, StageSwap, StageRestart, StageHealth, StageDone}
	if fmt.Sprint(f.stages) != fmt.Sprint(want) {
		t.Errorf("stages %v, want %v", f.stages, want)
	}
	assertNoStaging(t, f.binDir)

	// Same version again: refused unless forced.
	opts := f.options()
	opts.CurrentVersion = "v0.3.0"
	var utd *UpToDateError
	if _, err := Update(t.Context(), opts); !errors.As(err, &utd) || err.Error() != "v0.3.0 is already installed" {
		t.Fatalf("same version: %v", err)
	}
	opts.Force = true
	if _, err := Update(t.Context(), opts); err != nil {
		t.Fatalf("forced: %v", err)
	}
	// The forced reinstall replaced the old .previous.
	if got := readFile(t, filepath.Join(f.binDir, BinDaemon+PreviousSuffix)); got != string(fakeBinary(BinDaemon, "v0.3.0")) {
		t.Errorf(".previous after a reinstall is %q", got)
	}

	// Latest is older than what runs: refused; an explicit older version
	// is a downgrade the user asked for.
	opts = f.options()
	opts.CurrentVersion = "v0.4.0"
	if _, err := Update(t.Context(), opts); !errors.As(err, &utd) || !strings.Contains(err.Error(), "newer than the latest release") {
		t.Fatalf("newer current: %v", err)
	}
	opts.Version = "v0.2.0"
	if _, err := Update(t.Context(), opts); err != nil {
		t.Fatalf("explicit downgrade: %v", err)
	}
	if got := readFile(t, filepath.Join(f.binDir, BinCLI)); got != string(fakeBinary(BinCLI, "v0.2.0")) {
		t.Errorf("after the downgrade banger is %q", got)
	}
}

func TestUpdateFromDevBuild(t *testing.T) {
	f := newFixture(t)
	opts := f.options()
	opts.CurrentVersion = "27736fe-dirty"
	opts.Restart, opts.Health = nil, nil
	if _, err := Update(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(f.binDir, BinDaemon)); got != string(fakeBinary(BinDaemon, "v0.3.0")) {
		t.Errorf("bangerd is %q", got)
	}
}

func TestUpdateDryRun(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.binDir)
	opts := f.options()
	opts.DryRun = true
	res, err := Update(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || res.To != "v0.3.0" || len(res.Installed) != 0 {
		t.Errorf("result %+v", res)
	}
	assertSameSnapshot(t, before, snapshot(t, f.binDir))
	if f.svc.restarts != 0 || len(f.svc.healthCalls) != 0 {
		t.Errorf("dry run restarted (%d) or checked health (%v)", f.svc.restarts, f.svc.healthCalls)
	}
	if f.stages[len(f.stages)-2] != StageVerify {
		t.Errorf("stages %v: the binaries were not checked", f.stages)
	}
}

// TestUpdateRefusals checks every failure before the swap leaves the
// install directory exactly as it was.
func TestUpdateRefusals(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, f *fixture, o *Options)
		want  string
	}{
		{"unknown version", func(t *testing.T, f *fixture, o *Options) { o.Version = "v9.9.9" },
			"release v9.9.9 not found in manifest (latest is v0.3.0)"},
		{"already current", func(t *testing.T, f *fixture, o *Options) { o.CurrentVersion = "v0.3.0" },
			"v0.3.0 is already installed"},
		{"signed by another key", func(t *testing.T, f *fixture, o *Options) {
			other := newTestKey(t)
			f.host.set("v0.3.0/SHA256SUMS.sig", other.sign(t, f.host.files["v0.3.0/SHA256SUMS"]))
		}, "signature check failed: signature does not match the release public key"},
		{"sums changed after signing", func(t *testing.T, f *fixture, o *Options) {
			f.host.set("v0.3.0/SHA256SUMS", append(f.host.files["v0.3.0/SHA256SUMS"], "\n"...))
		}, "signature check failed"},
		{"garbage signature", func(t *testing.T, f *fixture, o *Options) {
			f.host.set("v0.3.0/SHA256SUMS.sig", []byte("MEUCIQ==\n"))
		}, "signature check failed"},
		{"embedded key by default", func(t *testing.T, f *fixture, o *Options) { o.PublicKeyPEM = "" },
			"signature check failed"},
		{"archive hash", func(t *testing.T, f *fixture, o *Options) {
			f.host.set("v0.3.0/banger-v0.3.0-linux-amd64.tar.gz", makeArchive(t, releaseMembers("v0.3.1")))
		}, "archive checksum mismatch: banger-v0.3.0-linux-amd64.tar.gz has sha256"},
		{"archive missing", func(t *testing.T, f *fixture, o *Options) {
			delete(f.host.files, "v0.3.0/banger-v0.3.0-linux-amd64.tar.gz")
		}, "404 Not Found"},
		{"sums too large", func(t *testing.T, f *fixture, o *Options) {
			f.host.set("v0.3.0/SHA256SUMS", make([]byte, MaxSumsSize+1))
		}, "limit"},
		{"extra member", func(t *testing.T, f *fixture, o *Options) {
			republish(t, f, append(releaseMembers("v0.3.0"), tarMember{name: "README", body: []byte("hi")}))
		}, `unexpected member "README"`},
		{"escaping member", func(t *testing.T, f *fixture, o *Options) {
			republish(t, f, append(releaseMembers("v0.3.0"), tarMember{name: "../bangerd", body: []byte("x")}))
		}, `unexpected member "../bangerd"`},
		{"absolute member", func(t *testing.T, f *fixture, o *Options) {
			republish(t, f, append(releaseMembers("v0.3.0")[1:], tarMember{name: "/usr/local/bin/banger", body: []byte("x")}))
		}, `unexpected member "/usr/local/bin/banger"`},
		{"subdirectory member", func(t *testing.T, f *fixture, o *Options) {
			republish(t, f, append(releaseMembers("v0.3.0")[1:], tarMember{name: "bin/banger", body: []byte("x")}))
		}, `unexpected member "bin/banger"`},
		{"symlink member", func(t *testing.T, f *fixture, o *Options) {
			ms := releaseMembers("v0.3.0")
			ms[0] = tarMember{name: ms[0].name, typeflag: tar.TypeSymlink, linkname: "/bin/sh"}
			republish(t, f, ms)
		}, "is not a regular file"},
		{"duplicate member", func(t *testing.T, f *fixture, o *Options) {
			republish(t, f, append(releaseMembers("v0.3.0"), releaseMembers("v0.3.0")[0]))
		}, "appears twice"},
		{"missing member", func(t *testing.T, f *fixture, o *Options) {
			republish(t, f, releaseMembers("v0.3.0")[:3])
		}, "is missing"},
		{"not gzip", func(t *testing.T, f *fixture, o *Options) {
			republishRaw(t, f, []byte("this is not an archive"))
		}, "archive: gzip: invalid header"},
		{"binaries of another version", func(t *testing.T, f *fixture, o *Options) {
			republish(t, f, releaseMembers("v0.2.0"))
		}, `staged bangerd reports "bangerd v0.2.0", want v0.3.0`},
		{"binary does not run", func(t *testing.T, f *fixture, o *Options) {
			ms := releaseMembers("v0.3.0")
			for i := range ms {
				if ms[i].name == BinCLI {
					ms[i].body = []byte("#!/bin/sh\nexit 3\n")
				}
			}
			republish(t, f, ms)
		}, "staged banger: "},
		{"unwritable install directory", func(t *testing.T, f *fixture, o *Options) {
			o.CheckWritable = func(dir string) error { return &PermissionError{Dir: dir, Err: os.ErrPermission} }
		}, "no permission to replace binaries in "},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			opts := f.options()
			c.setup(t, f, &opts)
			before := snapshot(t, f.binDir)
			_, err := Update(t.Context(), opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			assertSameSnapshot(t, before, snapshot(t, f.binDir))
			if f.svc.restarts != 0 || len(f.svc.healthCalls) != 0 {
				t.Errorf("restarted %d times, health calls %v", f.svc.restarts, f.svc.healthCalls)
			}
		})
	}
}

func TestUpdateUnwritableMessage(t *testing.T) {
	f := newFixture(t)
	opts := f.options()
	opts.CheckWritable = func(dir string) error { return &PermissionError{Dir: dir, Err: os.ErrPermission} }
	_, err := Update(t.Context(), opts)
	if err == nil || err.Error() != "no permission to replace binaries in "+f.binDir+": run with sudo" {
		t.Fatalf("err = %v", err)
	}
	if !errors.Is(err, os.ErrPermission) {
		t.Errorf("%v does not wrap os.ErrPermission", err)
	}
}

// republish replaces v0.3.0's archive with one of the given members, with
// matching, correctly signed sums.
func republish(t *testing.T, f *fixture, members []tarMember) {
	republishRaw(t, f, makeArchive(t, members))
}

func republishRaw(t *testing.T, f *fixture, archive []byte) {
	t.Helper()
	name := "banger-v0.3.0-linux-amd64.tar.gz"
	sums := []byte(sha256Hex(archive) + "  " + name + "\n")
	f.host.set("v0.3.0/"+name, archive)
	f.host.set("v0.3.0/SHA256SUMS", sums)
	f.host.set("v0.3.0/SHA256SUMS.sig", f.key.sign(t, sums))
}

func TestUpdateHealthFailsRollsBack(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.binDir)
	f.svc.healthErr = func(v string) error {
		if v == "v0.3.0" {
			return errors.New("migrations check failed")
		}
		return nil
	}
	_, err := Update(t.Context(), f.options())
	var ue *UpdateError
	if !errors.As(err, &ue) || ue.Stage != StageHealth || ue.RollbackErr != nil || ue.RecoverErr != nil {
		t.Fatalf("err = %#v", err)
	}
	if want := "update to v0.3.0 failed: health: migrations check failed; rolled back to v0.2.0"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	assertSameSnapshot(t, before, snapshot(t, f.binDir))
	if f.svc.restarts != 2 {
		t.Errorf("restarted %d times, want 2", f.svc.restarts)
	}
	if strings.Join(f.svc.healthCalls, ",") != "v0.3.0,v0.2.0" {
		t.Errorf("health calls %v", f.svc.healthCalls)
	}
}

func TestUpdateRestartFailsRollsBack(t *testing.T) {
	f := newFixture(t)
	// The helper is new in this install: the rollback removes it.
	if err := os.Remove(filepath.Join(f.binDir, BinHelper)); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, f.binDir)
	f.svc.restartErr = func(n int) error {
		if n == 1 {
			return errors.New("bangerd.service failed to start")
		}
		return nil
	}
	_, err := Update(t.Context(), f.options())
	if err == nil || err.Error() != "update to v0.3.0 failed: restart: bangerd.service failed to start; rolled back to v0.2.0" {
		t.Fatalf("err = %v", err)
	}
	assertSameSnapshot(t, before, snapshot(t, f.binDir))
	if f.svc.restarts != 2 {
		t.Errorf("restarted %d times, want 2", f.svc.restarts)
	}
	if strings.Join(f.svc.healthCalls, ",") != "v0.2.0" {
		t.Errorf("health calls %v", f.svc.healthCalls)
	}
}

func TestUpdateRollbackRestartFails(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.binDir)
	f.svc.restartErr = func(n int) error { return fmt.Errorf("restart %d failed", n) }
	_, err := Update(t.Context(), f.options())
	want := "update to v0.3.0 failed: restart: restart 1 failed; rolled back to v0.2.0 on disk, but the previous services did not come back: restart: restart 2 failed"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	assertSameSnapshot(t, before, snapshot(t, f.binDir))
}

func TestUpdateRollbackFailsLoudly(t *testing.T) {
	f := newFixture(t)
	// The restart fails and takes bangerd.previous with it, so the
	// rollback cannot restore bangerd.
	f.svc.restartErr = func(n int) error {
		if n == 1 {
			os.Remove(filepath.Join(f.binDir, BinDaemon+PreviousSuffix))
			return errors.New("boom")
		}
		return nil
	}
	_, err := Update(t.Context(), f.options())
	var ue *UpdateError
	if !errors.As(err, &ue) || ue.RollbackErr == nil {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	daemon := filepath.Join(f.binDir, BinDaemon)
	for _, want := range []string{
		"update to v0.3.0 failed: restart: boom; ROLLBACK FAILED: ",
		daemon + " is the NEW binary, the previous one is " + daemon + PreviousSuffix,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	// The others are restored; bangerd is the new one, as reported.
	if got := readFile(t, daemon); got != string(fakeBinary(BinDaemon, "v0.3.0")) {
		t.Errorf("bangerd is %q", got)
	}
	if got := readFile(t, filepath.Join(f.binDir, BinCLI)); got != string(fakeBinary(BinCLI, "v0.2.0")) {
		t.Errorf("banger is %q", got)
	}
	if f.svc.restarts != 1 {
		t.Errorf("restarted %d times: a failed rollback must not restart", f.svc.restarts)
	}
	assertNoStaging(t, f.binDir)
}

func TestUpdateContextCanceledDuringHealthStillRollsBack(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.binDir)
	ctx, cancel := context.WithCancel(t.Context())
	f.svc.healthErr = func(v string) error {
		if v == "v0.3.0" {
			cancel()
			return context.Canceled
		}
		return nil
	}
	_, err := Update(ctx, f.options())
	if !errors.Is(err, context.Canceled) || !strings.HasSuffix(err.Error(), "; rolled back to v0.2.0") {
		t.Fatalf("err = %v", err)
	}
	assertSameSnapshot(t, before, snapshot(t, f.binDir))
	if f.svc.restarts != 2 {
		t.Errorf("restarted %d times, want 2", f.svc.restarts)
	}
}

func TestRollback(t *testing.T) {
	f := newFixture(t)
	opts := f.options()
	if _, err := Rollback(t.Context(), opts); err == nil || !strings.Contains(err.Error(), "no previous binaries") {
		t.Fatalf("rollback without .previous: %v", err)
	}
	if _, err := Update(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	opts.CurrentVersion = "v0.3.0"
	res, err := Rollback(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.From != "v0.3.0" || res.To != "v0.2.0" || len(res.Installed) != 4 {
		t.Errorf("result %+v", res)
	}
	for _, b := range Binaries() {
		if got := readFile(t, filepath.Join(f.binDir, b)); got != string(fakeBinary(b, "v0.2.0")) {
			t.Errorf("%s is %q", b, got)
		}
		if _, err := os.Lstat(filepath.Join(f.binDir, b+PreviousSuffix)); err == nil {
			t.Errorf("%s%s is still there", b, PreviousSuffix)
		}
	}
	if f.svc.restarts != 2 || strings.Join(f.svc.healthCalls, ",") != "v0.3.0,v0.2.0" {
		t.Errorf("restarts %d, health calls %v", f.svc.restarts, f.svc.healthCalls)
	}
}

func TestConcurrentUpdateRefused(t *testing.T) {
	f := newFixture(t)
	unlock, err := lockDir(f.binDir)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	before := snapshot(t, f.binDir)
	if _, err := Update(t.Context(), f.options()); err == nil || !strings.Contains(err.Error(), "in progress") {
		t.Fatalf("err = %v", err)
	}
	assertSameSnapshot(t, before, snapshot(t, f.binDir))
}

func TestProbeWritable(t *testing.T) {
	dir := t.TempDir()
	if err := ProbeWritable(dir); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("probe left %v", entries)
	}
	if err := ProbeWritable(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing directory accepted")
	}
}

// TestProbeWritableUnprivileged runs the real probe on a read-only
// directory as an unprivileged user: directly when the test is not root,
// else in a copy of the test binary running as nobody.
func TestProbeWritableUnprivileged(t *testing.T) {
	if asNobody(t) {
		return
	}
	ro := filepath.Join(t.TempDir(), "bin")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	err := ProbeWritable(ro)
	var pe *PermissionError
	if !errors.As(err, &pe) || err.Error() != "no permission to replace binaries in "+ro+": run with sudo" {
		t.Fatalf("err = %v", err)
	}
	if entries, _ := os.ReadDir(ro); len(entries) != 0 {
		t.Errorf("probe left %v", entries)
	}
}

// TestUpdateUnwritableRealProbe runs Update with the real writability
// probe on a directory this process may not write: directly when the test
// is not root, else as nobody in a copy of the test binary.
func TestUpdateUnwritableRealProbe(t *testing.T) {
	if asNobody(t) {
		return
	}
	f := newFixture(t)
	if err := os.Chmod(f.binDir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(f.binDir, 0o755) })
	before := snapshot(t, f.binDir)
	_, err := Update(t.Context(), f.options())
	if err == nil || err.Error() != "no permission to replace binaries in "+f.binDir+": run with sudo" {
		t.Fatalf("err = %v", err)
	}
	assertSameSnapshot(t, before, snapshot(t, f.binDir))
}

const (
	// nobodyEnv marks the child process asNobody starts.
	nobodyEnv = "BANGER_UPDATER_TEST_AS_NOBODY"
	nobodyID  = 65534
)

// asNobody makes the calling test run as an unprivileged user, because
// root may write anywhere and would make a permission check pass without
// testing it. As a non-root user it returns false: the test goes on in
// this process. As root it runs the same test in a copy of the test binary
// as uid/gid 65534, fails the test unless that run passed (a skip there
// fails too), and returns true: the caller returns.
func asNobody(t *testing.T) bool {
	t.Helper()
	if os.Getenv(nobodyEnv) == "1" {
		if os.Geteuid() != nobodyID {
			t.Fatalf("child runs as uid %d, want %d", os.Geteuid(), nobodyID)
		}
		return false
	}
	if os.Geteuid() != 0 {
		return false
	}
	// A directory nobody can reach: under $TMPDIR (or /tmp), opened up.
	base, err := os.MkdirTemp("", "updater-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(base); ; d = filepath.Dir(d) {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm()&0o001 == 0 {
			t.Fatalf("%s is closed to uid %d, so the test cannot run unprivileged; point TMPDIR at a directory others may enter", d, nobodyID)
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(base, "updater.test")
	if err := os.WriteFile(child, data, 0o755); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(base, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(work, nobodyID, nobodyID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, child, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), nobodyEnv+"=1", "TMPDIR="+work, "HOME="+work)
	cmd.Dir = work
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyID, Gid: nobodyID, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+t.Name()+" ") {
		t.Fatalf("%s as uid %d: %v\n%s", t.Name(), nobodyID, err, out)
	}
	t.Logf("ran as uid %d:\n%s", nobodyID, out)
	return true
}

func assertNoStaging(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stagingPattern) || strings.HasPrefix(e.Name(), probePattern) {
			t.Errorf("%s was left behind", e.Name())
		}
	}
}
