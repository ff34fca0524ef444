package image

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"banger/internal/model"
)

// TestInitrdCacheVerified: a cached initrd that a crash truncated (or
// that has no recorded hash) is rebuilt, not booted.
func TestInitrdCacheVerified(t *testing.T) {
	dir := t.TempDir()
	agent := filepath.Join(dir, "banger-agent")
	if err := os.WriteFile(agent, bytes.Repeat([]byte("agent"), 1000), 0o755); err != nil {
		t.Fatal(err)
	}
	kdir := filepath.Join(dir, "kernels", "k")
	os.MkdirAll(kdir, 0o755)
	k := &model.Kernel{Name: "k", Initramfs: filepath.Join(kdir, "initramfs.img")}
	if err := os.WriteFile(k.Initramfs, bytes.Repeat([]byte("base"), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Service{AgentPath: agent}
	ctx := context.Background()
	p, err := s.Initrd(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}

	for name, spoil := range map[string]func(){
		"truncated": func() { os.Truncate(p, int64(len(good)/2)) },
		"emptied":   func() { os.WriteFile(p, nil, 0o644) },
		"no hash":   func() { os.Remove(p + hashSuffix) },
		"changed":   func() { b := bytes.Clone(good); b[len(b)-1] ^= 1; os.WriteFile(p, b, 0o644) },
	} {
		spoil()
		p2, err := s.Initrd(ctx, k)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, _ := os.ReadFile(p2); p2 != p || !bytes.Equal(got, good) {
			t.Errorf("%s: got %d bytes at %s, want the %d-byte initrd rebuilt", name, len(got), p2, len(good))
		}
	}
	ents, _ := os.ReadDir(kdir)
	if len(ents) != 3 { // initramfs.img, initrd-X.img, initrd-X.img.sha256
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("kernel dir holds %v", names)
	}
}
