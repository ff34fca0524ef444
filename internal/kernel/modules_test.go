package kernel

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

// modulesTree writes fake modules under a temporary modules dir. Each spec
// is "relative/path.ko[.xz|.zst|.gz]=dep1,dep2".
func modulesTree(t *testing.T, builtin string, specs ...string) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	plain := map[string][]byte{}
	for _, s := range specs {
		rel, deps, _ := strings.Cut(s, "=")
		base := filepath.Base(rel)
		name := moduleName(base[:strings.Index(base, ".ko")])
		ko := fakeKo(name, deps)
		plain[name] = ko
		data := ko
		switch {
		case strings.HasSuffix(rel, ".xz"):
			data = xzCompress(t, ko, xz.CRC32)
		case strings.HasSuffix(rel, ".zst"):
			data = zstdCompress(t, ko)
		case strings.HasSuffix(rel, ".gz"):
			data = gzipCompress(t, ko)
		}
		p := filepath.Join(dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if builtin != "" {
		os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(builtin), 0o644)
	}
	return dir, plain
}

func names(mods []Module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Name)
	}
	return out
}

func TestResolveModulesDiamondAndCompression(t *testing.T) {
	dir, plain := modulesTree(t, "kernel/lib/crc16.ko\nkernel/lib/built-in-dep.ko\n",
		"kernel/fs/top.ko=left,right",
		"kernel/fs/left.ko.xz=base",
		"kernel/fs/right.ko.zst=base,built_in_dep",
		"kernel/lib/base.ko.gz=",
		"kernel/drivers/my-driver.ko=base",
		"kernel/drivers/unrelated.ko=",
	)
	mods, err := ResolveModules(dir, []string{"top", "crc16", "my-driver", "base"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"base", "left", "right", "top", "my_driver"}
	if got := names(mods); !reflect.DeepEqual(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	byName := map[string]Module{}
	for _, m := range mods {
		byName[m.Name] = m
		if !bytes.Equal(m.Data, plain[m.Name]) {
			t.Errorf("%s: data not the decompressed module", m.Name)
		}
	}
	if p := byName["left"].Path; p != "kernel/fs/left.ko.xz" {
		t.Errorf("left path %q", p)
	}
	if d := byName["right"].Depends; !reflect.DeepEqual(d, []string{"base", "built_in_dep"}) {
		t.Errorf("right depends %v", d)
	}
	if d := byName["base"].Depends; d != nil {
		t.Errorf("base depends %v", d)
	}

	// Deterministic: the same input gives the same order.
	again, err := ResolveModules(dir, []string{"top", "crc16", "my-driver", "base"}, nil)
	if err != nil || !reflect.DeepEqual(names(again), want) {
		t.Fatalf("second run: %v, %v", names(again), err)
	}
}

func TestResolveModulesMissing(t *testing.T) {
	dir, _ := modulesTree(t, "",
		"kernel/a.ko=",
		"kernel/needs-ghost.ko=ghost",
		"kernel/vsock.ko=",
		"kernel/vsock_transport.ko=vsock,ghost2",
	)
	_, err := ResolveModules(dir, []string{"a", "ext4"}, nil)
	if err == nil || !strings.Contains(err.Error(), "ext4") {
		t.Fatalf("missing required module: %v", err)
	}
	_, err = ResolveModules(dir, []string{"a", "needs_ghost"}, nil)
	if err == nil || !strings.Contains(err.Error(), "ghost (needed by needs_ghost)") {
		t.Fatalf("missing dependency: %v", err)
	}
	// Optional: a missing module, and one whose dependency is missing, are
	// left out, including what they pulled in.
	mods, err := ResolveModules(dir, []string{"a", "vsock_transport", "nope"}, []string{"nope", "vsock-transport"})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(mods); !reflect.DeepEqual(got, []string{"a"}) {
		t.Fatalf("got %v", got)
	}
	// But a module pulled in by an optional one that failed is still
	// resolved when wanted in its own right.
	mods, err = ResolveModules(dir, []string{"vsock_transport", "vsock"}, []string{"vsock_transport"})
	if err != nil || !reflect.DeepEqual(names(mods), []string{"vsock"}) {
		t.Fatalf("got %v, %v", names(mods), err)
	}
}

func TestResolveModulesCycle(t *testing.T) {
	dir, _ := modulesTree(t, "",
		"kernel/c1.ko=c2",
		"kernel/c2.ko=c3",
		"kernel/c3.ko=c1",
		"kernel/self.ko=self",
	)
	_, err := ResolveModules(dir, []string{"c1"}, nil)
	if err == nil || !strings.Contains(err.Error(), "c1 -> c2 -> c3 -> c1") {
		t.Fatalf("cycle: %v", err)
	}
	// An optional module in a cycle is still an error: the tree is broken.
	if _, err := ResolveModules(dir, []string{"c2"}, []string{"c2"}); err == nil {
		t.Fatal("optional cycle: no error")
	}
	// A module listing itself is tolerated.
	mods, err := ResolveModules(dir, []string{"self"}, nil)
	if err != nil || len(mods) != 1 {
		t.Fatalf("self dependency: %v, %v", names(mods), err)
	}
}

func TestResolveModulesPrecedenceAndBuiltinModinfo(t *testing.T) {
	dir, _ := modulesTree(t, "",
		"kernel/drivers/dup.ko=",
		"updates/dup.ko=",
		"extra/other/dup.ko=",
		"kernel/fs/bi.ko=",
	)
	// modules.builtin.modinfo alone marks bi as built in.
	os.WriteFile(filepath.Join(dir, "modules.builtin.modinfo"), []byte("bi.license=GPL\x00bi.description=x\x00"), 0o644)
	mods, err := ResolveModules(dir, []string{"dup", "bi"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) != 1 || mods[0].Path != "updates/dup.ko" {
		t.Fatalf("got %+v", mods)
	}
}

func TestResolveModulesBadModule(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "kernel"), 0o755)
	os.WriteFile(filepath.Join(dir, "kernel/junk.ko"), []byte("not elf"), 0o644)
	os.WriteFile(filepath.Join(dir, "kernel/noinfo.ko"), makeELF(1, elfSection{".text", []byte{1}}), 0o644)
	os.WriteFile(filepath.Join(dir, "kernel/badxz.ko.xz"), []byte("\xfd7zXZ\x00garbage"), 0o644)
	for _, m := range []string{"junk", "noinfo", "badxz"} {
		if _, err := ResolveModules(dir, []string{m}, []string{m}); err == nil || !strings.Contains(err.Error(), m) {
			t.Errorf("%s: %v", m, err)
		}
	}
	if _, err := ResolveModules(filepath.Join(dir, "absent"), []string{"x"}, nil); err == nil {
		t.Error("missing modules dir: no error")
	}
}
