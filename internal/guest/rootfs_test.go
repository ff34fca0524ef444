package guest

import (
	"bytes"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// A FROM-scratch image: nothing but /bin/busybox and a /bin/sh link.
func scratchImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	os.WriteFile(filepath.Join(dir, "bin", "busybox"), []byte("ELF"), 0o755)
	os.Symlink("busybox", filepath.Join(dir, "bin", "sh"))
	return dir
}

func TestPrepareRootScratchImage(t *testing.T) {
	dir := scratchImage(t)
	var logs bytes.Buffer
	if err := PrepareRoot(openRoot(t, dir), log.New(&logs, "", 0)); err != nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 {
		t.Errorf("unexpected log: %s", logs.String())
	}
	for name, want := range map[string]fs.FileMode{
		"dev": 0o755, "proc": 0o555, "sys": 0o555, "run": 0o755, "root": 0o700, "etc": 0o755,
		"tmp": 0o777 | fs.ModeSticky,
	} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("/%s: %v", name, err)
			continue
		}
		if !fi.IsDir() || fi.Mode()&(fs.ModePerm|fs.ModeSticky) != want {
			t.Errorf("/%s: mode %v, want a directory with %v", name, fi.Mode(), want)
		}
	}
	hosts, _ := os.ReadFile(filepath.Join(dir, "etc/hosts"))
	passwd, _ := os.ReadFile(filepath.Join(dir, "etc/passwd"))
	group, _ := os.ReadFile(filepath.Join(dir, "etc/group"))
	if !strings.Contains(string(hosts), "127.0.0.1\tlocalhost") || string(passwd) != "root:x:0:0:root:/root:/bin/sh\n" || string(group) != "root:x:0:\n" {
		t.Errorf("hosts %q passwd %q group %q", hosts, passwd, group)
	}

	// What the rest of the boot writes works on such a root too.
	r := openRoot(t, dir)
	if err := WriteResolvConf(r, []string{"172.16.0.1"}); err != nil {
		t.Fatal(err)
	}
	setHostname(log.New(&logs, "", 0), r, "box")
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/resolv.conf")); string(b) != "nameserver 172.16.0.1\n" {
		t.Errorf("resolv.conf %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/hosts")); !strings.Contains(string(b), "127.0.1.1\tbox\n") {
		t.Errorf("hosts after setHostname %q", b)
	}
	if err := installAgent(r); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, AgentPath)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("agent not installed: %v", err)
	}
}

// An image that has everything keeps it byte for byte and mode for mode.
func TestPrepareRootKeepsImage(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"dev", "proc", "sys", "run", "root", "etc"} {
		os.Mkdir(filepath.Join(dir, d), 0o711)
	}
	os.Mkdir(filepath.Join(dir, "tmp"), 0o700)
	mine := map[string]string{"etc/hosts": "10.0.0.1 mine\n", "etc/passwd": "root:x:0:0::/root:/bin/bash\n"}
	for f, c := range mine {
		os.WriteFile(filepath.Join(dir, f), []byte(c), 0o600)
	}
	os.Symlink("/nowhere/group", filepath.Join(dir, "etc/group")) // dangling: left alone
	if err := PrepareRoot(openRoot(t, dir), log.New(&bytes.Buffer{}, "", 0)); err != nil {
		t.Fatal(err)
	}
	for f, c := range mine {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != c {
			t.Errorf("%s changed: %q", f, b)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "etc/group")); err != nil || l != "/nowhere/group" {
		t.Errorf("etc/group link changed: %q %v", l, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "tmp")); fi.Mode().Perm() != 0o700 {
		t.Errorf("existing /tmp mode changed: %v", fi.Mode())
	}
}

// Links in the image never take a write or a mount outside the root: an
// /etc pointing out of it is logged and skipped, an essential directory
// pointing out of it fails the boot with a clear error.
func TestPrepareRootHostileLinks(t *testing.T) {
	outside := t.TempDir()
	for _, link := range []string{outside, "../../../../../../../../" + outside} {
		dir := scratchImage(t)
		os.Symlink(link, filepath.Join(dir, "etc"))
		var logs bytes.Buffer
		r := openRoot(t, dir)
		if err := PrepareRoot(r, log.New(&logs, "", 0)); err != nil {
			t.Fatalf("an /etc link out of the image must not stop the boot: %v", err)
		}
		if !strings.Contains(logs.String(), "prepare /etc") {
			t.Errorf("no log about /etc: %q", logs.String())
		}
		if err := WriteResolvConf(r, []string{"1.2.3.4"}); err == nil {
			t.Error("resolv.conf written through a link out of the image")
		}
		setHostname(log.New(&logs, "", 0), r, "box")
		EnsureHostKeys(dir)
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("files written outside the root: %v", entries)
		}

		dir = scratchImage(t)
		os.Symlink(link, filepath.Join(dir, "run"))
		if err := PrepareRoot(openRoot(t, dir), log.New(&logs, "", 0)); err == nil || !strings.Contains(err.Error(), "/run") {
			t.Errorf("/run linked out of the image: %v", err)
		}
		r = openRoot(t, dir)
		if err := installAgent(r); err == nil {
			t.Error("agent installed through a link out of the image")
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("files written outside the root: %v", entries)
		}
	}
	// A file where a directory belongs.
	dir := scratchImage(t)
	os.WriteFile(filepath.Join(dir, "proc"), nil, 0o644)
	if err := PrepareRoot(openRoot(t, dir), log.New(&bytes.Buffer{}, "", 0)); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("/proc as a file: %v", err)
	}
}

// A link that stays inside the image is followed as the guest would.
func TestPrepareRootLinkInsideImage(t *testing.T) {
	dir := scratchImage(t)
	os.MkdirAll(filepath.Join(dir, "usr/etc"), 0o755)
	os.Symlink("usr/etc", filepath.Join(dir, "etc"))
	r := openRoot(t, dir)
	if err := PrepareRoot(r, log.New(&bytes.Buffer{}, "", 0)); err != nil {
		t.Fatal(err)
	}
	if err := WriteResolvConf(r, []string{"10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "usr/etc/resolv.conf")); err != nil {
		t.Errorf("resolv.conf not written through the inner link: %v", err)
	}
	// A resolv.conf that is a link (into a resolver's /run) is replaced,
	// not written through.
	os.Remove(filepath.Join(dir, "usr/etc/resolv.conf"))
	os.Symlink("../run/resolved/stub.conf", filepath.Join(dir, "usr/etc/resolv.conf"))
	if err := WriteResolvConf(r, []string{"10.0.0.2"}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "usr/etc/resolv.conf")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("resolv.conf link not replaced: %v", err)
	}
}

func TestCopyTreeConfined(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	outside := t.TempDir()
	os.MkdirAll(filepath.Join(src, ".config"), 0o750)
	os.WriteFile(filepath.Join(src, ".bashrc"), []byte("PS1=x\n"), 0o640)
	os.Symlink(outside, filepath.Join(src, "escape"))
	if err := copyTree(openRoot(t, src), openRoot(t, dst)); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, ".bashrc")); string(b) != "PS1=x\n" {
		t.Errorf(".bashrc %q", b)
	}
	if fi, err := os.Stat(filepath.Join(dst, ".config")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf(".config: %v", err)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "escape")); l != outside {
		t.Errorf("link not copied as a link: %q", l)
	}
}
