package gitpack

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"hash/adler32"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/testreq"
)

// A pack of stored blobs (an empty one, a small one, one spanning several
// deflate blocks) and its index, written as the host and guest do, pass
// git's own verification, with the ids git computes.
func TestPackVerifiesWithGit(t *testing.T) {
	testreq.RequireTools(t, "apt-get install git", "git")
	blobs := [][]byte{{}, []byte("hello\n"), bytes.Repeat([]byte("0123456789abcdef"), 20000)}
	var pack bytes.Buffer
	pack.Write(Header(uint32(len(blobs))))
	var entries []Entry
	for _, b := range blobs {
		id, adler, err := BlobID(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if adler != adler32.Checksum(b) {
			t.Fatalf("adler32 %x, want %x", adler, adler32.Checksum(b))
		}
		off := pack.Len()
		if _, err := Object(&pack, bytes.NewReader(b), int64(len(b)), adler, nil); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, Entry{ID: id, CRC: crc32.ChecksumIEEE(pack.Bytes()[off:]), Offset: uint64(off)})
	}
	sum := sha1.Sum(pack.Bytes())
	pack.Write(sum[:])
	idx, err := Index(entries, sum)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := PackSum(idx); got != sum {
		t.Fatalf("PackSum %x, want %x", got, sum)
	}
	dir := t.TempDir()
	name := filepath.Join(dir, "pack-"+hex.EncodeToString(sum[:]))
	os.WriteFile(name+".pack", pack.Bytes(), 0o644)
	os.WriteFile(name+".idx", idx, 0o644)
	out, err := exec.Command("git", "verify-pack", "-v", name+".idx").CombinedOutput()
	if err != nil {
		t.Fatalf("git verify-pack: %v\n%s", err, out)
	}
	for _, b := range blobs {
		cmd := exec.Command("git", "hash-object", "--stdin")
		cmd.Stdin = bytes.NewReader(b)
		id, _ := cmd.Output()
		if !strings.Contains(string(out), strings.TrimSpace(string(id))+" blob") {
			t.Errorf("verify-pack does not list blob %s:\n%s", id, out)
		}
	}
	if _, err := Index(append(entries, entries[0]), sum); err == nil {
		t.Error("an index with a duplicate id was written")
	}
}

// ObjectWriter lays out the very bytes Object does, whatever the size
// and however the content is cut into writes.
func TestObjectWriterMatchesObject(t *testing.T) {
	for _, size := range []int{0, 1, 65534, 65535, 65536, 131070, 200000} {
		b := bytes.Repeat([]byte{7}, size)
		var want, got bytes.Buffer
		if _, err := Object(&want, bytes.NewReader(b), int64(size), 42, nil); err != nil {
			t.Fatal(err)
		}
		ow := NewObjectWriter(&got, int64(size), 42)
		for rest := b; len(rest) > 0; {
			k := min(len(rest), 1000+size%777)
			if _, err := ow.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			rest = rest[k:]
		}
		if err := ow.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("size %d: ObjectWriter and Object differ", size)
		}
	}
	ow := NewObjectWriter(io.Discard, 3, 0)
	ow.Write([]byte("ab"))
	if ow.Close() == nil {
		t.Error("a short blob closed without error")
	}
	if _, err := NewObjectWriter(io.Discard, 1, 0).Write([]byte("ab")); err == nil {
		t.Error("a long blob written without error")
	}
}
