package catalog

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExtractTarZst(t *testing.T) {
	vmlinuz := bytes.Repeat([]byte{0xAA}, 3000)
	archive := makeTarZst(t,
		tarEntry{name: "./", typeflag: tar.TypeDir, mode: 0o755},
		tarEntry{name: "./boot/", typeflag: tar.TypeDir, mode: 0o755},
		tarEntry{name: "./boot/vmlinuz-6.1.0-50-amd64", body: vmlinuz, mode: 0o644},
		tarEntry{name: "./lib/modules/6.1.0-50-amd64/kernel/fs/ext4.ko", body: []byte("module")},
		tarEntry{name: "./usr/bin/tool", body: []byte("#!/bin/sh\n"), mode: 0o4755}, // setuid dropped
		tarEntry{name: "./usr/share/ro/", typeflag: tar.TypeDir, mode: 0o555},
		tarEntry{name: "./usr/share/ro/file", body: []byte("x"), mode: 0o600},
		tarEntry{name: "./vmlinuz", typeflag: tar.TypeSymlink, linkname: "boot/vmlinuz-6.1.0-50-amd64"},
		tarEntry{name: "./lib/modules/6.1.0-50-amd64/up", typeflag: tar.TypeSymlink, linkname: "../../../boot"},
		tarEntry{name: "./dangling", typeflag: tar.TypeSymlink, linkname: "nowhere/x"},
		tarEntry{name: "./boot/config", body: []byte("old")},
		tarEntry{name: "./boot/config", body: []byte("new")}, // later entry wins
		tarEntry{name: "pax-global", typeflag: tar.TypeXGlobalHeader},
	)
	dir := filepath.Join(t.TempDir(), "tree")
	if err := ExtractTarZst(context.Background(), bytes.NewReader(archive), dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "vmlinuz")); !bytes.Equal(b, vmlinuz) {
		t.Error("vmlinuz symlink does not lead to the kernel")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "boot/config")); string(b) != "new" {
		t.Errorf("boot/config = %q", b)
	}
	if target, err := os.Readlink(filepath.Join(dir, "lib/modules/6.1.0-50-amd64/up")); err != nil || target != "../../../boot" {
		t.Errorf("symlink = %q, %v", target, err)
	}
	modes := map[string]fs.FileMode{
		".":                                 fs.ModeDir | 0o755,
		"boot/vmlinuz-6.1.0-50-amd64":       0o644,
		"usr/bin/tool":                      0o755,
		"usr/share/ro":                      fs.ModeDir | 0o555,
		"usr/share/ro/file":                 0o600,
		"lib/modules/6.1.0-50-amd64/kernel": fs.ModeDir | 0o755,
		"lib/modules/6.1.0-50-amd64/up":     fs.ModeSymlink | 0o777,
		"lib/modules/6.1.0-50-amd64/kernel/fs/ext4.ko": 0o644,
	}
	for name, want := range modes {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if got := fi.Mode(); got != want {
			t.Errorf("%s: mode %v, want %v", name, got, want)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(dir))
	if len(ents) != 1 {
		t.Errorf("%d entries beside the tree, want 1", len(ents))
	}

	// An existing empty directory is fine; a non-empty one is not.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ExtractTarZst(context.Background(), bytes.NewReader(archive), empty); err != nil {
		t.Errorf("empty dir: %v", err)
	}
	if err := ExtractTarZst(context.Background(), bytes.NewReader(archive), dir); err == nil {
		t.Error("extracted into a non-empty directory")
	}
}

func TestExtractTarZstRefuses(t *testing.T) {
	file := func(name string) tarEntry { return tarEntry{name: name, body: []byte("pwned")} }
	link := func(name, target string) tarEntry {
		return tarEntry{name: name, typeflag: tar.TypeSymlink, linkname: target}
	}
	tests := []struct {
		name    string
		entries []tarEntry
		want    string
	}{
		{"dotdot", []tarEntry{file("../escape")}, `name with ".."`},
		{"inner dotdot", []tarEntry{file("a/../../escape")}, `name with ".."`},
		{"absolute", []tarEntry{file("/tmp/escape")}, "absolute name"},
		{"write through symlink dir", []tarEntry{link("evil", "sub"), {name: "sub/", typeflag: tar.TypeDir}, file("evil/x")}, "is a symlink"},
		{"write through outside symlink", []tarEntry{link("evil", "/tmp"), file("evil/x")}, "absolute or empty target"},
		{"absolute symlink", []tarEntry{link("etc", "/etc")}, "absolute or empty target"},
		{"climbing symlink", []tarEntry{link("a/up", "../..")}, "target outside the tree"},
		{"symlink chain", []tarEntry{link("d/self", "."), link("up", "d/self/../..")}, "resolves outside the tree"},
		{"symlink chain via link", []tarEntry{link("a/b/top", "../.."), link("a/esc", "b/top/..")}, "resolves outside the tree"},
		{"symlink loop", []tarEntry{link("l1", "l2"), link("l2", "l1/x")}, "too many levels"},
		{"file over dir", []tarEntry{{name: "d/", typeflag: tar.TypeDir}, file("d")}, "a directory of that name exists"},
		{"hardlink", []tarEntry{file("a"), {name: "b", typeflag: tar.TypeLink, linkname: "a"}}, "not a file, directory or symlink"},
		{"device", []tarEntry{{name: "dev/null", typeflag: tar.TypeChar}}, "not a file, directory or symlink"},
		{"fifo", []tarEntry{{name: "fifo", typeflag: tar.TypeFifo}}, "not a file, directory or symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "tree")
			err := ExtractTarZst(context.Background(), bytes.NewReader(makeTarZst(t, tt.entries...)), dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			assertEmptyDir(t, parent)
		})
	}

	// Garbage and cancellation leave nothing either.
	parent := t.TempDir()
	if err := ExtractTarZst(context.Background(), strings.NewReader("not zstd"), filepath.Join(parent, "t")); err == nil {
		t.Error("garbage extracted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := ExtractTarZst(ctx, bytes.NewReader(makeTarZst(t, tarEntry{name: "a", body: []byte("x")})), filepath.Join(parent, "t"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
	assertEmptyDir(t, parent)
}
