package fsutil

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestCopySparse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, _ := os.Create(src)
	f.Truncate(64 << 20)
	f.WriteAt([]byte("head"), 0)
	f.WriteAt(bytes.Repeat([]byte("x"), 1<<20), 32<<20)
	f.WriteAt([]byte("tail"), 64<<20-4)
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := CopySparse(dst, src); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs")
	}
	var st syscall.Stat_t
	syscall.Stat(dst, &st)
	if st.Blocks*512 > 8<<20 {
		t.Errorf("copy uses %d bytes: holes were filled", st.Blocks*512)
	}
	if err := CopySparse(dst, src); err == nil {
		t.Error("overwrote an existing file")
	}
	if err := CopySparse(filepath.Join(dir, "d2"), dir); err == nil {
		t.Error("copied a directory")
	}
}
