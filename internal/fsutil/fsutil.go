// Package fsutil writes files so that a crash never leaves a truncated
// or half-written file under its final name.
//
// Every writer follows the same four steps: write a temporary file in
// the target's directory, fsync it, rename it over the target, fsync the
// directory (so that the rename itself survives a power loss).
// AtomicWriteFile does it for a byte slice, CreateAtomic for a file too
// big to hold in memory (or produced by another program, see
// AtomicFile.TempPath), and SyncDir is the last step on its own, for
// callers that rename by themselves.
package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
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

func isEINVAL(err error) bool { return errors.Is(err, syscall.EINVAL) }
