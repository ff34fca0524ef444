// Package fsutil writes files so that a crash never leaves a truncated
// or half-written file under its final name.
//
// Every writer follows the same four steps: write a temporary file in
// the target's directory, fsync it, rename it over the target, fsync the
// directory (so that the rename itself survives a power loss).
// AtomicWriteFile does it for a byte slice, CreateAtomic for a file too
// big to hold in memory (or produced by another program, see
// AtomicFile.TempPath), and SyncDir is the last step on its own, for
// callers that rename by themselves. WriteFileExclusive and
// AtomicFile.CommitExclusive create a file that must not exist yet (a
// hard link instead of the rename, so a file that appeared meanwhile is
// never replaced). AtomicWriteFileIn and SyncDirIn do the same inside an
// os.Root, for trees a hostile party may have filled with links.
// CopyFile copies a file to a new one, synced.
package fsutil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
)

// AtomicWriteFile writes data to path with mode perm: readers see the
// old content or the new one, never a part of it, even after a crash.
func AtomicWriteFile(path string, data []byte, perm fs.FileMode) error {
	f, err := CreateAtomic(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}

// AtomicFile is a temporary file that becomes its target only on
// Commit. It is an *os.File: write to it, seek in it, or hand TempPath
// to another program.
type AtomicFile struct {
	*os.File
	target string
	done   bool
}

// CreateAtomic creates the temporary file for path (in path's
// directory, mode perm). Commit puts it in place; Abort (safe to defer
// after Commit) removes it.
func CreateAtomic(path string, perm fs.FileMode) (*AtomicFile, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file for %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("chmod %s: %w", f.Name(), err)
	}
	return &AtomicFile{File: f, target: path}, nil
}

// TempPath is the temporary file's path.
func (a *AtomicFile) TempPath() string { return a.File.Name() }

// Commit fsyncs the file, closes it, renames it over the target and
// fsyncs the directory. On error the temporary file is removed and the
// target is unchanged (or, if only the directory sync failed, replaced
// but maybe not durably).
func (a *AtomicFile) Commit() error {
	if a.done {
		return errors.New("atomic file already committed or aborted")
	}
	a.done = true
	tmp := a.File.Name()
	err := a.File.Sync()
	if cerr := a.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, a.target)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", a.target, err)
	}
	return SyncDir(filepath.Dir(a.target))
}

// CommitExclusive is Commit for a target that must not exist: the
// file is hard-linked to it, which fails with fs.ErrExist instead of
// replacing a file already there; the temporary name is then removed.
func (a *AtomicFile) CommitExclusive() error {
	if a.done {
		return errors.New("atomic file already committed or aborted")
	}
	a.done = true
	tmp := a.File.Name()
	defer os.Remove(tmp)
	err := a.File.Sync()
	if cerr := a.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp, a.target)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", a.target, err)
	}
	return SyncDir(filepath.Dir(a.target))
}

// WriteFileExclusive creates path with data and mode perm, complete or
// not at all; it fails with fs.ErrExist if path exists.
func WriteFileExclusive(path string, data []byte, perm fs.FileMode) error {
	f, err := CreateAtomic(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.CommitExclusive()
}

// Abort removes the temporary file; after Commit it does nothing.
func (a *AtomicFile) Abort() {
	if a.done {
		return
	}
	a.done = true
	a.File.Close()
	os.Remove(a.File.Name())
}

// SyncFile fsyncs the file at path (one written by another program
// before it is renamed into place).
func SyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// Rename renames oldpath (already synced) to newpath and fsyncs
// newpath's directory, and oldpath's when it is another one.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	if err := SyncDir(filepath.Dir(newpath)); err != nil {
		return err
	}
	if od := filepath.Dir(oldpath); od != filepath.Dir(newpath) {
		return SyncDir(od)
	}
	return nil
}

// SyncDir fsyncs directory dir, making the renames and creations in it
// durable. A filesystem that cannot sync directories (EINVAL) is not an
// error.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) && !isEINVAL(err) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// AtomicWriteFileIn is AtomicWriteFile for name inside root: the
// temporary file, the rename and the directory sync all resolve name
// through root, so a symbolic link can never lead the write outside it.
func AtomicWriteFileIn(root *os.Root, name string, data []byte, perm fs.FileMode) error {
	var rnd [6]byte
	rand.Read(rnd[:])
	dir, base := path.Split(name)
	tmp := dir + "." + base + ".tmp-" + hex.EncodeToString(rnd[:])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create temporary file for %s: %w", name, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, name)
	}
	if err != nil {
		root.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if dir == "" {
		dir = "."
	}
	return SyncDirIn(root, dir)
}

// SyncDirIn fsyncs directory dir of root ("." is root itself).
func SyncDirIn(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) && !isEINVAL(err) {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// CopyFile copies the regular file src to dst, which must not exist,
// with mode perm (src's permission bits when perm is 0), synced; on
// error dst is removed.
func CopyFile(src, dst string, perm fs.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("copy %s: not a regular file", src)
	}
	if perm == 0 {
		perm = st.Mode().Perm()
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(dst)
		}
	}()
	_, err = io.Copy(out, in)
	if err == nil {
		// The mode given at creation is subject to the umask.
		err = out.Chmod(perm)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}

func isEINVAL(err error) bool { return errors.Is(err, syscall.EINVAL) }
