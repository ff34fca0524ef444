package kernel

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	untarpkg "banger/internal/untar"
)

// ExtractDeb unpacks the data archive (data.tar.xz, .zst, .gz, .bz2, .lzma
// or plain .tar) of a Debian package (an `ar` archive) into destDir, which
// is created if needed: directories, regular files (permission bits kept),
// symlinks and hardlinks. Ownership and timestamps are not restored.
//
// Entries that would escape destDir are refused with an error: absolute
// names, names with "..", hardlinks to outside, and writes through a
// symlink. Symlinks that do not resolve to something inside destDir
// (absolute targets, relative ones climbing above it, directly or through
// other links, and dangling ones) are left out: in an unpacked tree they
// could only point into the host.
func ExtractDeb(ctx context.Context, debPath, destDir string) error {
	if err := extractDeb(ctx, debPath, destDir, nil); err != nil {
		return fmt.Errorf("extract %s: %w", debPath, err)
	}
	return nil
}

// extractDeb is ExtractDeb with an optional filter: when keep is not nil,
// only entries whose cleaned name it accepts are extracted (their parent
// directories are created as needed).
func extractDeb(ctx context.Context, debPath, destDir string, keep func(name string) bool) error {
	f, err := os.Open(debPath)
	if err != nil {
		return err
	}
	defer f.Close()
	member, name, err := findArMember(f, "data.tar")
	if err != nil {
		return err
	}
	c, err := debCompression(name)
	if err != nil {
		return err
	}
	src := bufio.NewReaderSize(ctxReader{ctx, member}, 1<<20)
	r, closeDec, err := newDecompressor(c, src)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer closeDec()
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return err
	}
	if err := untar(ctx, r, destDir, keep); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func debCompression(member string) (compression, error) {
	switch {
	case member == "data.tar":
		return compNone, nil
	case member == "data.tar.xz":
		return compXZ, nil
	case member == "data.tar.zst":
		return compZstd, nil
	case member == "data.tar.gz":
		return compGzip, nil
	case member == "data.tar.bz2":
		return compBzip2, nil
	case member == "data.tar.lzma":
		return compLZMA, nil
	}
	return "", fmt.Errorf("unsupported data member %q", member)
}

// findArMember returns the contents and name of the first member of the ar
// archive in f whose name starts with prefix.
func findArMember(f *os.File, prefix string) (*io.SectionReader, string, error) {
	var magic [8]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil || string(magic[:]) != "!<arch>\n" {
		return nil, "", errors.New("not a Debian package (no ar archive magic)")
	}
	off := int64(8)
	var hdr [60]byte
	for {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			if err == io.EOF {
				return nil, "", fmt.Errorf("no %s* member in the package", prefix)
			}
			return nil, "", fmt.Errorf("read ar header: %w", err)
		}
		if string(hdr[58:60]) != "`\n" {
			return nil, "", fmt.Errorf("corrupt ar header at offset %d", off)
		}
		name := strings.TrimRight(string(hdr[0:16]), " ")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, "", fmt.Errorf("corrupt ar member size at offset %d", off)
		}
		off += 60
		data := io.NewSectionReader(f, off, size)
		if rest, ok := strings.CutPrefix(name, "#1/"); ok {
			// BSD long name: stored at the start of the data.
			n, err := strconv.Atoi(rest)
			if err != nil || n < 0 || int64(n) > size {
				return nil, "", fmt.Errorf("corrupt ar member name at offset %d", off-60)
			}
			b := make([]byte, n)
			if _, err := data.ReadAt(b, 0); err != nil {
				return nil, "", fmt.Errorf("read ar member name: %w", err)
			}
			name = string(bytes.TrimRight(b, "\x00"))
			data = io.NewSectionReader(f, off+int64(n), size-int64(n))
		}
		name = strings.TrimSuffix(name, "/") // GNU ar style
		if strings.HasPrefix(name, prefix) {
			return data, name, nil
		}
		off += size + size%2
	}
}

// untar extracts a tar stream into dir with the shared confined
// extractor: permission bits (setuid/setgid/sticky included) kept,
// devices and fifos skipped, escaping symlinks left out.
func untar(ctx context.Context, r io.Reader, dir string, keep func(string) bool) error {
	_, err := untarpkg.Extract(ctx, r, dir, untarpkg.Options{
		Limits:          untarpkg.Limits{MaxBytes: maxDebBytes, MaxEntries: maxDebEntries},
		SpecialBits:     true,
		ConfineSymlinks: true,
		Filter: func(e untarpkg.Entry) (bool, error) {
			if strings.Contains(e.Header.Name, "\\") {
				return false, fmt.Errorf("refusing entry %q: non-portable path", e.Header.Name)
			}
			if keep == nil {
				return true, nil
			}
			if e.Header.Typeflag == tar.TypeLink {
				target, err := untarpkg.CleanName(e.Header.Linkname)
				if err != nil || target == "" {
					return false, fmt.Errorf("hardlink %s: bad target %q", e.Name, e.Header.Linkname)
				}
				if !keep(target) {
					return false, nil
				}
			}
			return keep(e.Name), nil
		},
	})
	return err
}

// Caps on a package's data archive: a kernel package holds a few
// thousand files and well under a gigabyte.
const (
	maxDebBytes   = 8 << 30
	maxDebEntries = 500_000
)
