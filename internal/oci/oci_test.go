package oci

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"golang.org/x/sys/unix"

	"banger/internal/model"
)

// capNetRaw is a VFS_CAP_REVISION_2 security.capability value granting
// cap_net_raw (bit 13), as setcap would store it.
const capNetRaw = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

var testConfig = v1.Config{
	Entrypoint: []string{"/bin/sh"},
	Cmd:        []string{"-c", "echo hi"},
	Env:        []string{"PATH=/bin:/usr/bin", "FOO=bar"},
	WorkingDir: "/home/user",
	User:       "1234",
}

// testImage is a three-layer image (gzip, zstd, uncompressed) covering
// whiteouts, opaque directories, links, devices, odd modes and owners.
func testImage(t testing.TB) v1.Image {
	l1 := gzipLayer(t,
		dir("./", 0o755),
		dir("bin/", 0o755),
		reg("bin/busybox", "BUSYBOX", 0o755),
		ent{name: "bin/su", typ: tar.TypeReg, mode: 0o4755, body: "SU"},
		ent{name: "sgid", typ: tar.TypeReg, mode: 0o2755, gid: 50, body: "SG"},
		dir("etc/", 0o755),
		reg("etc/hosts", "old hosts\n", 0o644),
		dir("data/", 0o755),
		reg("data/old.txt", "old", 0o644),
		reg("data/keep.txt", "keep", 0o644),
		reg("data/re.txt", "v1", 0o644),
		dir("opq/", 0o755),
		reg("opq/lower1", "l1", 0o644),
		dir("opq/sub/", 0o755),
		reg("opq/sub/deep", "d", 0o644),
		dir("home/", 0o755),
		ent{name: "home/user/", typ: tar.TypeDir, mode: 0o750, uid: 1234, gid: 5678},
		ent{name: "home/user/file", typ: tar.TypeReg, mode: 0o640, uid: 1234, gid: 5678, body: "owned"},
		dir("dev/", 0o755),
		ent{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		ent{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660, gid: 6, major: 8, minor: 0},
		ent{name: "dev/big", typ: tar.TypeChar, mode: 0o600, major: 300, minor: 70000},
		dir("tmp/", 0o1777),
		ent{name: "tmp/fifo", typ: tar.TypeFifo, mode: 0o620, uid: 1234},
		dir("with space/", 0o755),
		reg("with space/file name", "spaced", 0o644),
		dir("ro/", 0o555),
		reg("ro/inside", "ro", 0o444),
		dir("usr/", 0o755),
		dir("usr/bin/", 0o755),
		ent{name: "usr/bin/ping", typ: tar.TypeReg, mode: 0o755, body: "PING",
			xattrs: map[string]string{"security.capability": capNetRaw, "user.note": "hello"}},
		reg("var/cache/x/y", "cache", 0o644), // parents implicit
		reg("/abs/file", "abs", 0o644),
	)
	l2 := zstdLayer(t,
		wh("data/.wh.old.txt"),
		reg("data/re.txt", "v2", 0o644),
		wh("data/.wh.re.txt"), // after the file of the same layer: keeps it
		dir("opq/", 0o755),
		wh("opq/.wh..wh..opq"),
		reg("opq/upper", "u", 0o644),
		ent{name: "bin/busybox-link", typ: tar.TypeLink, link: "bin/busybox"},
		dir("lib/", 0o755),
		ent{name: "lib/hosts-link", typ: tar.TypeLink, link: "/etc/hosts"},
		ent{name: "bin/sh", typ: tar.TypeSymlink, link: "busybox", mode: 0o777},
		reg(`weird/a "q" b`, "quoted", 0o644),
		ent{name: "dev/null2", typ: tar.TypeLink, link: "dev/null"},
	)
	l3 := rawLayer(t,
		reg("etc/hosts", "new hosts\n", 0o644), // lib/hosts-link keeps the old one
		wh("var/.wh.cache"),
		reg("./bin/./late", "late", 0o700),
	)
	return makeImage(t, "amd64", testConfig, l1, l2, l3)
}

// want is one expected entry of the test image.
type want struct {
	path     string
	mode     uint32
	uid, gid int
	body     *string
	link     string
	dev      string // "major:minor"
}

func s(v string) *string { return &v }

var wants = []want{
	{path: "/", mode: unix.S_IFDIR | 0o755},
	{path: "/bin/busybox", mode: unix.S_IFREG | 0o755, body: s("BUSYBOX")},
	{path: "/bin/busybox-link", mode: unix.S_IFREG | 0o755, body: s("BUSYBOX")},
	{path: "/bin/su", mode: unix.S_IFREG | 0o4755, body: s("SU")},
	{path: "/bin/sh", mode: unix.S_IFLNK | 0o777, link: "busybox"},
	{path: "/bin/late", mode: unix.S_IFREG | 0o700, body: s("late")},
	{path: "/sgid", mode: unix.S_IFREG | 0o2755, gid: 50, body: s("SG")},
	{path: "/etc/hosts", mode: unix.S_IFREG | 0o644, body: s("new hosts\n")},
	{path: "/lib/hosts-link", mode: unix.S_IFREG | 0o644, body: s("old hosts\n")},
	{path: "/data/keep.txt", mode: unix.S_IFREG | 0o644, body: s("keep")},
	{path: "/data/re.txt", mode: unix.S_IFREG | 0o644, body: s("v2")},
	{path: "/opq/upper", mode: unix.S_IFREG | 0o644, body: s("u")},
	{path: "/home/user", mode: unix.S_IFDIR | 0o750, uid: 1234, gid: 5678},
	{path: "/home/user/file", mode: unix.S_IFREG | 0o640, uid: 1234, gid: 5678, body: s("owned")},
	{path: "/dev/null", mode: unix.S_IFCHR | 0o666, dev: "1:3"},
	{path: "/dev/null2", mode: unix.S_IFCHR | 0o666, dev: "1:3"},
	{path: "/dev/sda", mode: unix.S_IFBLK | 0o660, gid: 6, dev: "8:0"},
	{path: "/dev/big", mode: unix.S_IFCHR | 0o600, dev: "300:70000"},
	{path: "/tmp", mode: unix.S_IFDIR | 0o1777},
	{path: "/tmp/fifo", mode: unix.S_IFIFO | 0o620, uid: 1234},
	{path: "/with space/file name", mode: unix.S_IFREG | 0o644, body: s("spaced")},
	{path: "/ro", mode: unix.S_IFDIR | 0o555},
	{path: "/ro/inside", mode: unix.S_IFREG | 0o444, body: s("ro")},
	{path: "/usr/bin/ping", mode: unix.S_IFREG | 0o755, body: s("PING")},
	{path: "/var", mode: unix.S_IFDIR | 0o755},
	{path: "/abs/file", mode: unix.S_IFREG | 0o644, body: s("abs")},
	{path: `/weird/a "q" b`, mode: unix.S_IFREG | 0o644, body: s("quoted")},
}

var gone = []string{"/data/old.txt", "/opq/lower1", "/opq/sub", "/opq/sub/deep", "/var/cache", "/var/cache/x/y",
	"/data/.wh.old.txt", "/data/.wh.re.txt", "/opq/.wh..wh..opq", "/var/.wh.cache"}

func checkTree(t *testing.T, tr *Tree) {
	t.Helper()
	for _, w := range wants {
		e, ok := tr.Get(w.path)
		if !ok {
			t.Errorf("tree: %s missing", w.path)
			continue
		}
		if e.Mode != w.mode || e.UID != w.uid || e.GID != w.gid {
			t.Errorf("tree: %s: mode 0%o %d:%d, want 0%o %d:%d", w.path, e.Mode, e.UID, e.GID, w.mode, w.uid, w.gid)
		}
		if w.dev != "" && fmt.Sprintf("%d:%d", e.Major, e.Minor) != w.dev {
			t.Errorf("tree: %s: device %d:%d, want %s", w.path, e.Major, e.Minor, w.dev)
		}
	}
	for _, p := range gone {
		if _, ok := tr.Get(p); ok {
			t.Errorf("tree: %s should be gone", p)
		}
	}
	if e, _ := tr.Get("/usr/bin/ping"); e == nil || string(e.Xattrs["security.capability"]) != capNetRaw {
		t.Errorf("tree: /usr/bin/ping lacks its capability")
	}
	// Paths lists parents first.
	seen := map[string]bool{}
	for _, p := range tr.Paths() {
		if p != "/" && !seen[path.Dir(p)] {
			t.Errorf("Paths: %s before its parent", p)
		}
		seen[p] = true
	}
	if len(seen) != tr.Len() {
		t.Errorf("Paths has %d entries, Len %d", len(seen), tr.Len())
	}
}

// lsEnt is a line of debugfs' ls -p.
type lsEnt struct {
	ino      uint64
	mode     uint32
	uid, gid int
}

// atoi drops leading zeros.
func atoi(s string) string {
	n, _ := strconv.Atoi(s)
	return strconv.Itoa(n)
}

func quoteT(p string) string { return `"` + strings.ReplaceAll(p, `"`, `""`) + `"` }

// lookup finds p in the image, listing its parent with debugfs.
func lookup(t *testing.T, img, p string) (lsEnt, bool) {
	t.Helper()
	dir, base := path.Split(p)
	if p == "/" {
		dir, base = "/", "."
	}
	for _, line := range strings.Split(debugfsR(t, img, "ls -p "+quoteT(dir)), "\n") {
		f := strings.Split(line, "/")
		// "", ino, mode, uid, gid, name, size, ""
		if len(f) != 8 || f[5] != base {
			continue
		}
		ino, _ := strconv.ParseUint(f[1], 10, 64)
		mode, _ := strconv.ParseUint(f[2], 8, 32)
		uid, _ := strconv.Atoi(f[3])
		gid, _ := strconv.Atoi(f[4])
		return lsEnt{ino, uint32(mode), uid, gid}, true
	}
	return lsEnt{}, false
}

var (
	devRE   = regexp.MustCompile(`Device major/minor number: ([0-9]+):([0-9]+)`)
	linkRE  = regexp.MustCompile(`Fast link dest: "(.*)"`)
	mtimeRE = regexp.MustCompile(`(?m)^ mtime: 0x([0-9a-f]+)`)
)

// checkExt4 checks the ext4 file built from testImage, entry by entry.
func checkExt4(t *testing.T, img string) {
	t.Helper()
	inodes := map[string]uint64{}
	for _, w := range wants {
		got, ok := lookup(t, img, w.path)
		if !ok {
			t.Errorf("ext4: %s missing", w.path)
			continue
		}
		inodes[w.path] = got.ino
		if got.mode != w.mode || got.uid != w.uid || got.gid != w.gid {
			t.Errorf("ext4: %s: mode 0%o %d:%d, want 0%o %d:%d", w.path, got.mode, got.uid, got.gid, w.mode, w.uid, w.gid)
		}
		if w.body != nil {
			if b := debugfsR(t, img, "cat "+quoteT(w.path)); b != *w.body {
				t.Errorf("ext4: %s: content %q, want %q", w.path, b, *w.body)
			}
		}
		st := debugfsR(t, img, "stat "+quoteT(w.path))
		if w.link != "" {
			if m := linkRE.FindStringSubmatch(st); m == nil || m[1] != w.link {
				t.Errorf("ext4: %s: symlink %v, want %q", w.path, m, w.link)
			}
		}
		if w.dev != "" {
			if m := devRE.FindStringSubmatch(st); m == nil || atoi(m[1])+":"+atoi(m[2]) != w.dev {
				t.Errorf("ext4: %s: device %v, want %s", w.path, m, w.dev)
			}
		}
		if m := mtimeRE.FindStringSubmatch(st); m == nil {
			t.Errorf("ext4: %s: no mtime in %s", w.path, st)
		} else if v, _ := strconv.ParseInt(m[1], 16, 64); v != testTime.Unix() {
			t.Errorf("ext4: %s: mtime %d, want %d", w.path, v, testTime.Unix())
		}
	}
	for _, p := range gone {
		if _, ok := lookup(t, img, p); ok {
			t.Errorf("ext4: %s should be gone", p)
		}
	}
	if inodes["/bin/busybox"] != inodes["/bin/busybox-link"] {
		t.Errorf("ext4: /bin/busybox-link is inode %d, /bin/busybox %d: not a hard link", inodes["/bin/busybox-link"], inodes["/bin/busybox"])
	}
	if inodes["/etc/hosts"] == inodes["/lib/hosts-link"] {
		t.Errorf("ext4: /lib/hosts-link should keep the replaced /etc/hosts' inode")
	}
	if st := debugfsR(t, img, "stat /bin/busybox"); !strings.Contains(st, "Links: 2") {
		t.Errorf("ext4: /bin/busybox link count: %s", st)
	}
	ea := debugfsR(t, img, "ea_list /usr/bin/ping")
	if !strings.Contains(ea, "security.capability (20) = 01 00 00 02 00 20 00 00") || !strings.Contains(ea, `user.note (5) = "hello"`) {
		t.Errorf("ext4: /usr/bin/ping xattrs: %s", ea)
	}
	if ea := debugfsR(t, img, "ea_list /bin/busybox"); strings.Contains(ea, "=") {
		t.Errorf("ext4: /bin/busybox has xattrs: %s", ea)
	}
	if st := debugfsR(t, img, "stats"); !strings.Contains(st, "Filesystem volume name:   root") {
		t.Errorf("ext4: label: %s", st)
	}
}

// pipeline resolves ref, unpacks it and builds the ext4 in work,
// checking every step; it returns the ext4 path and the unpacked dir.
func pipeline(t *testing.T, ref, work string) (string, string) {
	t.Helper()
	ctx := context.Background()
	var pulled, pullTotal int64
	img, info, err := Resolve(ctx, ref, PullOptions{Progress: func(c, tot int64) { pulled, pullTotal = c, tot }})
	if err != nil {
		t.Fatal(err)
	}
	if info.Layers != 3 || info.CompressedSize <= 0 || info.Platform != "linux/amd64" {
		t.Errorf("info: %+v", info)
	}
	if info.Config.WorkingDir != "/home/user" || info.Config.User != "1234" || strings.Join(info.Config.Entrypoint, " ") != "/bin/sh" ||
		strings.Join(info.Config.Cmd, " ") != "-c echo hi" || strings.Join(info.Config.Env, " ") != "PATH=/bin:/usr/bin FOO=bar" {
		t.Errorf("info config: %+v", info.Config)
	}
	var cur, tot int64
	dir := filepath.Join(work, "tree")
	tr, err := Unpack(ctx, img, dir, UnpackOptions{Progress: func(c, t int64) { cur, tot = c, t }})
	if err != nil {
		t.Fatal(err)
	}
	if tot != info.CompressedSize || cur != tot {
		t.Errorf("unpack progress %d/%d, want %d", cur, tot, info.CompressedSize)
	}
	if pullTotal != info.CompressedSize || pulled != pullTotal {
		t.Errorf("pull progress %d/%d, want %d", pulled, pullTotal, info.CompressedSize)
	}
	checkTree(t, tr)
	if _, err := os.Lstat(filepath.Join(dir, "dev/null")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device node on the host: %v", err)
	}
	out := filepath.Join(work, "rootfs.ext4")
	if err := BuildExt4(ctx, dir, tr, out, 0); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() != minAutoSize {
		t.Errorf("ext4 size: %v %v", fi, err)
	}
	if _, err := os.Stat(out + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
	checkExt4(t, out)
	return out, dir
}

const (
	childRefEnv  = "BANGER_OCI_TEST_REF"
	childWorkEnv = "BANGER_OCI_TEST_WORK"
	nobody       = 65534
)

// TestPullUnpackBuildExt4 runs the whole pipeline against an in-process
// registry as the current user and, when that is root, again as an
// unprivileged user (uid 65534) in a child process, which also runs
// TestBuildExt4EdgeCases.
func TestPullUnpackBuildExt4(t *testing.T) {
	needE2fsprogs(t)
	ref := startRegistry(t) + "/test/img:v1"
	push(t, ref, testImage(t))
	_, dir := pipeline(t, ref, t.TempDir())

	if os.Geteuid() != 0 {
		t.Log("not root: the unprivileged path was covered above")
		return
	}
	// As root, the host copy has the real owners.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "home/user/file"), &st); err != nil || st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("host ownership as root: %+v %v", st, err)
	}

	// Again as nobody: copy the test binary where it can run it.
	base, err := os.MkdirTemp("", "oci-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	for p := filepath.Dir(base); p != "/"; p = filepath.Dir(p) {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o001 == 0 {
			t.Skipf("%s is not reachable by uid %d", p, nobody)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "oci.test")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(base, "work")
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(work, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^(TestUnprivilegedChild|TestBuildExt4EdgeCases)$", "-test.v", "-test.count=1")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), childRefEnv+"="+ref, childWorkEnv+"="+work,
		"TMPDIR="+work, "HOME="+work, "DOCKER_CONFIG="+filepath.Join(work, "docker"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestUnprivilegedChild") ||
		!strings.Contains(string(out), "--- PASS: TestBuildExt4EdgeCases") {
		t.Fatalf("unprivileged run: %v\n%s", err, out)
	}
	t.Logf("unprivileged run:\n%s", out)
}

// TestUnprivilegedChild is TestPullUnpackBuildExt4's unprivileged half.
func TestUnprivilegedChild(t *testing.T) {
	ref := os.Getenv(childRefEnv)
	if ref == "" {
		t.Skip("run by TestPullUnpackBuildExt4")
	}
	if os.Geteuid() == 0 {
		t.Fatal("running as root")
	}
	_, dir := pipeline(t, ref, os.Getenv(childWorkEnv))
	// The host copy is this user's, readable, with no setuid-root file.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "bin/su"), &st); err != nil || int(st.Uid) != os.Geteuid() || st.Mode&0o600 != 0o600 {
		t.Errorf("host copy of /bin/su: %+v %v", st, err)
	}
	if err := unix.Lstat(filepath.Join(dir, "ro/inside"), &st); err != nil || st.Mode&0o600 != 0o600 {
		t.Errorf("host copy of /ro/inside: %+v %v", st, err)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	host := startRegistry(t)
	amd := makeImage(t, "amd64", testConfig, gzipLayer(t, reg("arch", "amd64", 0o644)))
	arm := makeImage(t, "arm64", v1.Config{}, gzipLayer(t, reg("arch", "arm64", 0o644)))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	pushIndex(t, host+"/test/multi:latest", idx)
	push(t, host+"/test/armonly:1", arm)

	t.Run("index picks amd64", func(t *testing.T) {
		img, info, err := Resolve(ctx, host+"/test/multi", PullOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if info.Digest != digestOf(t, amd) || digestOf(t, img) != info.Digest || info.Platform != "linux/amd64" {
			t.Errorf("got %+v, want digest %s", info, digestOf(t, amd))
		}
		if info.Ref != host+"/test/multi:latest" || info.Pinned != host+"/test/multi@"+info.Digest {
			t.Errorf("ref %q pinned %q", info.Ref, info.Pinned)
		}
		if info.Config.WorkingDir != "/home/user" || info.Layers != 1 {
			t.Errorf("info %+v", info)
		}
	})
	t.Run("index picks arm64", func(t *testing.T) {
		_, info, err := Resolve(ctx, host+"/test/multi:latest", PullOptions{Platform: "linux/arm64"})
		if err != nil {
			t.Fatal(err)
		}
		if info.Digest != digestOf(t, arm) || info.Platform != "linux/arm64/v8" && info.Platform != "linux/arm64" {
			t.Errorf("got %+v", info)
		}
	})
	t.Run("index without the platform", func(t *testing.T) {
		_, _, err := Resolve(ctx, host+"/test/multi:latest", PullOptions{Platform: "linux/s390x"})
		if err == nil || !strings.Contains(err.Error(), "linux/s390x") || !strings.Contains(err.Error(), "linux/amd64") ||
			!strings.Contains(err.Error(), "linux/arm64") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("by digest", func(t *testing.T) {
		ref := host + "/test/multi@" + digestOf(t, amd)
		img, info, err := Resolve(ctx, ref, PullOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if info.Digest != digestOf(t, amd) || digestOf(t, img) != info.Digest || info.Ref != ref {
			t.Errorf("got %+v", info)
		}
	})
	t.Run("index by digest", func(t *testing.T) {
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		_, info, err := Resolve(ctx, host+"/test/multi@"+d.String(), PullOptions{})
		if err != nil || info.Digest != digestOf(t, amd) {
			t.Errorf("got %+v %v", info, err)
		}
	})
	t.Run("unknown tag", func(t *testing.T) {
		_, _, err := Resolve(ctx, host+"/test/multi:nope", PullOptions{})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "test/multi:nope") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("unknown repository", func(t *testing.T) {
		_, _, err := Resolve(ctx, host+"/test/nothing:1", PullOptions{})
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("wrong platform", func(t *testing.T) {
		_, _, err := Resolve(ctx, host+"/test/armonly:1", PullOptions{})
		if err == nil || !strings.Contains(err.Error(), "linux/arm64") {
			t.Errorf("err = %v", err)
		}
		if _, _, err := Resolve(ctx, host+"/test/armonly:1", PullOptions{Platform: "linux/arm64"}); err != nil {
			t.Error(err)
		}
	})
	t.Run("bad reference", func(t *testing.T) {
		if _, _, err := Resolve(ctx, "UPPER/case:1", PullOptions{}); err == nil {
			t.Error("no error")
		}
		if _, _, err := Resolve(ctx, host+"/test/multi", PullOptions{Platform: "linux/amd64/v2/x"}); err == nil {
			t.Error("no error for a bad platform")
		}
	})
	t.Run("canceled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := Resolve(cctx, host+"/test/multi", PullOptions{}); !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestIsLoopback(t *testing.T) {
	for reg, want := range map[string]bool{
		"localhost": true, "localhost:5000": true, "127.0.0.1:80": true, "[::1]:5000": true,
		"index.docker.io": false, "10.0.0.1:5000": false, "localhost.example.com": false,
	} {
		if got := isLoopback(reg); got != want {
			t.Errorf("isLoopback(%q) = %v", reg, got)
		}
	}
}

func TestDefaultName(t *testing.T) {
	hex := "abcd1234ef567890" + strings.Repeat("0", 48)
	long := strings.Repeat("x", 70)
	for _, c := range []struct{ ref, want string }{
		{"docker.io/library/alpine:3.20", "alpine-3-20"},
		{"alpine:3.20", "alpine-3-20"},
		{"alpine", "alpine-latest"},
		{"ubuntu:24.04", "ubuntu-24-04"},
		{"ghcr.io/org/tool@sha256:" + hex, "tool-abcd1234ef56"},
		{"alpine:3.20@sha256:" + hex, "alpine-abcd1234ef56"},
		{"localhost:5000/a/b:latest", "b-latest"},
		{"quay.io/org/my_tool:V1.2-RC", "my-tool-v1-2-rc"},
		{"registry.example.com:443/x/y/z.app:1", "z-app-1"},
		{"example.com/_x_:y-", "x-y"},
		{"example.com/" + long + ":tag", strings.Repeat("x", 59) + "-tag"},
		{"example.com/a:" + strings.Repeat("t", 100), "a-" + strings.Repeat("t", 31)},
	} {
		got, err := DefaultName(c.ref)
		if err != nil || got != c.want {
			t.Errorf("DefaultName(%q) = %q, %v; want %q", c.ref, got, err, c.want)
		}
		if err == nil && model.ValidateName(got) != nil {
			t.Errorf("DefaultName(%q) = %q: invalid name", c.ref, got)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "a b", "alpine@sha256:xyz"} {
		if got, err := DefaultName(bad); err == nil {
			t.Errorf("DefaultName(%q) = %q, want an error", bad, got)
		}
	}
}

// TestBuildExt4EdgeCases builds an image from odd but legal layers; it
// also runs unprivileged under TestPullUnpackBuildExt4 when root.
func TestBuildExt4EdgeCases(t *testing.T) {
	needE2fsprogs(t)
	work := t.TempDir()
	tree := filepath.Join(work, "tree")
	img := makeImage(t, "amd64", v1.Config{},
		gzipLayer(t,
			ent{name: "./", typ: tar.TypeDir, mode: 0o700, uid: 7, gid: 8,
				xattrs: map[string]string{"user.root": "r"}},
			ent{name: "big-ids", typ: tar.TypeReg, mode: 0o640, uid: 100000, gid: 200000, body: "x"},
			ent{name: "sl", typ: tar.TypeSymlink, link: "big-ids", uid: 5, gid: 6},
			ent{name: "sl-hard", typ: tar.TypeLink, link: "sl"},
			ent{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
			ent{name: "fifo-hard", typ: tar.TypeLink, link: "fifo"},
			ent{name: "lost+found/", typ: tar.TypeDir, mode: 0o700},
			reg("lost+found/x", "lf", 0o600),
			reg(strings.Repeat("n", 255), "long name", 0o644),
			ent{name: "long-link", typ: tar.TypeSymlink, link: "/" + strings.Repeat("t/", 100)},
			ent{name: "q\"uote here #; 'x' !x", typ: tar.TypeReg, mode: 0o4711, uid: 3, body: "odd"},
			dir("empty/", 0o000),
			dir("-dir/", 0o755),
			ent{name: "-dir/-dev", typ: tar.TypeChar, mode: 0o620, gid: 5, major: 4, minor: 5,
				xattrs: map[string]string{"user.d": "v"}},
		),
	)
	tr, err := Unpack(context.Background(), img, tree, UnpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, "r.ext4")
	if err := BuildExt4(context.Background(), tree, tr, out, 0); err != nil {
		t.Fatal(err)
	}
	for p, w := range map[string]lsEnt{
		"/":                            {mode: unix.S_IFDIR | 0o700, uid: 7, gid: 8},
		"/big-ids":                     {mode: unix.S_IFREG | 0o640, uid: 100000, gid: 200000},
		"/sl":                          {mode: unix.S_IFLNK | 0o777, uid: 5, gid: 6},
		"/sl-hard":                     {mode: unix.S_IFLNK | 0o777, uid: 5, gid: 6},
		"/fifo":                        {mode: unix.S_IFIFO | 0o600},
		"/fifo-hard":                   {mode: unix.S_IFIFO | 0o600},
		"/lost+found/x":                {mode: unix.S_IFREG | 0o600},
		"/" + strings.Repeat("n", 255): {mode: unix.S_IFREG | 0o644},
		"/long-link":                   {mode: unix.S_IFLNK | 0o777},
		"/q\"uote here #; 'x' !x":      {mode: unix.S_IFREG | 0o4711, uid: 3},
		"/empty":                       {mode: unix.S_IFDIR},
		"/-dir/-dev":                   {mode: unix.S_IFCHR | 0o620, gid: 5},
	} {
		got, ok := lookup(t, out, p)
		if !ok {
			t.Errorf("%q missing", p)
			continue
		}
		got.ino = 0
		if got != w {
			t.Errorf("%q: mode 0%o %d:%d, want 0%o %d:%d", p, got.mode, got.uid, got.gid, w.mode, w.uid, w.gid)
		}
	}
	if b := debugfsR(t, out, `cat "/q""uote here #; 'x' !x"`); b != "odd" {
		t.Errorf("odd name: %q", b)
	}
	if ea := debugfsR(t, out, "ea_list /-dir/-dev"); !strings.Contains(ea, `user.d (1) = "v"`) {
		t.Errorf("device xattrs: %s", ea)
	}
	if ea := debugfsR(t, out, "ea_list /"); !strings.Contains(ea, `user.root (1) = "r"`) {
		t.Errorf("root xattrs: %s", ea)
	}
	if b := debugfsR(t, out, "cat /long-link"); b != "/"+strings.Repeat("t/", 100) {
		t.Errorf("long symlink: %q", b)
	}
}
