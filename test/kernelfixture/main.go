// Command kernelfixture extracts the ELF vmlinux from the cached Debian
// kernel package (scripts/fixtures.sh) for the tests that boot a kernel
// directly (make integration):
//
//	go run ./test/kernelfixture DEB DESTDIR
//
// It writes DESTDIR/vmlinux with banger's own extractor (internal/kernel)
// and DESTDIR/vmlinux.source naming the package it came from (size and
// modification time), and does nothing when that still matches. It prints
// the vmlinux path.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"banger/internal/kernel"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: kernelfixture DEB DESTDIR")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	path, err := extract(ctx, os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kernelfixture:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}

func extract(ctx context.Context, deb, dest string) (string, error) {
	st, err := os.Stat(deb)
	if err != nil {
		return "", fmt.Errorf("kernel package: %w (run scripts/fixtures.sh)", err)
	}
	out := filepath.Join(dest, "vmlinux")
	stamp := filepath.Join(dest, "vmlinux.source")
	want := fmt.Sprintf("%s %d %d\n", deb, st.Size(), st.ModTime().UnixNano())
	if got, err := os.ReadFile(stamp); err == nil && string(got) == want {
		if _, err := os.Stat(out); err == nil {
			return out, nil
		}
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dest, ".extract-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := kernel.ExtractDeb(ctx, deb, tmp); err != nil {
		return "", err
	}
	layout, err := kernel.FindLayout(tmp)
	if err != nil {
		return "", err
	}
	image, err := os.ReadFile(layout.KernelPath)
	if err != nil {
		return "", err
	}
	vmlinux, err := kernel.ExtractVmlinux(image)
	if err != nil {
		return "", fmt.Errorf("extract vmlinux from %s: %w", filepath.Base(layout.KernelPath), err)
	}
	part := filepath.Join(tmp, "vmlinux")
	if err := os.WriteFile(part, vmlinux, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(part, out); err != nil {
		return "", err
	}
	if err := os.WriteFile(stamp, []byte(want), 0o644); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "kernelfixture: %s (%s) from %s\n", out, strings.TrimSpace(layout.Version), filepath.Base(deb))
	return out, nil
}
