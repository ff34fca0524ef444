package untar

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Options tune Extract. The zero value extracts regular files,
// directories, symbolic links and hard links with their permission
// bits, skipping every other entry type.
type Options struct {
	Limits
	// SpecialBits keeps the setuid, setgid and sticky bits.
	SpecialBits bool
	// Owners sets each entry's owner and group from the archive (the
	// caller must be root).
	Owners bool
	// Devices creates character and block devices and fifos; otherwise
	// they are treated like unknown entry types.
	Devices bool
	// RefuseOther makes an entry of a type that is not extracted an
	// error; by default it is skipped.
	RefuseOther bool
	// ReplaceDirs lets a file, link or device entry replace a directory
	// already there (removing its content); otherwise that is an error.
	ReplaceDirs bool
	// Sparse writes all-zero 64 KiB runs of regular files as holes.
	Sparse bool
	// ConfineSymlinks drops the symbolic links that point outside the
	// directory: those whose target is absolute or climbs out, at once,
	// and, after the last entry, those that resolve outside it or
	// nowhere through a chain of links.
	ConfineSymlinks bool
	// Filter, if set, sees every entry but the root first: false skips
	// it, an error ends the extraction.
	Filter func(e Entry) (bool, error)
	// Intercept, if set, sees every entry the Filter kept, with its
	// content, before it is extracted: it returns the reader the content
	// is then read from (content itself, or a reader wrapping it, such as
	// a TeeReader for a caller that needs the bytes too), or nil to skip
	// the entry once it has read what it wanted. An error ends the
	// extraction.
	Intercept func(e Entry, content io.Reader) (io.Reader, error)
}

// Stats tell what Extract wrote.
type Stats struct {
	// Entries counts the entries extracted (not the skipped ones).
	Entries int
	// Bytes counts the regular files' bytes.
	Bytes int64
}

// Extract extracts the tar stream r under dir (created if needed),
// confined to it: see the package comment and Options. Directory modes
// are applied at the end, so read-only directories can be filled. On
// error what was extracted so far stays, for the caller to remove.
func Extract(ctx context.Context, r io.Reader, dir string, o Options) (Stats, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Stats{}, fmt.Errorf("untar: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("untar: %w", err)
	}
	defer root.Close()
	x := &extractor{
		root:  root,
		o:     o,
		links: map[string]bool{},
		made:  map[string]bool{},
		buf:   make([]byte, holeChunk),
	}
	if err := Walk(ctx, r, WalkOptions{Limits: o.Limits}, x.entry); err != nil {
		return x.stats, fmt.Errorf("untar: %w", err)
	}
	if o.ConfineSymlinks {
		if err := x.dropEscapingSymlinks(dir); err != nil {
			return x.stats, fmt.Errorf("untar: %w", err)
		}
	}
	for i := len(x.dirModes) - 1; i >= 0; i-- {
		d := x.dirModes[i]
		if err := root.Chmod(d.name, d.mode); err != nil {
			return x.stats, fmt.Errorf("untar: chmod %s: %w", d.name, err)
		}
	}
	return x.stats, nil
}

type dirMode struct {
	name string
	mode fs.FileMode
}

type extractor struct {
	root     *os.Root
	o        Options
	links    map[string]bool // symbolic links this archive made
	made     map[string]bool // directories known to exist
	dirModes []dirMode
	symlinks []string
	stats    Stats
	buf      []byte
}

func (x *extractor) entry(e Entry, content io.Reader) error {
	if e.Name == "" {
		return nil // the root: dir itself
	}
	if x.o.Filter != nil {
		ok, err := x.o.Filter(e)
		if err != nil || !ok {
			return err
		}
	}
	if x.o.Intercept != nil {
		r, err := x.o.Intercept(e, content)
		if err != nil || r == nil {
			return err
		}
		content = r
	}
	if err := x.write(e, content); err != nil {
		return fmt.Errorf("%q: %w", e.Name, err) // quoted: names are hostile
	}
	return nil
}

func (x *extractor) write(e Entry, content io.Reader) error {
	h, name := e.Header, e.Name
	if err := x.belowSymlink(name); err != nil {
		return err
	}
	mode := fs.FileMode(h.Mode).Perm()
	if x.o.SpecialBits {
		mode |= h.FileInfo().Mode() & (fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	}
	switch h.Typeflag {
	case tar.TypeDir:
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if !x.o.Devices {
			return x.other(h)
		}
	default:
		return x.other(h)
	}
	if err := x.mkParents(name); err != nil {
		return err
	}
	switch h.Typeflag {
	case tar.TypeDir:
		fi, err := x.root.Lstat(name)
		if err == nil && !fi.IsDir() {
			if err := x.root.Remove(name); err != nil {
				return err
			}
			delete(x.links, name)
		}
		if err := x.root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		x.made[name] = true
		x.dirModes = append(x.dirModes, dirMode{name, mode})
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if err := x.replace(name); err != nil {
			return err
		}
		if err := CreateFile(x.root, name, content, h.Size, mode, x.o.Sparse, x.buf); err != nil {
			return err
		}
		x.stats.Bytes += h.Size
	case tar.TypeSymlink:
		if x.o.ConfineSymlinks && !symlinkStaysInside(name, h.Linkname) {
			return nil
		}
		if err := x.replace(name); err != nil {
			return err
		}
		if err := x.root.Symlink(h.Linkname, name); err != nil {
			return err
		}
		x.links[name] = true
		x.symlinks = append(x.symlinks, name)
	case tar.TypeLink:
		target, err := CleanName(h.Linkname)
		if err != nil {
			return fmt.Errorf("hard link: %w", err)
		}
		if target == "" {
			return errors.New("hard link to the root")
		}
		if target == name {
			return nil
		}
		if err := x.belowSymlink(target); err != nil {
			return fmt.Errorf("hard link: %w", err)
		}
		if err := x.replace(name); err != nil {
			return err
		}
		if err := x.root.Link(target, name); err != nil {
			return err
		}
		if x.links[target] {
			x.links[name] = true
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if err := x.replace(name); err != nil {
			return err
		}
		m := uint32(mode.Perm())
		switch h.Typeflag {
		case tar.TypeChar:
			m |= unix.S_IFCHR
		case tar.TypeBlock:
			m |= unix.S_IFBLK
		default:
			m |= unix.S_IFIFO
		}
		if err := Mknod(x.root, name, m, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))); err != nil {
			return err
		}
	}
	if x.o.Owners {
		if err := x.root.Lchown(name, h.Uid, h.Gid); err != nil {
			return err
		}
	}
	x.stats.Entries++
	return nil
}

func (x *extractor) other(h *tar.Header) error {
	if x.o.RefuseOther {
		return fmt.Errorf("unsupported entry type %q", h.Typeflag)
	}
	return nil
}

// belowSymlink refuses a name below a symbolic link the archive made.
func (x *extractor) belowSymlink(name string) error {
	if len(x.links) == 0 {
		return nil
	}
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if x.links[d] {
			return fmt.Errorf("lies below symbolic link %q: refusing to write through it", d)
		}
	}
	return nil
}

// mkParents creates name's missing parent directories (mode 0755).
func (x *extractor) mkParents(name string) error {
	d := path.Dir(name)
	if d == "." || x.made[d] {
		return nil
	}
	if err := x.root.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("create parents: %w", err)
	}
	for ; d != "."; d = path.Dir(d) {
		x.made[d] = true
	}
	return nil
}

// replace removes what is at name, so that a later entry of the same
// name wins, as with tar.
func (x *extractor) replace(name string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	delete(x.links, name)
	if fi.IsDir() {
		if !x.o.ReplaceDirs {
			return errors.New("is a directory already: refusing to replace it")
		}
		delete(x.made, name)
		for d := range x.made {
			if strings.HasPrefix(d, name+"/") {
				delete(x.made, d)
			}
		}
		for l := range x.links {
			if strings.HasPrefix(l, name+"/") {
				delete(x.links, l)
			}
		}
		return x.root.RemoveAll(name)
	}
	return x.root.Remove(name)
}

// dropEscapingSymlinks removes the archive's symbolic links that, in
// the finished tree, resolve outside dir or not at all: a chain of
// links that each look harmless can still climb out.
func (x *extractor) dropEscapingSymlinks(dir string) error {
	if len(x.symlinks) == 0 {
		return nil
	}
	base, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	for _, name := range x.symlinks {
		resolved, err := filepath.EvalSymlinks(filepath.Join(base, filepath.FromSlash(name)))
		if err == nil && isWithin(base, resolved) {
			continue
		}
		if err := x.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove escaping symbolic link %s: %w", name, err)
		}
	}
	return nil
}

// isWithin reports whether p is base or below it (both clean, absolute).
func isWithin(base, p string) bool {
	rel, err := filepath.Rel(base, p)
	return err == nil && (rel == "." || filepath.IsLocal(rel))
}

// symlinkStaysInside reports whether a symbolic link at name (clean,
// relative) with the given target resolves, lexically, inside the tree.
func symlinkStaysInside(name, target string) bool {
	if target == "" || strings.HasPrefix(target, "/") {
		return false
	}
	resolved := path.Join(path.Dir(name), target)
	return resolved != ".." && !strings.HasPrefix(resolved, "../")
}

// CreateFile creates the new regular file name in root (it must not
// exist; O_EXCL, so never through a symbolic link) with exactly size
// bytes of r and mode mode (set after writing, so the umask does not
// narrow it). With sparse, all-zero 64 KiB runs become holes. buf, if
// not nil, is the copy buffer (at least 64 KiB for sparse writes).
func CreateFile(root *os.Root, name string, r io.Reader, size int64, mode fs.FileMode, sparse bool, buf []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if len(buf) < holeChunk {
		buf = make([]byte, holeChunk)
	}
	if sparse {
		err = copySparse(f, r, size, buf[:holeChunk])
	} else {
		var n int64
		n, err = io.CopyBuffer(f, io.LimitReader(r, size), buf)
		if err == nil && n != size {
			err = fmt.Errorf("file ends after %d of %d bytes", n, size)
		}
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func copySparse(f *os.File, r io.Reader, size int64, buf []byte) error {
	var off int64
	for off < size {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		if n > 0 {
			if !allZero(buf[:n]) {
				if _, werr := f.WriteAt(buf[:n], off); werr != nil {
					return werr
				}
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return fmt.Errorf("file ends after %d of %d bytes", off, size)
		}
		if err != nil {
			return err
		}
	}
	return f.Truncate(size) // a trailing hole
}

// inParent runs fn with a descriptor of name's parent directory (opened
// through root, so confined to it) and name's last component.
func inParent(root *os.Root, name string, fn func(dirfd int, base string) error) error {
	d, err := root.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	fi, err := d.Stat()
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: not a directory", path.Dir(name))
	}
	return fn(int(d.Fd()), path.Base(name))
}

// Mknod creates the device node or fifo name in root with mode (type
// and permission bits, as mknod(2)) and device number dev.
func Mknod(root *os.Root, name string, mode uint32, dev int) error {
	return inParent(root, name, func(fd int, base string) error {
		if err := unix.Mknodat(fd, base, mode, dev); err != nil {
			return &fs.PathError{Op: "mknod", Path: name, Err: err}
		}
		return nil
	})
}

// Lutimes sets the access and modification times of name in root to t,
// without following name if it is a symbolic link.
func Lutimes(root *os.Root, name string, t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return inParent(root, name, func(fd int, base string) error {
		if err := unix.UtimesNanoAt(fd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &fs.PathError{Op: "utimes", Path: name, Err: err}
		}
		return nil
	})
}
