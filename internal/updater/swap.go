package updater

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"banger/internal/fsutil"
)

// journal records what swap did so that undo can reverse it.
type journal struct {
	entries []swapEntry
}

type swapEntry struct {
	name string
	// existed is true when BinDir held the binary before the swap; its
	// copy is NAME.previous.
	existed bool
	// replaced is true once the staged binary was renamed over NAME.
	replaced bool
	// undoErr is why undo could not restore this binary.
	undoErr error
}

// swap installs the staged binaries in staging (a directory inside
// binDir) into binDir. First every existing binary is preserved as
// NAME.previous (a hard link, or a copy where linking is not possible),
// then each staged binary is renamed over NAME. The journal is valid even
// when swap fails.
func swap(binDir, staging string) (*journal, error) {
	j := &journal{}
	for _, name := range Binaries() {
		dst := filepath.Join(binDir, name)
		e := swapEntry{name: name}
		_, err := os.Lstat(dst)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return j, fmt.Errorf("swap: %w", err)
		default:
			e.existed = true
			// Prepare the copy in staging and rename it into place, so an
			// older NAME.previous is replaced atomically.
			tmp := filepath.Join(staging, name+PreviousSuffix)
			if err := linkOrCopy(dst, tmp); err != nil {
				return j, fmt.Errorf("swap: keep %s: %w", dst, err)
			}
			if err := os.Rename(tmp, dst+PreviousSuffix); err != nil {
				return j, fmt.Errorf("swap: %w", err)
			}
		}
		j.entries = append(j.entries, e)
	}
	for i := range j.entries {
		e := &j.entries[i]
		dst := filepath.Join(binDir, e.name)
		if err := os.Rename(filepath.Join(staging, e.name), dst); err != nil {
			return j, fmt.Errorf("swap: %w", err)
		}
		e.replaced = true
	}
	if err := fsutil.SyncDir(binDir); err != nil {
		return j, fmt.Errorf("swap: %w", err)
	}
	return j, nil
}

// installed lists the paths the swap wrote.
func (j *journal) installed(binDir string) []string {
	var out []string
	for _, e := range j.entries {
		if e.replaced {
			out = append(out, filepath.Join(binDir, e.name))
		}
	}
	return out
}

// undo reverses the replaced entries: NAME.previous is renamed back over
// NAME, and a binary the swap added is removed. It tries every entry and
// returns the first error.
func (j *journal) undo(binDir string) error {
	var first error
	for i := len(j.entries) - 1; i >= 0; i-- {
		e := &j.entries[i]
		if !e.replaced {
			continue
		}
		dst := filepath.Join(binDir, e.name)
		var err error
		if e.existed {
			err = os.Rename(dst+PreviousSuffix, dst)
		} else if err = os.Remove(dst); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		if err != nil {
			e.undoErr = err
			if first == nil {
				first = err
			}
			continue
		}
		e.replaced = false
	}
	if err := fsutil.SyncDir(binDir); err != nil && first == nil {
		first = err
	}
	return first
}

// describe says, per binary, what is on disk after a failed undo.
func (j *journal) describe(binDir string) []string {
	var out []string
	for _, e := range j.entries {
		dst := filepath.Join(binDir, e.name)
		switch {
		case !e.replaced:
			out = append(out, dst+" is the previous binary")
		case e.existed:
			out = append(out, fmt.Sprintf("%s is the NEW binary, the previous one is %s%s (%v)", dst, dst, PreviousSuffix, e.undoErr))
		default:
			out = append(out, fmt.Sprintf("%s is the NEW binary and was not installed before (%v)", dst, e.undoErr))
		}
	}
	return out
}

// linkOrCopy makes dst a hard link to src, or a copy with the same mode
// when the file system or the kernel's protected_hardlinks refuses.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return fsutil.CopyFile(src, dst, 0)
}
