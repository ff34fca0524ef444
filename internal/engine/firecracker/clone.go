package firecracker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"banger/internal/fsutil"
)

// Clone methods reported by CloneDisk.
const (
	// CloneReflink: the copy shares the source's extents (FICLONE on
	// btrfs, XFS with reflink=1, bcachefs, ...), taking no time and no
	// space until either side is written.
	CloneReflink = "reflink"
	// CloneSparseCopy: the data was copied, holes (and all-zero blocks)
	// left unallocated, so the copy takes the space the source's data
	// does.
	CloneSparseCopy = "sparse-copy"
)

// sparseBlock is the granularity at which all-zero data is left as a hole.
const sparseBlock = 4096

// copyChunk is the read size of the sparse copy.
const copyChunk = 1 << 20

// CloneDisk makes dst a copy-on-write copy of the raw disk image src, for
// VMMs (Firecracker) that cannot stack a qcow2 overlay on a base image. It
// picks the method itself and reports it (CloneReflink or
// CloneSparseCopy): a reflink where the filesystem supports one, otherwise
// a sparse copy that keeps src's holes as holes (SEEK_DATA/SEEK_HOLE) and
// does not allocate all-zero blocks either.
//
// dst must not exist. It appears only once complete: the copy is made
// under a temporary name in dst's directory, synced and linked into place,
// so a failure or crash leaves no partial dst. dst gets src's permission
// bits.
func CloneDisk(src, dst string) (method string, err error) {
	return cloneDisk(src, dst, ficlone)
}

// ficlone asks the filesystem to share src's extents with dst.
func ficlone(dst, src *os.File) error {
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
}

// reflinkUnsupported reports whether a FICLONE error means "no reflink
// here" (fall back to copying) rather than a real failure.
func reflinkUnsupported(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.ENOTTY, unix.EXDEV, unix.EINVAL, unix.ENOSYS, unix.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func cloneDisk(src, dst string, reflink func(dst, src *os.File) error) (method string, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("clone disk %s: %w", src, err)
		}
	}()
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", src)
	}
	if _, err := os.Lstat(dst); err == nil {
		return "", fmt.Errorf("%s already exists", dst)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	out, err := fsutil.CreateAtomic(dst, st.Mode().Perm())
	if err != nil {
		return "", err
	}
	defer out.Abort() // a no-op once committed

	method = CloneReflink
	if rerr := reflink(out.File, in); rerr != nil {
		if !reflinkUnsupported(rerr) {
			return "", fmt.Errorf("reflink: %w", rerr)
		}
		method = CloneSparseCopy
		if err := sparseCopy(out.File, in, st.Size()); err != nil {
			return "", err
		}
	}
	// Link, unlike rename, never replaces a dst that appeared meanwhile.
	if err := out.CommitExclusive(); err != nil {
		return "", err
	}
	return method, nil
}

// sparseCopy copies src's data extents into dst, leaving holes where src
// has holes and where a sparseBlock of data is all zeros.
func sparseCopy(dst, src *os.File, size int64) error {
	if err := dst.Truncate(size); err != nil {
		return err
	}
	fd := int(src.Fd())
	buf := make([]byte, copyChunk)
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			return nil // only a hole remains
		case err != nil:
			// No SEEK_DATA support: copy everything, still skipping
			// zero blocks.
			return copyRange(dst, src, off, size, buf)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > size {
			hole = size
		}
		if err := copyRange(dst, src, data, hole, buf); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies src[from:to) to the same offsets in dst, skipping
// all-zero sparseBlocks (dst reads as zeros there already).
func copyRange(dst, src *os.File, from, to int64, buf []byte) error {
	zero := make([]byte, sparseBlock)
	for off := from; off < to; {
		n := int(min(int64(len(buf)), to-off))
		n, err := src.ReadAt(buf[:n], off)
		if n == 0 {
			if err == nil || errors.Is(err, io.EOF) {
				return fmt.Errorf("source shrank while copying (at byte %d)", off)
			}
			return err
		}
		chunk := buf[:n]
		for i := 0; i < len(chunk); {
			j := min(i+sparseBlock, len(chunk))
			if bytes.Equal(chunk[i:j], zero[:j-i]) {
				i = j
				continue
			}
			// Extend the run over following non-zero blocks.
			for j < len(chunk) {
				k := min(j+sparseBlock, len(chunk))
				if bytes.Equal(chunk[j:k], zero[:k-j]) {
					break
				}
				j = k
			}
			if _, err := dst.WriteAt(chunk[i:j], off+int64(i)); err != nil {
				return err
			}
			i = j
		}
		off += int64(n)
	}
	return nil
}
