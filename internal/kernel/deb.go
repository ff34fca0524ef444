package kernel

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
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

// untar extracts a tar stream into dir, confined to it through os.Root.
func untar(ctx context.Context, r io.Reader, dir string, keep func(string) bool) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	type dirMode struct {
		name string
		mode fs.FileMode
	}
	var dirModes []dirMode
	var symlinks []string
	tr := tar.NewReader(r)
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name, err := cleanEntryName(h.Name)
		if err != nil {
			return err
		}
		if name == "" || (keep != nil && !keep(name)) {
			continue
		}
		mode := h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		if dirName := path.Dir(name); dirName != "." {
			if err := root.MkdirAll(dirName, 0o755); err != nil {
				return fmt.Errorf("create parent of %s: %w", name, err)
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("create directory %s: %w", name, err)
			}
			// Applied at the end, so read-only directories can be filled.
			dirModes = append(dirModes, dirMode{name, mode})
		case tar.TypeReg, tar.TypeRegA:
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			if err := writeEntry(root, name, mode, tr, buf); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
		case tar.TypeSymlink:
			if !symlinkStaysInside(name, h.Linkname) {
				continue
			}
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return fmt.Errorf("create symlink %s: %w", name, err)
			}
			symlinks = append(symlinks, name)
		case tar.TypeLink:
			target, err := cleanEntryName(h.Linkname)
			if err != nil || target == "" {
				return fmt.Errorf("hardlink %s: bad target %q", name, h.Linkname)
			}
			if keep != nil && !keep(target) {
				continue
			}
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("create hardlink %s: %w", name, err)
			}
		default:
			// Devices, fifos and the like have no place in a kernel
			// package; they are skipped rather than created.
		}
	}
	if err := dropEscapingSymlinks(root, dir, symlinks); err != nil {
		return err
	}
	for i := len(dirModes) - 1; i >= 0; i-- {
		if err := root.Chmod(dirModes[i].name, dirModes[i].mode); err != nil {
			return fmt.Errorf("chmod %s: %w", dirModes[i].name, err)
		}
	}
	return nil
}

func writeEntry(root *os.Root, name string, mode fs.FileMode, r io.Reader, buf []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(f, r, buf); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// removeNonDir removes an existing non-directory at name so it can be
// replaced; a later entry of the same name wins, as with tar.
func removeNonDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s: is a directory in the archive and a file entry", name)
	}
	return root.Remove(name)
}

// cleanEntryName turns a tar entry name ("./boot/x") into a clean relative
// path ("boot/x"), "" for the root itself, or an error if it would escape.
func cleanEntryName(name string) (string, error) {
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return "", fmt.Errorf("refusing entry %q: absolute or non-portable path", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("refusing entry %q: path escapes the destination", name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	if !fs.ValidPath(clean) {
		return "", fmt.Errorf("refusing entry %q: invalid path", name)
	}
	return clean, nil
}

// dropEscapingSymlinks removes the symlinks (among names) that, in the
// finished tree, resolve outside dir or not at all: a chain of links that
// each look harmless can still climb out.
func dropEscapingSymlinks(root *os.Root, dir string, names []string) error {
	if len(names) == 0 {
		return nil
	}
	base, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		resolved, err := filepath.EvalSymlinks(filepath.Join(base, filepath.FromSlash(name)))
		if err == nil && isWithin(base, resolved) {
			continue
		}
		if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove escaping symlink %s: %w", name, err)
		}
	}
	return nil
}

// isWithin reports whether p is base or below it (both clean, absolute).
func isWithin(base, p string) bool {
	rel, err := filepath.Rel(base, p)
	return err == nil && filepath.IsLocal(rel) || rel == "."
}

// symlinkStaysInside reports whether a symlink at name (a clean relative
// path) with the given target resolves, lexically, inside the tree.
func symlinkStaysInside(name, target string) bool {
	if target == "" || strings.HasPrefix(target, "/") {
		return false
	}
	resolved := path.Join(path.Dir(name), target)
	return resolved != ".." && !strings.HasPrefix(resolved, "../")
}
