package kernel

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/gzip"
)

type cpioEntry struct {
	name     string
	mode     cpio.FileMode
	linkname string
	body     string
}

// readInitramfs reads back a gzip cpio archive, checking that every entry
// is owned by root with a zero mtime.
func readInitramfs(t *testing.T, data []byte) []cpioEntry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(zr)
	var out []cpioEntry
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Guid != 0 || h.ModTime.Unix() != 0 {
			t.Errorf("%s: uid %d gid %d mtime %v", h.Name, h.Uid, h.Guid, h.ModTime)
		}
		body, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cpioEntry{h.Name, h.Mode, h.Linkname, string(body)})
	}
	return out
}

func TestWriteInitramfsRoundTrip(t *testing.T) {
	files := []InitramfsFile{
		{Path: "init", Mode: 0o755, Data: []byte("#!agent")},
		{Path: "lib/modules/ext4.ko", Mode: 0o644, Data: []byte("ext4 module")},
		{Path: "lib/modules/virtio.ko", Mode: 0o644, Data: []byte("virtio")},
		{Path: "etc/banger/modules", Mode: 0o644, Data: []byte("lib/modules/virtio.ko\n")},
		{Path: "bin/sh", Mode: os.ModeSymlink | 0o777, Data: []byte("/init")},
		{Path: "tmp", Mode: os.ModeDir | os.ModeSticky | 0o777},
		{Path: "secret/key", Mode: 0o600, Data: []byte("k")},
		{Path: "secret", Mode: os.ModeDir | 0o700}, // given after its child
		{Path: "empty", Mode: 0o644},
	}
	var buf bytes.Buffer
	if err := WriteInitramfs(&buf, files); err != nil {
		t.Fatal(err)
	}
	got := readInitramfs(t, buf.Bytes())
	want := []cpioEntry{
		{"init", cpio.TypeReg | 0o755, "", "#!agent"},
		{"lib", cpio.TypeDir | 0o755, "", ""},
		{"lib/modules", cpio.TypeDir | 0o755, "", ""},
		{"lib/modules/ext4.ko", cpio.TypeReg | 0o644, "", "ext4 module"},
		{"lib/modules/virtio.ko", cpio.TypeReg | 0o644, "", "virtio"},
		{"etc", cpio.TypeDir | 0o755, "", ""},
		{"etc/banger", cpio.TypeDir | 0o755, "", ""},
		{"etc/banger/modules", cpio.TypeReg | 0o644, "", "lib/modules/virtio.ko\n"},
		{"bin", cpio.TypeDir | 0o755, "", ""},
		{"bin/sh", cpio.TypeSymlink | 0o777, "/init", ""}, // the reader turns the body into Linkname
		{"tmp", cpio.TypeDir | cpio.ModeSticky | 0o777, "", ""},
		{"secret", cpio.TypeDir | 0o700, "", ""},
		{"secret/key", cpio.TypeReg | 0o600, "", "k"},
		{"empty", cpio.TypeReg | 0o644, "", ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v (mode %o), want %+v (mode %o)", i, got[i], got[i].mode, want[i], want[i].mode)
		}
	}

	// Deterministic: same input, same bytes.
	var again bytes.Buffer
	if err := WriteInitramfs(&again, files); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Fatal("two writes of the same files differ")
	}
}

func TestWriteInitramfsErrors(t *testing.T) {
	cases := map[string][]InitramfsFile{
		"absolute":       {{Path: "/init", Mode: 0o755}},
		"dotdot":         {{Path: "../x", Mode: 0o644}},
		"unclean":        {{Path: "a//b", Mode: 0o644}},
		"empty":          {{Path: "", Mode: 0o644}},
		"duplicate":      {{Path: "x", Mode: 0o644}, {Path: "x", Mode: 0o644}},
		"file as parent": {{Path: "x", Mode: 0o644}, {Path: "x/y", Mode: 0o644}},
		"device":         {{Path: "dev/null", Mode: os.ModeDevice | os.ModeCharDevice | 0o666}},
		"empty symlink":  {{Path: "l", Mode: os.ModeSymlink | 0o777}},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			err := WriteInitramfs(io.Discard, files)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "write initramfs: ") {
				t.Errorf("error %q", err)
			}
		})
	}
}
