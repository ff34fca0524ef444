package kernel

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func kernelPackageEntries() []tarEntry {
	return []tarEntry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		{name: "./boot/", typ: tar.TypeDir, mode: 0o755},
		{name: "./boot/vmlinuz-1.2.3", typ: tar.TypeReg, mode: 0o644, body: "kernel image"},
		{name: "./boot/config-1.2.3", typ: tar.TypeReg, mode: 0o600, body: "CONFIG_X=y\n"},
		{name: "./boot/vmlinuz", typ: tar.TypeSymlink, linkname: "vmlinuz-1.2.3"},
		// No explicit lib/ or lib/modules/ directory entries: parents are implied.
		{name: "./lib/modules/1.2.3/kernel/drivers/virtio/", typ: tar.TypeDir, mode: 0o750},
		{name: "./lib/modules/1.2.3/kernel/drivers/virtio/virtio.ko", typ: tar.TypeReg, mode: 0o644, body: "module"},
		{name: "./lib/modules/1.2.3/kernel/fs/ext4.ko.xz", typ: tar.TypeReg, mode: 0o644, body: "xz module"},
		{name: "./lib/modules/1.2.3/modules.builtin", typ: tar.TypeReg, mode: 0o644, body: "kernel/lib/crc16.ko\n"},
		{name: "./lib/modules/1.2.3/kernel/hardlink.ko", typ: tar.TypeLink, linkname: "./lib/modules/1.2.3/kernel/drivers/virtio/virtio.ko"},
		{name: "./usr/bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "./usr/bin/tool", typ: tar.TypeReg, mode: 0o4755, body: "#!/bin/sh\n"},
		// Links that point outside the tree are left out.
		{name: "./lib/modules/1.2.3/build", typ: tar.TypeSymlink, linkname: "/usr/src/linux-headers-1.2.3"},
		{name: "./lib/modules/1.2.3/source", typ: tar.TypeSymlink, linkname: "../../../../../etc"},
		{name: "./lib/modules/1.2.3/up", typ: tar.TypeSymlink, linkname: ".."},
		{name: "./lib/l1", typ: tar.TypeSymlink, linkname: ".."},
		{name: "./lib/l2", typ: tar.TypeSymlink, linkname: "l1/.."}, // lexically lib/.. = ".", really outside
		{name: "./dangling", typ: tar.TypeSymlink, linkname: "nowhere"},
	}
}

func TestExtractDeb(t *testing.T) {
	for _, member := range []string{"data.tar.xz", "data.tar.zst", "data.tar.gz", "data.tar"} {
		t.Run(member, func(t *testing.T) {
			tmp := t.TempDir()
			deb := writeDeb(t, tmp, member, makeTar(t, kernelPackageEntries()))
			dest := filepath.Join(tmp, "out")
			if err := ExtractDeb(context.Background(), deb, dest); err != nil {
				t.Fatal(err)
			}
			checkFile := func(rel, body string, mode os.FileMode) {
				t.Helper()
				p := filepath.Join(dest, rel)
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if string(data) != body {
					t.Errorf("%s: body %q, want %q", rel, data, body)
				}
				fi, _ := os.Lstat(p)
				if fi.Mode() != mode {
					t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), mode)
				}
			}
			checkFile("boot/vmlinuz-1.2.3", "kernel image", 0o644)
			checkFile("boot/config-1.2.3", "CONFIG_X=y\n", 0o600)
			checkFile("lib/modules/1.2.3/kernel/drivers/virtio/virtio.ko", "module", 0o644)
			checkFile("usr/bin/tool", "#!/bin/sh\n", 0o755|os.ModeSetuid)
			if target, err := os.Readlink(filepath.Join(dest, "boot/vmlinuz")); err != nil || target != "vmlinuz-1.2.3" {
				t.Errorf("symlink: %q, %v", target, err)
			}
			fi, err := os.Stat(filepath.Join(dest, "lib/modules/1.2.3/kernel/drivers/virtio"))
			if err != nil || fi.Mode().Perm() != 0o750 {
				t.Errorf("directory mode: %v, %v", fi, err)
			}
			a, _ := os.Stat(filepath.Join(dest, "lib/modules/1.2.3/kernel/hardlink.ko"))
			b, _ := os.Stat(filepath.Join(dest, "lib/modules/1.2.3/kernel/drivers/virtio/virtio.ko"))
			if a == nil || b == nil || a.Sys().(*syscall.Stat_t).Ino != b.Sys().(*syscall.Stat_t).Ino {
				t.Error("hardlink not created as a hardlink")
			}
			for _, gone := range []string{"lib/modules/1.2.3/build", "lib/modules/1.2.3/source", "lib/l2", "dangling"} {
				if _, err := os.Lstat(filepath.Join(dest, gone)); err == nil {
					t.Errorf("escaping or dangling symlink %s was created", gone)
				}
			}
			for _, kept := range []string{"lib/modules/1.2.3/up", "lib/l1"} {
				if _, err := os.Lstat(filepath.Join(dest, kept)); err != nil {
					t.Errorf("inside symlink %s: %v", kept, err)
				}
			}

			l, err := FindLayout(dest)
			if err != nil {
				t.Fatal(err)
			}
			want := Layout{
				KernelPath: filepath.Join(dest, "boot/vmlinuz-1.2.3"),
				Version:    "1.2.3",
				ModulesDir: filepath.Join(dest, "lib/modules/1.2.3"),
			}
			if l != want {
				t.Errorf("layout %+v, want %+v", l, want)
			}
		})
	}
}

func TestExtractDebRefusesEscapes(t *testing.T) {
	cases := map[string][]tarEntry{
		"dotdot": {
			{name: "./boot/", typ: tar.TypeDir, mode: 0o755},
			{name: "./boot/../../escaped", typ: tar.TypeReg, mode: 0o644, body: "evil"},
		},
		"leading dotdot": {{name: "../escaped", typ: tar.TypeReg, mode: 0o644, body: "evil"}},
		"absolute":       {{name: "/escaped", typ: tar.TypeReg, mode: 0o644, body: "evil"}},
		"write through symlink chain": {
			{name: "./a/l1", typ: tar.TypeSymlink, linkname: ".."},
			{name: "./l2", typ: tar.TypeSymlink, linkname: "a/l1/.."},
			{name: "./l2/escaped", typ: tar.TypeReg, mode: 0o644, body: "evil"},
		},
		"hardlink outside": {
			{name: "./link", typ: tar.TypeLink, linkname: "../outside-file"},
		},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			deb := writeDeb(t, tmp, "data.tar.xz", makeTar(t, entries))
			dest := filepath.Join(tmp, "sub", "out")
			if err := os.MkdirAll(dest, 0o755); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(tmp, "sub", "outside-file"), []byte("x"), 0o644)
			err := ExtractDeb(context.Background(), deb, dest)
			if err == nil {
				t.Fatal("no error")
			}
			t.Logf("refused: %v", err)
			if !strings.Contains(err.Error(), deb) {
				t.Errorf("error %q does not name the package", err)
			}
			for _, p := range []string{filepath.Join(tmp, "escaped"), filepath.Join(tmp, "sub", "escaped")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written", p)
				}
			}
		})
	}
}

func TestExtractDebNotADeb(t *testing.T) {
	tmp := t.TempDir()
	p := filepath.Join(tmp, "x.deb")
	os.WriteFile(p, []byte("hello, not an archive"), 0o644)
	if err := ExtractDeb(context.Background(), p, filepath.Join(tmp, "out")); err == nil {
		t.Fatal("no error for a non-ar file")
	}
	noData := makeAr([2][]byte{[]byte("debian-binary"), []byte("2.0\n")})
	os.WriteFile(p, noData, 0o644)
	if err := ExtractDeb(context.Background(), p, filepath.Join(tmp, "out")); err == nil || !strings.Contains(err.Error(), "data.tar") {
		t.Fatalf("no data member: %v", err)
	}
}

func TestExtractDebCancelled(t *testing.T) {
	tmp := t.TempDir()
	deb := writeDeb(t, tmp, "data.tar.xz", makeTar(t, kernelPackageEntries()))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ExtractDeb(ctx, deb, filepath.Join(tmp, "out")); err == nil {
		t.Fatal("no error with a cancelled context")
	}
}

func TestFindLayout(t *testing.T) {
	write := func(t *testing.T, root string, files ...string) {
		for _, f := range files {
			p := filepath.Join(root, f)
			if strings.HasSuffix(f, "/") {
				os.MkdirAll(p, 0o755)
				continue
			}
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte("x"), 0o644)
		}
	}
	t.Run("prefers vmlinux, usr/lib/modules", func(t *testing.T) {
		d := t.TempDir()
		write(t, d, "boot/vmlinuz-6.1.0-57-amd64", "boot/vmlinux-6.1.0-57-amd64", "boot/System.map-6.1.0-57-amd64",
			"usr/lib/modules/6.1.0-57-amd64/")
		l, err := FindLayout(d)
		if err != nil {
			t.Fatal(err)
		}
		want := Layout{filepath.Join(d, "boot/vmlinux-6.1.0-57-amd64"), "6.1.0-57-amd64", filepath.Join(d, "usr/lib/modules/6.1.0-57-amd64")}
		if l != want {
			t.Fatalf("got %+v, want %+v", l, want)
		}
	})
	t.Run("no modules", func(t *testing.T) {
		d := t.TempDir()
		write(t, d, "boot/vmlinuz-5.10")
		l, err := FindLayout(d)
		if err != nil || l.Version != "5.10" || l.ModulesDir != "" {
			t.Fatalf("got %+v, %v", l, err)
		}
	})
	t.Run("unversioned with one modules dir", func(t *testing.T) {
		d := t.TempDir()
		write(t, d, "boot/vmlinuz", "lib/modules/6.6.6/")
		l, err := FindLayout(d)
		if err != nil || l.Version != "6.6.6" || l.KernelPath != filepath.Join(d, "boot/vmlinuz") {
			t.Fatalf("got %+v, %v", l, err)
		}
	})
	t.Run("several versions", func(t *testing.T) {
		d := t.TempDir()
		write(t, d, "boot/vmlinuz-1", "boot/vmlinuz-2")
		if _, err := FindLayout(d); err == nil || !strings.Contains(err.Error(), "1, 2") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("empty", func(t *testing.T) {
		if _, err := FindLayout(t.TempDir()); err == nil {
			t.Fatal("no error")
		}
	})
}
