package catalog

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

	"github.com/klauspost/compress/zstd"
)

// maxSymlinkHops bounds symlink resolution, like the kernel's ELOOP limit.
const maxSymlinkHops = 40

// ExtractTarZst unpacks a zstd-compressed tar (a kernel of FormatTarZst)
// into dir, which must not exist or be an empty directory. Only regular
// files, directories and symlinks are allowed; permission bits are kept
// (without setuid and setgid), ownership and timestamps are not.
//
// Nothing may escape dir: absolute names and names with ".." are refused,
// entries are never created through a symlink (an entry under a path whose
// parent is a symlink is refused), and so are symlinks that are absolute
// or resolve, directly or through other symlinks, outside the tree.
//
// The tree is built in a temporary directory beside dir and renamed to dir
// once complete, so on error dir is left as it was.
func ExtractTarZst(ctx context.Context, r io.Reader, dir string) error {
	if err := extractTarZst(ctx, r, dir); err != nil {
		return fmt.Errorf("extract into %s: %w", dir, err)
	}
	return nil
}

func extractTarZst(ctx context.Context, r io.Reader, dir string) (err error) {
	dir = filepath.Clean(dir)
	existing, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case len(existing) > 0:
		return errors.New("directory is not empty")
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	stage, err := os.MkdirTemp(parent, ".partial-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			forceRemoveAll(stage)
		}
	}()
	if err := untarZst(ctx, r, stage); err != nil {
		return err
	}
	// An existing empty dir is replaced by the staged tree.
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(stage, dir); err != nil {
		return err
	}
	syncDir(parent)
	return nil
}

func untarZst(ctx context.Context, r io.Reader, dir string) error {
	dec, err := zstd.NewReader(ctxReader{ctx, r})
	if err != nil {
		return err
	}
	defer dec.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	type dirMode struct {
		name string
		mode fs.FileMode
	}
	var (
		dirModes []dirMode
		symlinks []string
		rootMode fs.FileMode = 0o755
	)
	tr := tar.NewReader(dec)
	buf := make([]byte, copyBufSize)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue // archive-wide metadata, not a file
		}
		name, err := entryName(h.Name)
		if err != nil {
			return err
		}
		perm := h.FileInfo().Mode().Perm()
		if name == "" {
			if h.Typeflag != tar.TypeDir {
				return fmt.Errorf("refusing entry %q: not a directory", h.Name)
			}
			rootMode = perm
			continue
		}
		if err := makeParents(root, name); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			fi, err := root.Lstat(name)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				if err := root.Mkdir(name, 0o755); err != nil {
					return err
				}
			case err != nil:
				return err
			case !fi.IsDir():
				return fmt.Errorf("refusing entry %q: a non-directory of that name exists", h.Name)
			}
			// Applied at the end, so read-only directories can be filled.
			dirModes = append(dirModes, dirMode{name, perm | h.FileInfo().Mode()&fs.ModeSticky})
		case tar.TypeReg, tar.TypeGNUSparse:
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			if err := writeFile(root, name, perm, ctxReader{ctx, tr}, buf); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
		case tar.TypeSymlink:
			if err := checkLinkTarget(name, h.Linkname); err != nil {
				return err
			}
			if err := removeNonDir(root, name); err != nil {
				return err
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return err
			}
			symlinks = append(symlinks, name)
		default:
			return fmt.Errorf("refusing entry %q: type %q is not a file, directory or symlink", h.Name, h.Typeflag)
		}
	}
	// Each link was checked lexically; a chain of links can still climb
	// out, which only shows once the whole tree exists.
	for _, name := range symlinks {
		if err := checkResolvesInside(root, name); err != nil {
			return err
		}
	}
	for i := len(dirModes) - 1; i >= 0; i-- {
		if err := root.Chmod(dirModes[i].name, dirModes[i].mode); err != nil {
			return err
		}
	}
	return root.Chmod(".", rootMode)
}

// entryName turns a tar entry name ("./boot/x") into a clean relative
// path ("boot/x"), "" for the root itself, or an error if it would escape.
func entryName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("refusing entry %q: absolute name", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("refusing entry %q: name with \"..\"", name)
		}
	}
	clean := path.Clean(name)
	if clean == "." {
		return "", nil
	}
	if !fs.ValidPath(clean) {
		return "", fmt.Errorf("refusing entry %q: invalid name", name)
	}
	return clean, nil
}

// makeParents creates the missing parent directories of name, refusing to
// go through anything that is not a real directory (a symlink in
// particular).
func makeParents(root *os.Root, name string) error {
	dir := path.Dir(name)
	if dir == "." {
		return nil
	}
	p := ""
	for _, el := range strings.Split(dir, "/") {
		p = path.Join(p, el)
		fi, err := root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := root.Mkdir(p, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("refusing entry %q: %s is a symlink", name, p)
		case !fi.IsDir():
			return fmt.Errorf("refusing entry %q: %s is not a directory", name, p)
		}
	}
	return nil
}

// removeNonDir removes an existing non-directory at name so a later entry
// of the same name replaces it, as with tar.
func removeNonDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("refusing entry %q: a directory of that name exists", name)
	}
	return root.Remove(name)
}

func writeFile(root *os.Root, name string, perm fs.FileMode, r io.Reader, buf []byte) error {
	// O_EXCL: never write through a symlink that appeared at name.
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(f, r, buf); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkLinkTarget refuses symlink targets that are empty, absolute or
// climb, lexically, out of the tree.
func checkLinkTarget(name, target string) error {
	if target == "" || strings.HasPrefix(target, "/") {
		return fmt.Errorf("refusing symlink %q -> %q: absolute or empty target", name, target)
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("refusing symlink %q -> %q: target outside the tree", name, target)
	}
	return nil
}

// checkResolvesInside follows the symlink name through the tree in root
// and fails if the resolution leaves the tree. Components that do not exist
// end the resolution: the kernel would fail there too.
func checkResolvesInside(root *os.Root, name string) error {
	target, err := root.Readlink(name)
	if err != nil {
		return err
	}
	escape := fmt.Errorf("refusing symlink %q -> %q: resolves outside the tree", name, target)
	var cur []string // resolved directory, as components below the root
	if d := path.Dir(name); d != "." {
		cur = strings.Split(d, "/")
	}
	pending := strings.Split(target, "/")
	hops := 0
	for len(pending) > 0 {
		el := pending[0]
		pending = pending[1:]
		switch el {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return escape
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := path.Join(append(cur, el)...)
		fi, err := root.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if !fi.IsDir() && len(pending) > 0 {
				return nil // a file in the middle: ENOTDIR, not an escape
			}
			cur = append(cur, el)
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return fmt.Errorf("refusing symlink %q: too many levels of symlinks", name)
		}
		next, err := root.Readlink(p)
		if err != nil {
			return err
		}
		if strings.HasPrefix(next, "/") {
			return escape
		}
		pending = append(strings.Split(next, "/"), pending...)
	}
	return nil
}

// forceRemoveAll removes a tree, making its directories writable first so
// read-only ones do not stop it.
func forceRemoveAll(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	os.RemoveAll(dir)
}
