package gitpack

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"hash/adler32"
	"hash/crc32"
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
