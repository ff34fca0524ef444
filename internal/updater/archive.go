package updater

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/untar"
)

// The binaries a release consists of.
const (
	BinCLI    = "banger"
	BinDaemon = "bangerd"
	BinAgent  = "banger-agent"
	BinHelper = "banger-helper"
)

// Limits on what an archive may contain.
const (
	// MaxArchiveSize bounds the compressed archive download.
	MaxArchiveSize = 1 << 30
	// MaxBinarySize bounds each extracted binary.
	MaxBinarySize = 1 << 30
)

// Binaries returns the names of the binaries a release consists of, in
// the order they are installed.
func Binaries() []string {
	return []string{BinAgent, BinHelper, BinDaemon, BinCLI}
}

func isBinary(name string) bool {
	for _, b := range Binaries() {
		if b == name {
			return true
		}
	}
	return false
}

// ChecksumFor returns the lowercase hex SHA-256 that sha256sum(1) output
// lists for name.
func ChecksumFor(sums []byte, name string) (string, error) {
	found := ""
	for i, line := range strings.Split(string(sums), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		sum, file, ok := strings.Cut(line, " ")
		if !ok || len(sum) != sha256.Size*2 {
			return "", fmt.Errorf("SHA256SUMS line %d is not \"HEX  NAME\"", i+1)
		}
		if _, err := hex.DecodeString(sum); err != nil {
			return "", fmt.Errorf("SHA256SUMS line %d: %w", i+1, err)
		}
		// "HEX  NAME" (text mode) or "HEX *NAME" (binary mode).
		switch {
		case strings.HasPrefix(file, " "), strings.HasPrefix(file, "*"):
			file = file[1:]
		default:
			return "", fmt.Errorf("SHA256SUMS line %d is not \"HEX  NAME\"", i+1)
		}
		file = strings.TrimPrefix(file, "./")
		if file != name {
			continue
		}
		sum = strings.ToLower(sum)
		if found != "" && found != sum {
			return "", fmt.Errorf("SHA256SUMS lists %s twice with different sums", name)
		}
		found = sum
	}
	if found == "" {
		return "", fmt.Errorf("SHA256SUMS has no line for %s", name)
	}
	return found, nil
}

// extractArchive unpacks the release archive at src into dir, which must
// be empty of the binary names. It accepts exactly the four binaries as
// regular files and writes them with mode 0755.
func extractArchive(ctx context.Context, src, dir string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open archive: %w", err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer gz.Close()
	got := make(map[string]bool)
	lim := untar.Limits{MaxEntries: 64, MaxBytes: int64(len(Binaries())) * MaxBinarySize}
	err = untar.Walk(ctx, gz, untar.WalkOptions{Limits: lim}, func(e untar.Entry, r io.Reader) error {
		hdr, name := e.Header, e.Name
		if !isBinary(name) {
			return fmt.Errorf("unexpected member %q", hdr.Name)
		}
		// The reader reports old-style regular files (TypeRegA) as TypeReg.
		if hdr.Typeflag != tar.TypeReg {
			return fmt.Errorf("%s is not a regular file", hdr.Name)
		}
		if got[name] {
			return fmt.Errorf("%s appears twice", name)
		}
		got[name] = true
		if hdr.Size > MaxBinarySize {
			return fmt.Errorf("%s is larger than %d bytes", name, int64(MaxBinarySize))
		}
		return writeFile(filepath.Join(dir, name), r, hdr.Size)
	})
	if ne := (*untar.NameError)(nil); errors.As(err, &ne) {
		return fmt.Errorf("archive: unexpected member %q: %w", ne.Name, err)
	}
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	for _, b := range Binaries() {
		if !got[b] {
			return fmt.Errorf("archive: %s is missing", b)
		}
	}
	return nil
}

// writeFile creates path with mode 0755 holding exactly size bytes of r,
// synced to disk.
func writeFile(path string, r io.Reader, size int64) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	n, err := io.Copy(out, io.LimitReader(r, size))
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		// The mode passed to OpenFile is subject to the umask.
		err = out.Chmod(0o755)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
