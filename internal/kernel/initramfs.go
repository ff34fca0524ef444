package kernel

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/cavaliergopher/cpio"
	"github.com/klauspost/compress/gzip"
)

// InitramfsFile is one entry of a generated initramfs.
type InitramfsFile struct {
	Path string      // e.g. "init", "lib/modules/ext4.ko" (no leading slash)
	Mode os.FileMode // permissions, plus os.ModeDir / os.ModeSymlink for directories and symlinks
	Data []byte      // file contents, or the link target for symlinks
}

// WriteInitramfs writes a gzip-compressed cpio "newc" archive with the
// given entries, in the given order. Missing parent directories are added
// (mode 0755, or the mode of a directory entry given later for that path)
// just before the first entry inside them. Everything is owned by root and
// has a zero mtime, so the same input always gives the same bytes. Paths
// must be relative and clean; a path given twice is an error.
func WriteInitramfs(w io.Writer, files []InitramfsFile) error {
	if err := writeInitramfs(w, files); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return nil
}

func writeInitramfs(w io.Writer, files []InitramfsFile) error {
	explicitDirs := map[string]os.FileMode{}
	seen := map[string]bool{}
	for _, f := range files {
		if !fs.ValidPath(f.Path) || f.Path == "." {
			return fmt.Errorf("invalid path %q (must be relative and clean)", f.Path)
		}
		if seen[f.Path] {
			return fmt.Errorf("duplicate path %q", f.Path)
		}
		seen[f.Path] = true
		if f.Mode.IsDir() {
			explicitDirs[f.Path] = f.Mode
		}
	}
	for _, f := range files {
		// A parent given as a non-directory would make the archive
		// unextractable.
		for dir := path.Dir(f.Path); dir != "."; dir = path.Dir(dir) {
			if seen[dir] {
				if _, ok := explicitDirs[dir]; !ok {
					return fmt.Errorf("%q is inside %q, which is not a directory", f.Path, dir)
				}
			}
		}
	}

	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	cw := cpio.NewWriter(zw)
	written := map[string]bool{}
	var writeEntry func(f InitramfsFile) error
	writeEntry = func(f InitramfsFile) error {
		if dir := path.Dir(f.Path); dir != "." && !written[dir] {
			mode, ok := explicitDirs[dir]
			if !ok {
				mode = os.ModeDir | 0o755
			}
			if err := writeEntry(InitramfsFile{Path: dir, Mode: mode}); err != nil {
				return err
			}
		}
		if written[f.Path] {
			return nil // a directory already written as a parent
		}
		written[f.Path] = true
		return writeCpioEntry(cw, f)
	}
	for _, f := range files {
		if err := writeEntry(f); err != nil {
			return err
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func writeCpioEntry(cw *cpio.Writer, f InitramfsFile) error {
	mode := cpio.FileMode(f.Mode.Perm())
	if f.Mode&os.ModeSetuid != 0 {
		mode |= cpio.ModeSetuid
	}
	if f.Mode&os.ModeSetgid != 0 {
		mode |= cpio.ModeSetgid
	}
	if f.Mode&os.ModeSticky != 0 {
		mode |= cpio.ModeSticky
	}
	h := &cpio.Header{Name: f.Path, Links: 1}
	var body []byte
	switch {
	case f.Mode.IsDir():
		mode |= cpio.TypeDir
		h.Links = 2
	case f.Mode&os.ModeSymlink != 0:
		if len(f.Data) == 0 || strings.ContainsRune(string(f.Data), 0) {
			return fmt.Errorf("symlink %q: bad target %q", f.Path, f.Data)
		}
		mode = cpio.TypeSymlink | 0o777
		body = f.Data
		h.Linkname = string(f.Data)
	case f.Mode.IsRegular():
		mode |= cpio.TypeReg
		body = f.Data
	default:
		return fmt.Errorf("%q: unsupported file type %v", f.Path, f.Mode.Type())
	}
	h.Mode = mode
	h.Size = int64(len(body))
	if err := cw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	if _, err := cw.Write(body); err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	return nil
}
