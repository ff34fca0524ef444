package kernel

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cavaliergopher/cpio"
	"github.com/ulikunitz/xz"
)

// fakeModuleDeps mirrors Debian 6.1's depends= fields for DefaultModules.
var fakeModuleDeps = [][2]string{
	{"kernel/drivers/virtio/virtio_ring.ko", ""},
	{"kernel/drivers/virtio/virtio.ko", "virtio_ring"},
	{"kernel/drivers/virtio/virtio_mmio.ko", "virtio,virtio_ring"},
	{"kernel/drivers/block/virtio_blk.ko.xz", "virtio,virtio_ring"},
	{"kernel/net/core/failover.ko", ""},
	{"kernel/drivers/net/net_failover.ko", "failover"},
	{"kernel/drivers/net/virtio_net.ko", "virtio_ring,virtio,net_failover"},
	{"kernel/drivers/char/virtio_console.ko", "virtio,virtio_ring"},
	{"kernel/crypto/crc32c_generic.ko", ""},
	{"kernel/fs/mbcache.ko", ""},
	{"kernel/fs/jbd2/jbd2.ko", ""},
	{"kernel/fs/ext4/ext4.ko", "jbd2,mbcache,crc16"},
	{"kernel/drivers/virtio/virtio_balloon.ko", "virtio,virtio_ring"},
	// crc16 is built in; the vsock modules are absent.
}

var fakeModuleOrder = []string{
	"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover", "net_failover",
	"virtio_net", "virtio_console", "crc32c_generic", "mbcache", "jbd2", "ext4",
	"virtio_balloon",
}

// fakeKernelEntries is a kernel package's data.tar, minus skip (a module
// path to leave out).
func fakeKernelEntries(t *testing.T, skip string) []tarEntry {
	vm := fakeVmlinux()
	entries := []tarEntry{
		{name: "./boot/vmlinuz-1.2.3-test", typ: tar.TypeReg, mode: 0o644, body: string(fakeBzImage(xzX86Compress(t, vm), len(vm), 0x020f))},
		{name: "./lib/modules/1.2.3-test/modules.builtin", typ: tar.TypeReg, mode: 0o644, body: "kernel/lib/crc16.ko\n"},
		{name: "./usr/share/doc/linux-image-test/changelog.gz", typ: tar.TypeReg, mode: 0o644, body: "not needed"},
	}
	for _, m := range fakeModuleDeps {
		if m[0] == skip {
			continue
		}
		base := filepath.Base(m[0])
		ko := fakeKo(base[:strings.Index(base, ".ko")], m[1])
		if strings.HasSuffix(m[0], ".xz") {
			ko = xzCompress(t, ko, xz.CRC32)
		}
		entries = append(entries, tarEntry{name: "./lib/modules/1.2.3-test/" + m[0], typ: tar.TypeReg, mode: 0o644, body: string(ko)})
	}
	return entries
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func checkBuildOutput(t *testing.T, dest string, res BuildResult, agent []byte) {
	t.Helper()
	if got := listDir(t, dest); !reflect.DeepEqual(got, []string{"initramfs.img", "vmlinux"}) {
		t.Fatalf("destination holds %v", got)
	}
	vm, err := os.ReadFile(filepath.Join(dest, VmlinuxName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(vm, fakeVmlinux()) {
		t.Error("vmlinux is not the fake kernel's ELF")
	}
	sum := sha256.Sum256(vm)
	if res.VmlinuxSHA256 != hex.EncodeToString(sum[:]) {
		t.Error("VmlinuxSHA256 does not match the file")
	}
	if res.Version != "1.2.3-test" {
		t.Errorf("version %q", res.Version)
	}
	if !reflect.DeepEqual(res.Modules, fakeModuleOrder) {
		t.Errorf("modules %v, want %v", res.Modules, fakeModuleOrder)
	}
	rd, err := os.ReadFile(filepath.Join(dest, InitramfsName))
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]cpioEntry{}
	var order []string
	for _, e := range readInitramfs(t, rd) {
		entries[e.name] = e
		order = append(order, e.name)
	}
	if e := entries["init"]; e.mode != cpio.TypeReg|0o755 || e.body != string(agent) {
		t.Errorf("init: %+v", e)
	}
	for _, d := range []string{"dev", "proc", "sys", "newroot", "run"} {
		if e, ok := entries[d]; !ok || e.mode != cpio.TypeDir|0o755 {
			t.Errorf("%s: %+v", d, e)
		}
	}
	if e := entries["tmp"]; e.mode != cpio.TypeDir|cpio.ModeSticky|0o777 {
		t.Errorf("tmp: mode %o", e.mode)
	}
	var wantList strings.Builder
	for _, m := range fakeModuleOrder {
		p := "lib/modules/" + m + ".ko"
		wantList.WriteString(p + "\n")
		e, ok := entries[p]
		if !ok {
			t.Errorf("%s missing", p)
			continue
		}
		if info, err := modinfo([]byte(e.body)); err != nil || info["name"] != m {
			t.Errorf("%s: not the decompressed module (%v)", p, err)
		}
	}
	if got := entries["etc/banger/modules"].body; got != wantList.String() {
		t.Errorf("etc/banger/modules:\n%s\nwant:\n%s", got, wantList.String())
	}
	if slices.Index(order, "lib/modules") > slices.Index(order, "lib/modules/virtio.ko") {
		t.Error("a directory comes after its contents")
	}
}

func TestBuildFromDeb(t *testing.T) {
	tmp := t.TempDir()
	deb := writeDeb(t, tmp, "data.tar.xz", makeTar(t, fakeKernelEntries(t, "")))
	dest := filepath.Join(tmp, "kernels", "test")
	agent := []byte("\x7fELF pretend agent")
	res, err := Build(context.Background(), deb, dest, agent)
	if err != nil {
		t.Fatal(err)
	}
	checkBuildOutput(t, dest, res, agent)

	// Building again replaces the outputs in place.
	if _, err := Build(context.Background(), deb, dest, agent); err != nil {
		t.Fatal(err)
	}
	checkBuildOutput(t, dest, res, agent)
}

// A catalog's tar.zst kernel (a zstd tar of a dpkg -x tree) builds like a
// .deb, through the same extraction and its checks.
func TestBuildFromTarZst(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "kernel.tar.zst")
	if err := os.WriteFile(src, zstdCompress(t, makeTar(t, fakeKernelEntries(t, ""))), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(tmp, "out")
	agent := []byte("agent")
	res, err := Build(context.Background(), src, dest, agent)
	if err != nil {
		t.Fatal(err)
	}
	checkBuildOutput(t, dest, res, agent)

	bad := filepath.Join(tmp, "bad.tar.zst")
	entries := append(fakeKernelEntries(t, ""), tarEntry{name: "boot/../../escape", body: "x"})
	os.WriteFile(bad, zstdCompress(t, makeTar(t, entries)), 0o644)
	dest = filepath.Join(tmp, "bad-out")
	if _, err := Build(context.Background(), bad, dest, agent); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("escaping entry: want a refusal, got %v", err)
	}
	if got := listDir(t, dest); len(got) != 0 {
		t.Errorf("a refused archive left %v", got)
	}
}

func TestBuildFromDirectory(t *testing.T) {
	tmp := t.TempDir()
	deb := writeDeb(t, tmp, "data.tar.zst", makeTar(t, fakeKernelEntries(t, "")))
	tree := filepath.Join(tmp, "tree")
	if err := ExtractDeb(context.Background(), deb, tree); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(tmp, "out")
	agent := []byte("agent")
	res, err := Build(context.Background(), tree, dest, agent)
	if err != nil {
		t.Fatal(err)
	}
	checkBuildOutput(t, dest, res, agent)
}

// A kernel without virtio_balloon (a custom build) still imports: its
// guests just never return freed memory.
func TestBuildWithoutBalloonModule(t *testing.T) {
	tmp := t.TempDir()
	deb := writeDeb(t, tmp, "data.tar.xz", makeTar(t, fakeKernelEntries(t, "kernel/drivers/virtio/virtio_balloon.ko")))
	res, err := Build(context.Background(), deb, filepath.Join(tmp, "out"), []byte("agent"))
	if err != nil {
		t.Fatalf("build without virtio_balloon: %v", err)
	}
	want := fakeModuleOrder[:len(fakeModuleOrder)-1]
	if !reflect.DeepEqual(res.Modules, want) {
		t.Errorf("modules %v, want %v", res.Modules, want)
	}
}

func TestBuildFailureLeavesNothing(t *testing.T) {
	tmp := t.TempDir()
	deb := writeDeb(t, tmp, "data.tar.xz", makeTar(t, fakeKernelEntries(t, "kernel/drivers/block/virtio_blk.ko.xz")))
	dest := filepath.Join(tmp, "out")
	os.MkdirAll(dest, 0o755)
	os.WriteFile(filepath.Join(dest, VmlinuxName), []byte("old"), 0o644)
	_, err := Build(context.Background(), deb, dest, []byte("agent"))
	if err == nil || !strings.Contains(err.Error(), "virtio_blk") {
		t.Fatalf("missing virtio_blk: %v", err)
	}
	if got := listDir(t, dest); !reflect.DeepEqual(got, []string{VmlinuxName}) {
		t.Fatalf("destination holds %v after a failed build", got)
	}
	if old, _ := os.ReadFile(filepath.Join(dest, VmlinuxName)); string(old) != "old" {
		t.Fatal("a failed build replaced an existing vmlinux")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	good := writeDeb(t, t.TempDir(), "data.tar.xz", makeTar(t, fakeKernelEntries(t, "")))
	dest2 := filepath.Join(tmp, "cancelled")
	if _, err := Build(ctx, good, dest2, []byte("agent")); err == nil {
		t.Fatal("no error with a cancelled context")
	}
	if got := listDir(t, dest2); len(got) != 0 {
		t.Fatalf("destination holds %v after a cancelled build", got)
	}

	if _, err := Build(context.Background(), good, dest2, nil); err == nil {
		t.Fatal("no error for an empty agent")
	}
}

// TestBuildRealDeb runs Build end to end on Debian's kernel package, as
// cached by scripts/fixtures.sh.
func TestBuildRealDeb(t *testing.T) {
	const deb = "/var/cache/banger-fixtures/kernel/linux-image.deb"
	if testing.Short() {
		t.Skip("skipped in -short mode: unpacking the real kernel package takes about 20 s")
	}
	if _, err := os.Stat(deb); err != nil {
		t.Skipf("no cached kernel package at %s (run scripts/fixtures.sh): %v", deb, err)
	}
	dest := t.TempDir()
	start := time.Now()
	res, err := Build(context.Background(), deb, dest, []byte("agent"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %v: %d modules %v", res.Version, time.Since(start).Round(time.Millisecond), len(res.Modules), res.Modules)
	for _, m := range []string{"virtio_blk", "virtio_net", "virtio_console", "ext4"} {
		if !slices.Contains(res.Modules, m) {
			t.Errorf("module %s missing from %v", m, res.Modules)
		}
	}
	if i, j := slices.Index(res.Modules, "jbd2"), slices.Index(res.Modules, "ext4"); i < 0 || i > j {
		t.Errorf("jbd2 not loaded before ext4: %v", res.Modules)
	}
	vm, err := os.ReadFile(filepath.Join(dest, VmlinuxName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(vm, []byte("\x7fELF")) {
		t.Fatal("vmlinux does not start with \\x7fELF")
	}
	if !hasPVHNote(t, vm) {
		t.Error("vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")
	}
	rd, _ := os.Stat(filepath.Join(dest, InitramfsName))
	t.Logf("vmlinux %d bytes, initramfs %d bytes", len(vm), rd.Size())
	if got := listDir(t, dest); !reflect.DeepEqual(got, []string{"initramfs.img", "vmlinux"}) {
		t.Errorf("destination holds %v", got)
	}
}

// hasPVHNote reports whether an ELF kernel has the Xen note of type 18
// (XEN_ELFNOTE_PHYS32_ENTRY) that QEMU uses to boot it through PVH.
func hasPVHNote(t *testing.T, vm []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(vm))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			t.Fatal(err)
		}
		for len(data) >= 12 {
			namesz := binary.LittleEndian.Uint32(data[0:])
			descsz := binary.LittleEndian.Uint32(data[4:])
			typ := binary.LittleEndian.Uint32(data[8:])
			name := data[12:min(len(data), 12+int(namesz))]
			if typ == 18 && string(bytes.TrimRight(name, "\x00")) == "Xen" {
				return true
			}
			adv := 12 + int((namesz+3)&^3) + int((descsz+3)&^3)
			if adv > len(data) {
				break
			}
			data = data[adv:]
		}
	}
	return false
}
