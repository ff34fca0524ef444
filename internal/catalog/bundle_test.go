package catalog

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// makeRootfs creates a sparse fake ext4 image of size bytes: the
// superblock magic plus a few non-zero blocks.
func makeRootfs(t *testing.T, size int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "rootfs.ext4")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{0x53, 0xEF}, extMagicOffset); err != nil {
		t.Fatal(err)
	}
	block := bytes.Repeat([]byte("banger!"), 600)
	for _, off := range []int64{1 << 20, size/2 + 12345, size - int64(len(block))} {
		if off+int64(len(block)) <= size && off > 4096 {
			if _, err := f.WriteAt(block, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestBundleRoundTrip(t *testing.T) {
	const size = 64 << 20
	rootfs := makeRootfs(t, size)
	want := sha256File(t, rootfs)

	var buf bytes.Buffer
	m, err := WriteBundle(context.Background(), &buf, rootfs, Manifest{
		Name: "debian", Distro: "debian", Arch: "x86_64", Kernel: "debian-bookworm", Source: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	if m.RootfsSize != size || m.RootfsSHA256 != want || m.Created.IsZero() || m.Name != "debian" {
		t.Errorf("manifest = %+v", m)
	}
	if buf.Len() > 1<<20 {
		t.Errorf("bundle of a mostly empty 64 MiB file is %d bytes", buf.Len())
	}

	dir := filepath.Join(t.TempDir(), "out")
	m2, p, err := ReadBundle(context.Background(), bytes.NewReader(buf.Bytes()), dir)
	if err != nil {
		t.Fatal(err)
	}
	if !m2.Created.Equal(m.Created) {
		t.Errorf("created %v, want %v", m2.Created, m.Created)
	}
	m2.Created = m.Created
	if m2 != m {
		t.Errorf("read manifest %+v, want %+v", m2, m)
	}
	if p != filepath.Join(dir, RootfsName) {
		t.Errorf("path = %s", p)
	}
	if got := sha256File(t, p); got != want {
		t.Error("rootfs content differs")
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != size {
		t.Errorf("size = %d", st.Size())
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > size/8 {
		t.Errorf("rootfs uses %d bytes on disk for %d: not sparse", used, st.Size())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("dir holds %d entries, want 1", len(ents))
	}

	// The manifest comes first in the archive.
	first := firstMember(t, buf.Bytes())
	if first != ManifestName {
		t.Errorf("first member %q", first)
	}
}

func firstMember(t *testing.T, bundle []byte) string {
	t.Helper()
	dec, err := zstd.NewReader(bytes.NewReader(bundle))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	h, err := tar.NewReader(dec).Next()
	if err != nil {
		t.Fatal(err)
	}
	return h.Name
}

func TestWriteBundleErrors(t *testing.T) {
	rootfs := makeRootfs(t, 1<<20)
	var buf bytes.Buffer
	if _, err := WriteBundle(context.Background(), &buf, rootfs, Manifest{Arch: "x86_64"}); err == nil {
		t.Error("manifest without a name accepted")
	}
	if _, err := WriteBundle(context.Background(), &buf, rootfs, Manifest{Name: "x"}); err == nil {
		t.Error("manifest without an arch accepted")
	}
	notExt := filepath.Join(t.TempDir(), "zeros")
	writeTestFile(t, notExt, make([]byte, 8192))
	_, err := WriteBundle(context.Background(), &buf, notExt, Manifest{Name: "x", Arch: "x86_64"})
	if err == nil || !strings.Contains(err.Error(), "superblock magic") {
		t.Errorf("non-ext file: err = %v", err)
	}
	if _, err := WriteBundle(context.Background(), &buf, filepath.Join(t.TempDir(), "missing"), Manifest{Name: "x", Arch: "x86_64"}); err == nil {
		t.Error("missing file accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := WriteBundle(ctx, &buf, rootfs, Manifest{Name: "x", Arch: "x86_64"}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}

func TestReadBundleRefuses(t *testing.T) {
	rootfsName := makeRootfs(t, 256<<10)
	rootfs, err := os.ReadFile(rootfsName)
	if err != nil {
		t.Fatal(err)
	}
	good := Manifest{
		Name: "img", Arch: "x86_64", RootfsSize: int64(len(rootfs)), RootfsSHA256: sha256Hex(rootfs),
		Created: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	manifest := func(mod func(*Manifest)) tarEntry {
		m := good
		if mod != nil {
			mod(&m)
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return tarEntry{name: ManifestName, body: b}
	}
	rootfsEntry := tarEntry{name: RootfsName, body: rootfs}
	notExt := bytes.Clone(rootfs)
	notExt[extMagicOffset] = 0

	// Sanity: the good bundle is accepted, also with "./" names.
	for _, b := range [][]byte{
		makeTarZst(t, manifest(nil), rootfsEntry),
		makeTarZst(t,
			tarEntry{name: "./", typeflag: tar.TypeDir, mode: 0o755},
			tarEntry{name: "./" + ManifestName, body: manifest(nil).body},
			tarEntry{name: "./" + RootfsName, body: rootfs}),
	} {
		if _, _, err := ReadBundle(context.Background(), bytes.NewReader(b), t.TempDir()); err != nil {
			t.Fatalf("good bundle refused: %v", err)
		}
	}

	good1 := makeTarZst(t, manifest(nil), rootfsEntry)
	tests := []struct {
		name   string
		bundle []byte
		want   string
	}{
		{"sha mismatch", makeTarZst(t, manifest(func(m *Manifest) { m.RootfsSHA256 = otherSH }), rootfsEntry),
			"bundle: rootfs sha256 mismatch: got " + good.RootfsSHA256},
		{"size mismatch", makeTarZst(t, manifest(func(m *Manifest) { m.RootfsSize++ }), rootfsEntry), "rootfs size mismatch"},
		{"missing rootfs", makeTarZst(t, manifest(nil)), "no rootfs.ext4"},
		{"missing manifest", makeTarZst(t, rootfsEntry), "rootfs.ext4 comes before manifest.json"},
		{"empty", makeTarZst(t), "no manifest.json"},
		{"extra member", makeTarZst(t, manifest(nil), rootfsEntry, tarEntry{name: "extra.txt", body: []byte("x")}),
			`unexpected member "extra.txt"`},
		{"extra member first", makeTarZst(t, tarEntry{name: "README", body: []byte("x")}, manifest(nil), rootfsEntry),
			`unexpected member "README"`},
		{"dotdot member", makeTarZst(t, manifest(nil), tarEntry{name: "../x", body: []byte("x")}, rootfsEntry), `member "../x"`},
		{"dotdot rootfs", makeTarZst(t, manifest(nil), tarEntry{name: "x/../rootfs.ext4", body: rootfs}), `".."`},
		{"absolute member", makeTarZst(t, manifest(nil), tarEntry{name: "/rootfs.ext4", body: rootfs}), "absolute"},
		{"symlink rootfs", makeTarZst(t, manifest(nil), tarEntry{name: RootfsName, typeflag: tar.TypeSymlink, linkname: "/etc/passwd"}),
			"is a link"},
		{"hardlink rootfs", makeTarZst(t, manifest(nil), tarEntry{name: RootfsName, typeflag: tar.TypeLink, linkname: ManifestName}),
			"is a link"},
		{"dir member", makeTarZst(t, manifest(nil), tarEntry{name: "sub/", typeflag: tar.TypeDir}), "not a regular file"},
		{"manifest not first", makeTarZst(t, rootfsEntry, manifest(nil)), "comes before"},
		{"duplicate manifest", makeTarZst(t, manifest(nil), manifest(nil), rootfsEntry), "duplicate manifest.json"},
		{"duplicate rootfs", makeTarZst(t, manifest(nil), rootfsEntry, rootfsEntry), "duplicate rootfs.ext4"},
		{"huge manifest", makeTarZst(t, tarEntry{name: ManifestName, body: bytes.Repeat([]byte(" "), maxManifestSize+1)}, rootfsEntry),
			"larger than"},
		{"bad manifest json", makeTarZst(t, tarEntry{name: ManifestName, body: []byte("{")}, rootfsEntry), "parse manifest.json"},
		{"manifest bad sha", makeTarZst(t, manifest(func(m *Manifest) { m.RootfsSHA256 = "abc" }), rootfsEntry), "rootfs_sha256"},
		{"manifest no name", makeTarZst(t, manifest(func(m *Manifest) { m.Name = "" }), rootfsEntry), "manifest name"},
		{"not ext", makeTarZst(t, manifest(func(m *Manifest) { m.RootfsSHA256 = sha256Hex(notExt) }), tarEntry{name: RootfsName, body: notExt}),
			"superblock magic"},
		{"truncated", good1[:len(good1)/2], "bundle: "},
		{"not zstd", []byte("this is not a bundle at all"), "bundle: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			m, p, err := ReadBundle(context.Background(), bytes.NewReader(tt.bundle), dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ReadBundle = %+v, %q, %v; want error %q", m, p, err, tt.want)
			}
			if p != "" {
				t.Errorf("path %q returned with an error", p)
			}
			assertEmptyDir(t, dir)
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if _, _, err := ReadBundle(ctx, bytes.NewReader(good1), dir); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
	assertEmptyDir(t, dir)
}
