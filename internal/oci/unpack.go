package oci

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

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"banger/internal/untar"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh." // aufs metadata (.wh..wh.plnk etc.), never content
	opaqueMarker   = ".wh..wh..opq"
	xattrPAXPrefix = "SCHILY.xattr."
)

// Unpack applies img's layers in order into dir, which must be empty or
// absent (it is created with mode 0700: the host copy may hold setuid
// files). It honours whiteouts (.wh.NAME removes NAME of lower layers)
// and opaque directories (.wh..wh..opq hides the lower layers' content
// of its directory), and keeps regular files, directories, symbolic
// links, hard links (also to files of earlier layers), fifos, modes,
// ownership, mtimes and extended attributes.
//
// What the host copy cannot or should not hold is only recorded in the
// returned Tree, for BuildExt4 to put into the ext4 image: device nodes
// are never created on the host, extended attributes never set there,
// and ownership is set only when running as root. As a normal user,
// files are kept owner readable and writable and directories owner
// rwx, so that mkfs.ext4 can read them all.
//
// Entries are never created through a symbolic link: a layer writing
// below a path that is a symbolic link, or a path with "..", is
// refused. So are names, link targets and extended attribute names with
// control characters, and extended attributes outside the user.,
// security. and trusted. namespaces (see validate.go).
//
// o.MaxBytes bounds what the image may expand to: the uncompressed
// layer streams together, and the entries together (4096 bytes each
// plus a regular file's size: see UnpackOptions.MaxBytes) (a
// sparse or highly compressed layer is refused as soon as it claims
// more, not after writing it). Runs of zeros are written as holes. On
// error dir is left as is, for the caller to remove.
func Unpack(ctx context.Context, img v1.Image, dir string, o UnpackOptions) (*Tree, error) {
	o = o.withDefaults()
	if err := prepareDir(dir); err != nil {
		return nil, fmt.Errorf("unpack: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("unpack: list layers: %w", err)
	}
	var total, current int64
	progress := o.Progress
	if progress != nil {
		for i, l := range layers {
			n, err := l.Size()
			if err != nil {
				return nil, fmt.Errorf("unpack: layer %d size: %w", i+1, err)
			}
			total += n
		}
	}
	count := func(n int64) {
		current += n
		progress(current, total)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("unpack: %w", err)
	}
	defer r.Close()
	u := &unpacker{r: r, tree: newTree(), root: os.Geteuid() == 0, limits: o, buf: make([]byte, holeChunk)}
	for i, l := range layers {
		if progress != nil {
			l = &countingLayer{Layer: l, count: count}
		}
		if err := u.applyLayer(ctx, l); err != nil {
			if d, derr := l.Digest(); derr == nil {
				return nil, fmt.Errorf("unpack layer %d (%s): %w", i+1, d, err)
			}
			return nil, fmt.Errorf("unpack layer %d: %w", i+1, err)
		}
	}
	if err := u.finish(); err != nil {
		return nil, fmt.Errorf("unpack: %w", err)
	}
	return u.tree, nil
}

// entryCost is what every tar entry (directory, link, device, empty
// file...) counts against UnpackOptions.MaxBytes besides a regular
// file's size: one block, its least cost on disk.
const entryCost = 4096

// DefaultMaxBytes is UnpackOptions.MaxBytes when unset: 16 GiB.
const DefaultMaxBytes = 16 << 30

// DefaultMaxEntries is UnpackOptions.MaxEntries when unset.
const DefaultMaxEntries = 2_000_000

// ErrTooLarge is wrapped by Unpack's error when an image expands beyond
// its limits.
var ErrTooLarge = errors.New("image too large")

// UnpackOptions tune Unpack.
type UnpackOptions struct {
	// Progress, if set, gets the compressed layer bytes read so far and
	// their total.
	Progress func(current, total int64)
	// MaxBytes caps the uncompressed size of all layers together and
	// the total size of the entries: each tar entry counts entryCost
	// (4096) bytes plus, for a regular file, its size; default
	// DefaultMaxBytes.
	MaxBytes int64
	// MaxEntries caps the number of tar entries of all layers together;
	// default DefaultMaxEntries.
	MaxEntries int
}

func (o UnpackOptions) withDefaults() UnpackOptions {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	return o
}

// prepareDir creates dir (mode 0700) or checks it is an empty directory.
func prepareDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return err
		}
		return os.Mkdir(dir, 0o700)
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return os.Chmod(dir, 0o700)
}

type unpacker struct {
	// r is the target directory: every host write goes through it, so
	// none can leave it whatever the tree bookkeeping says.
	r    *os.Root
	buf  []byte
	tree *Tree
	root bool // euid 0: try to chown on the host
	// touched holds the paths a layer added and their parents, while
	// that layer is applied: its whiteouts and opaque markers only hide
	// what lower layers put there.
	touched map[string]bool

	limits    UnpackOptions
	streamed  int64 // uncompressed layer bytes read
	fileBytes int64 // entryCost per entry plus regular file sizes
	entries   int
}

// host turns a tree path ("/a/b") into a name relative to u.r ("a/b").
func (u *unpacker) host(p string) string {
	if p = strings.TrimPrefix(p, "/"); p == "" {
		return "."
	}
	return p
}

func (u *unpacker) applyLayer(ctx context.Context, l v1.Layer) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	u.touched = map[string]bool{"/": true}
	lr := &limitReader{r: &ctxReader{ctx: ctx, r: rc}, n: &u.streamed, max: u.limits.MaxBytes}
	tr := tar.NewReader(lr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if u.entries++; u.entries > u.limits.MaxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrTooLarge, u.limits.MaxEntries)
		}
		if err := u.apply(hdr, tr); err != nil {
			return fmt.Errorf("%q: %w", hdr.Name, err) // quoted: names are hostile
		}
	}
	// Read what the tar reader left so that the registry client reaches
	// EOF and checks the layer digest.
	if _, err := io.Copy(io.Discard, lr); err != nil {
		return fmt.Errorf("read the rest of the layer: %w", err)
	}
	return nil
}

func (u *unpacker) apply(hdr *tar.Header, r io.Reader) error {
	if err := checkEntryName(hdr.Name); err != nil {
		return err
	}
	p, err := cleanPath(hdr.Name)
	if err != nil {
		return err
	}
	dir, base := path.Split(p)
	dir = path.Clean(dir)

	if strings.HasPrefix(base, whiteoutPrefix) {
		switch {
		case base == opaqueMarker:
			return u.opaque(dir)
		case strings.HasPrefix(base, whiteoutMeta):
			return nil
		}
		name := strings.TrimPrefix(base, whiteoutPrefix)
		if name == "" || name == "." || name == ".." {
			return fmt.Errorf("bad whiteout name")
		}
		return u.whiteout(path.Join(dir, name))
	}

	e := &Entry{
		Path:    p,
		Mode:    uint32(hdr.Mode) & 0o7777,
		UID:     hdr.Uid,
		GID:     hdr.Gid,
		ModTime: hdr.ModTime,
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, xattrPAXPrefix); ok {
			if err := checkXattrName(name); err != nil {
				return err
			}
			if err := checkXattrValue(name, []byte(v)); err != nil {
				return err
			}
			if e.Xattrs == nil {
				e.Xattrs = map[string][]byte{}
			}
			if e.Xattrs[name] = []byte(v); len(e.Xattrs) > maxXattrs {
				return fmt.Errorf("more than %d extended attributes", maxXattrs)
			}
		}
	}
	switch hdr.Typeflag {
	case tar.TypeLink, tar.TypeSymlink:
		if err := checkLinkTarget(hdr.Linkname); err != nil {
			return err
		}
	}
	// Every entry costs at least an inode and a block on the host twice
	// (the unpacked tree and the ext4 image), whatever its size: charge
	// entryCost for each, plus the size of a regular file, against the
	// same budget, so that a small layer of many empty directories
	// cannot take gigabytes.
	cost := int64(entryCost)
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		if hdr.Size < 0 || hdr.Size > u.limits.MaxBytes-entryCost {
			return fmt.Errorf("%w: the files add up to more than %d MiB (file of %d bytes)", ErrTooLarge, u.limits.MaxBytes>>20, hdr.Size)
		}
		cost += hdr.Size
	}
	if cost > u.limits.MaxBytes-u.fileBytes {
		return fmt.Errorf("%w: the entries add up to more than %d MiB (each entry counts %d bytes plus a file's size)", ErrTooLarge, u.limits.MaxBytes>>20, entryCost)
	}
	u.fileBytes += cost

	if p == "/" {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("the root is not a directory")
		}
		e.Mode |= unix.S_IFDIR
		u.tree.put(e) // recorded only: the host directory stays 0700
		return nil
	}
	if err := u.mkParents(dir, hdr.ModTime); err != nil {
		return err
	}
	u.touched[p] = true

	if hdr.Typeflag == tar.TypeLink {
		return u.hardlink(e, hdr.Linkname)
	}
	old, exists := u.tree.entries[p]
	if exists && !(hdr.Typeflag == tar.TypeDir && old.IsDir()) {
		if err := u.removePath(p); err != nil {
			return err
		}
		exists = false
	}
	h := u.host(p)

	switch hdr.Typeflag {
	case tar.TypeDir:
		e.Mode |= unix.S_IFDIR
		if !exists {
			if err := u.r.Mkdir(h, 0o700); err != nil {
				return err
			}
		}
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		e.Mode |= unix.S_IFREG
		e.Size = hdr.Size
		if err := untar.CreateFile(u.r, h, r, hdr.Size, 0o600, true, u.buf); err != nil {
			return err
		}
	case tar.TypeSymlink:
		e.Mode = unix.S_IFLNK | 0o777
		e.Linkname = hdr.Linkname
		if err := u.r.Symlink(hdr.Linkname, h); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock:
		if hdr.Typeflag == tar.TypeChar {
			e.Mode |= unix.S_IFCHR
		} else {
			e.Mode |= unix.S_IFBLK
		}
		e.Major, e.Minor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
		u.tree.put(e) // never on the host: BuildExt4 makes it in the image
		return nil
	case tar.TypeFifo:
		e.Mode |= unix.S_IFIFO
		if err := untar.Mknod(u.r, h, unix.S_IFIFO|0o600, 0); err != nil {
			if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EOPNOTSUPP) {
				return fmt.Errorf("mkfifo: %w", err)
			}
			u.tree.put(e) // BuildExt4 makes it in the image
			return nil
		}
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	u.tree.put(e)
	return u.setHostMeta(h, e)
}

// mkParents checks that every component of dir is a directory of the
// tree, creating missing ones (0755 root:root, like container runtimes
// do). A component that is a symbolic link is refused: nothing is ever
// written through one.
func (u *unpacker) mkParents(dir string, mtime time.Time) error {
	cur := "/"
	for _, c := range strings.Split(strings.TrimPrefix(dir, "/"), "/") {
		if c == "" {
			continue
		}
		cur = path.Join(cur, c)
		u.touched[cur] = true
		e, ok := u.tree.entries[cur]
		if ok {
			switch {
			case e.IsDir():
				continue
			case e.Type() == unix.S_IFLNK:
				return fmt.Errorf("%s is a symbolic link: refusing to write through it", cur)
			default:
				return fmt.Errorf("%s is not a directory", cur)
			}
		}
		e = &Entry{Path: cur, Mode: unix.S_IFDIR | 0o755, ModTime: mtime}
		if err := u.r.Mkdir(u.host(cur), 0o700); err != nil {
			return err
		}
		u.tree.put(e)
		if err := u.setHostMeta(u.host(cur), e); err != nil {
			return err
		}
	}
	// Belt and braces: the tree mirrors the host, but make sure the
	// parent really is a directory before creating anything in it.
	fi, err := u.r.Lstat(u.host(dir))
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory on the host", dir)
	}
	return nil
}

// hardlink makes e.Path another name of the tree path linkname.
func (u *unpacker) hardlink(e *Entry, linkname string) error {
	target, err := cleanPath(linkname)
	if err != nil {
		return fmt.Errorf("hard link: %w", err)
	}
	if target == e.Path {
		return nil
	}
	if old, ok := u.tree.entries[e.Path]; ok {
		if err := u.removePath(old.Path); err != nil {
			return err
		}
	}
	te, ok := u.tree.entries[target]
	if !ok {
		return fmt.Errorf("hard link to %s, which does not exist", target)
	}
	if te.IsDir() {
		return fmt.Errorf("hard link to directory %s", target)
	}
	n := *te
	n.Path, n.Hardlink = e.Path, target
	if _, err := u.r.Lstat(u.host(target)); errors.Is(err, os.ErrNotExist) {
		// A device node (or a fifo the host refused): not on the host,
		// so this name gets a node of its own in the image.
		u.tree.put(&n)
		return nil
	}
	if err := u.r.Link(u.host(target), u.host(e.Path)); err != nil {
		return err
	}
	u.tree.put(&n)
	return nil
}

// whiteout removes what lower layers put at p.
func (u *unpacker) whiteout(p string) error {
	if _, ok := u.tree.entries[p]; !ok {
		return nil // includes paths below symbolic links: never in the tree
	}
	return u.prune(p)
}

// opaque removes what lower layers put in directory dir.
func (u *unpacker) opaque(dir string) error {
	e, ok := u.tree.entries[dir]
	if !ok || !e.IsDir() {
		return nil
	}
	for _, c := range u.tree.childPaths(dir) {
		if err := u.prune(c); err != nil {
			return err
		}
	}
	return nil
}

// prune removes p unless the current layer added it or something in it,
// in which case only the lower layers' content inside it goes.
func (u *unpacker) prune(p string) error {
	if !u.touched[p] {
		return u.removePath(p)
	}
	if e := u.tree.entries[p]; e.IsDir() {
		for _, c := range u.tree.childPaths(p) {
			if err := u.prune(c); err != nil {
				return err
			}
		}
	}
	return nil
}

func (u *unpacker) removePath(p string) error {
	if p == "/" {
		return fmt.Errorf("refusing to remove the root")
	}
	u.tree.remove(p)
	// p's parents are directories of the tree, and u.r confines it
	// anyway; RemoveAll does not follow p itself.
	return u.r.RemoveAll(u.host(p))
}

// setHostMeta gives the host file the entry's mode (plus what this user
// needs to read it back), ownership when root, and mtime (except for
// directories, whose mtimes change until the end).
func (u *unpacker) setHostMeta(h string, e *Entry) error {
	if u.root {
		if err := u.r.Lchown(h, e.UID, e.GID); err != nil && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EINVAL) {
			return err
		}
		// Failing that (user namespaces), BuildExt4 fixes it.
	}
	if e.Type() == unix.S_IFLNK {
		return u.setMtime(h, e.ModTime)
	}
	mode := e.Mode & 0o7777
	switch {
	case e.IsDir():
		mode |= 0o700 // later entries go in there
	case !u.root:
		mode |= 0o600
	}
	if err := u.r.Chmod(h, fileMode(mode)); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if e.IsDir() {
		return nil
	}
	return u.setMtime(h, e.ModTime)
}

// finish sets the directories' mtimes, now that nothing else goes in.
func (u *unpacker) finish() error {
	for p, e := range u.tree.entries {
		if !e.IsDir() || p == "/" {
			continue
		}
		if err := u.setMtime(u.host(p), e.ModTime); err != nil {
			return err
		}
	}
	return nil
}

func (u *unpacker) setMtime(h string, t time.Time) error {
	if t.IsZero() {
		return nil
	}
	if err := untar.Lutimes(u.r, h, t); err != nil {
		return fmt.Errorf("set mtime: %w", err)
	}
	return nil
}

// fileMode turns permission and setuid/setgid/sticky bits as in a tar
// header into an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	fm := fs.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		fm |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

// holeChunk is the copy buffer of regular files, whose all-zero runs of
// this size become holes (GNU sparse files arrive from the tar reader
// as zeros, and so do runs of zeros in a compressed layer).
const holeChunk = 64 << 10

// limitReader counts the bytes read into *n and fails once they pass
// max: a layer that decompresses into more than the image may hold is
// refused without reading the rest.
type limitReader struct {
	r   io.Reader
	n   *int64
	max int64
}

func (l *limitReader) Read(b []byte) (int, error) {
	n, err := l.r.Read(b)
	*l.n += int64(n)
	if *l.n > l.max {
		return n, fmt.Errorf("%w: the layers expand to more than %d MiB", ErrTooLarge, l.max>>20)
	}
	return n, err
}

// cleanPath turns a tar entry name into a clean absolute path, refusing
// ".." components (a leading slash is taken as the root).
func cleanPath(name string) (string, error) {
	p, err := untar.CleanName(strings.TrimLeft(name, "/"))
	if err != nil {
		return "", err
	}
	return "/" + p, nil
}

// ctxReader makes reads fail once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}
