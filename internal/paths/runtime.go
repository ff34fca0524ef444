package paths

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// EnsureRuntime creates the runtime directory (and RuntimeParent) with
// mode 0700 where missing and checks each with CheckRuntime's rules.
// The daemon calls it before putting its socket, lock and pid file
// there.
func (l Layout) EnsureRuntime() error {
	for _, d := range l.runtimeDirs() {
		if err := os.Mkdir(d.path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create runtime directory %s: %w", d.path, err)
		}
		if err := checkPrivateDir(d.path, d.managed); err != nil {
			return err
		}
	}
	return nil
}

// CheckRuntime checks the runtime directory and RuntimeParent where
// they exist: each must be a directory (not a symbolic link) owned by
// this user that neither group nor others can enter (RuntimeManaged:
// write to). A directory another local user made could hold a socket
// or pid file of theirs, so it is refused, never repaired.
func (l Layout) CheckRuntime() error {
	for _, d := range l.runtimeDirs() {
		if err := checkPrivateDir(d.path, d.managed); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

type runtimeDir struct {
	path    string
	managed bool
}

func (l Layout) runtimeDirs() []runtimeDir {
	var out []runtimeDir
	if l.RuntimeParent != "" {
		out = append(out, runtimeDir{path: l.RuntimeParent})
	}
	return append(out, runtimeDir{path: l.Runtime, managed: l.RuntimeManaged})
}

func checkPrivateDir(dir string, managed bool) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("runtime directory: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("runtime directory %s is a symbolic link: refusing to use it", dir)
	}
	if !fi.IsDir() {
		return fmt.Errorf("runtime directory %s is not a directory: refusing to use it", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("runtime directory %s: cannot read its owner", dir)
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("runtime directory %s is owned by uid %d, not %d: another user may have made it; refusing to use it (remove it, or set XDG_RUNTIME_DIR)", dir, st.Uid, uid)
	}
	bad := fs.FileMode(0o077)
	if managed {
		bad = 0o022
	}
	if perm := fi.Mode().Perm(); perm&bad != 0 {
		return fmt.Errorf("runtime directory %s has mode %04o: group or others can use it; refusing it (chmod 700 %s)", dir, perm, dir)
	}
	return nil
}
