package sysinstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"banger/internal/fsutil"
)

// rollbackTimeout bounds the systemctl commands that undo a failed Apply;
// they run even when ctx is already cancelled.
const rollbackTimeout = 90 * time.Second

// Apply carries out p, made by PlanInstall or PlanUninstall for the same
// Options.Root: the Before commands, then the directories, files and
// removals, then the Commands.
//
// Files are written atomically (a temporary file renamed over the target)
// and removals are first moved aside, so that a failure undoes everything:
// files Apply created are removed, files it replaced are restored, moved
// files are put back, and for an install the systemctl steps already done
// are reverted (a fresh install's units are disabled and stopped; a
// re-install's previous units are reloaded and restarted). Files whose
// content and mode are already right are left alone, so re-applying an
// install changes nothing but the metadata's timestamp.
func Apply(ctx context.Context, p *Plan, o Options) error {
	o, err := o.withDefaults()
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if p.Root != o.Root {
		return fmt.Errorf("apply: the plan is for root %s, the options for %s", p.Root, o.Root)
	}
	if p.Empty() {
		return nil
	}
	if o.Systemctl == nil {
		return fmt.Errorf("apply: no systemctl for root %s (only the real root has a default)", o.Root)
	}
	if p.NeedsRoot && o.Root == "/" && o.Geteuid() != 0 {
		return errors.New("apply: must run as root (use sudo): it writes system directories and runs systemctl")
	}
	for _, c := range p.Before {
		if err := o.Systemctl.Run(ctx, c.Args...); err != nil {
			return fmt.Errorf("%s: %w (no file was changed)", c, err)
		}
	}

	j := &journal{root: p.Root, euid: os.Geteuid()}
	undo := func(cause error) error {
		if rerr := j.rollback(); rerr != nil {
			return fmt.Errorf("%w; undoing it failed too, the system may be half changed: %w", cause, rerr)
		}
		return cause
	}
	for _, d := range p.Dirs {
		if err := j.mkdir(d); err != nil {
			return undo(fmt.Errorf("create %s: %w", d.Path, err))
		}
	}
	for _, f := range p.Files {
		if err := j.write(f); err != nil {
			return undo(fmt.Errorf("write %s: %w", f.Path, err))
		}
	}
	for _, r := range p.Removals {
		if err := j.moveAside(r); err != nil {
			err = fmt.Errorf("remove %s: %w", r.Path, err)
			if len(p.Before) > 0 {
				err = fmt.Errorf("%w (the services are stopped and disabled: systemctl enable --now %s %s brings them back)", err, HelperUnit, DaemonUnit)
			}
			return undo(err)
		}
	}
	if len(p.Removals) > 0 {
		// Removing is what was asked: past this point nothing is put back.
		if err := j.commit(); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	for i, c := range p.Commands {
		if err := o.Systemctl.Run(ctx, c.Args...); err != nil {
			err = fmt.Errorf("%s: %w", c, err)
			if p.Kind != KindInstall {
				return err
			}
			return undoInstall(ctx, o.Systemctl, j, i, err)
		}
	}
	_ = j.commit() // only backups of replaced files are left to delete: best effort
	return nil
}

// undoInstall reverts an install whose step-th command failed: fresh units
// are disabled and stopped, files restored, systemd reloaded, and a
// re-install's previous services restarted.
func undoInstall(ctx context.Context, sc Systemctl, j *journal, step int, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	fresh := !j.replaced(filepath.Join(UnitDir, HelperUnit)) && !j.replaced(filepath.Join(UnitDir, DaemonUnit))
	var errs []error
	if fresh && step >= 1 {
		if err := sc.Run(ctx, "disable", "--now", DaemonUnit, HelperUnit); err != nil {
			errs = append(errs, fmt.Errorf("systemctl disable --now: %w", err))
		}
	}
	if err := j.rollback(); err != nil {
		errs = append(errs, err)
	}
	if err := sc.Run(ctx, "daemon-reload"); err != nil {
		errs = append(errs, fmt.Errorf("systemctl daemon-reload: %w", err))
	}
	if !fresh && step >= 2 {
		if err := sc.Run(ctx, "restart", HelperUnit, DaemonUnit); err != nil {
			errs = append(errs, fmt.Errorf("restart the previous services: %w", err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w; undoing it failed too, the system may be half changed: %w", cause, errors.Join(errs...))
	}
	return fmt.Errorf("%w (the install was undone)", cause)
}

// journal records what Apply changed, to undo it (rollback) or make it
// final (commit).
type journal struct {
	root    string
	euid    int
	dirs    []string  // created, in order (full paths)
	written []written // files put in place, in order
	moved   []moved   // removals moved aside, in order
}

type written struct {
	path   string // target path on the target system
	full   string // under root
	backup string // the previous file, hard-linked aside; "" when there was none
}

type moved struct{ full, aside string }

// replaced says whether the file at path (on the target system) was
// replaced, rather than created, by this Apply.
func (j *journal) replaced(path string) bool {
	for _, w := range j.written {
		if w.path == path {
			return w.backup != ""
		}
	}
	return true // not written: it was there already, unchanged
}

// mkdir creates d (which was missing when planned) unless it now exists.
func (j *journal) mkdir(d PlannedDir) error {
	full := under(j.root, d.Path)
	if fi, err := os.Stat(full); err == nil {
		if !fi.IsDir() {
			return errors.New("not a directory")
		}
		return nil
	}
	if err := os.Mkdir(full, 0o700); err != nil {
		return err
	}
	j.dirs = append(j.dirs, full)
	if err := os.Chmod(full, d.Mode.Perm()); err != nil {
		return err
	}
	if d.UID >= 0 {
		if err := os.Lchown(full, d.UID, d.GID); err != nil {
			return err
		}
	}
	return nil
}

// write puts f in place atomically, keeping the file it replaces aside
// until commit; a file already as planned is left alone.
func (j *journal) write(f PlannedFile) error {
	full := under(j.root, f.Path)
	dir, base := filepath.Split(full)
	if same, err := j.upToDate(full, f); err != nil {
		return err
	} else if same {
		return nil
	}
	tmp, err := os.CreateTemp(dir, "."+base+".banger-new-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := fill(tmp, f); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	w := written{path: f.Path, full: full}
	if fi, err := os.Lstat(full); err == nil {
		if fi.IsDir() {
			return errors.New("a directory is in the way")
		}
		if w.backup, err = asideName(dir, "."+base+".banger-old-*"); err != nil {
			return err
		}
		if err := os.Link(full, w.backup); err != nil {
			return fmt.Errorf("keep the previous file: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp.Name(), full); err != nil {
		if w.backup != "" {
			os.Remove(w.backup)
		}
		return err
	}
	j.written = append(j.written, w)
	return fsutil.SyncDir(dir)
}

// fill writes f's content (or its source's) to tmp, with f's mode, and
// syncs it.
func fill(tmp *os.File, f PlannedFile) error {
	if f.Source != "" {
		src, err := os.Open(f.Source)
		if err != nil {
			return err
		}
		defer src.Close()
		if _, err := io.Copy(tmp, src); err != nil {
			return fmt.Errorf("copy %s: %w", f.Source, err)
		}
	} else if _, err := tmp.Write(f.Content); err != nil {
		return err
	}
	if err := tmp.Chmod(f.Mode.Perm()); err != nil {
		return err
	}
	return tmp.Sync()
}

// upToDate says whether full already is f: a regular file with f's mode,
// owned by the installing user, with f's content.
func (j *journal) upToDate(full string, f PlannedFile) (bool, error) {
	fi, err := os.Lstat(full)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != f.Mode.Perm() {
		return false, nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != j.euid {
		return false, nil
	}
	want := f.Content
	if f.Source != "" {
		sfi, err := os.Stat(f.Source)
		if err != nil {
			return false, err
		}
		if sfi.Size() != fi.Size() {
			return false, nil
		}
		if want, err = os.ReadFile(f.Source); err != nil {
			return false, err
		}
	}
	have, err := os.ReadFile(full)
	if err != nil {
		return false, err
	}
	return bytes.Equal(have, want), nil
}

// moveAside renames a file or tree to be removed next to itself, so that
// rollback can put it back and commit can delete it.
func (j *journal) moveAside(r PlannedRemoval) error {
	full := under(j.root, r.Path)
	if _, err := os.Lstat(full); errors.Is(err, fs.ErrNotExist) {
		return nil // gone already
	}
	dir, base := filepath.Split(full)
	aside, err := asideName(dir, "."+base+".banger-removed-*")
	if err != nil {
		return err
	}
	if err := os.Rename(full, aside); err != nil {
		return err
	}
	j.moved = append(j.moved, moved{full: full, aside: aside})
	return fsutil.SyncDir(dir)
}

// rollback undoes everything recorded, newest first.
func (j *journal) rollback() error {
	var errs []error
	for i := len(j.moved) - 1; i >= 0; i-- {
		m := j.moved[i]
		if err := os.Rename(m.aside, m.full); err != nil {
			errs = append(errs, fmt.Errorf("put back %s: %w", m.full, err))
		}
	}
	for i := len(j.written) - 1; i >= 0; i-- {
		w := j.written[i]
		var err error
		if w.backup != "" {
			err = os.Rename(w.backup, w.full)
		} else {
			err = os.Remove(w.full)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", w.full, err))
		}
	}
	for i := len(j.dirs) - 1; i >= 0; i-- {
		if err := os.Remove(j.dirs[i]); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", j.dirs[i], err))
		}
	}
	*j = journal{root: j.root, euid: j.euid}
	return errors.Join(errs...)
}

// commit deletes the replaced files' backups and the removals moved aside.
func (j *journal) commit() error {
	var errs []error
	for _, w := range j.written {
		if w.backup != "" {
			if err := os.Remove(w.backup); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for _, m := range j.moved {
		if err := os.RemoveAll(m.aside); err != nil {
			errs = append(errs, fmt.Errorf("%s was moved to %s but could not be deleted: %w", m.full, m.aside, err))
		}
	}
	*j = journal{root: j.root, euid: j.euid}
	return errors.Join(errs...)
}

// asideName returns an unused name in dir matching pattern.
func asideName(dir, pattern string) (string, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return "", err
	}
	return name, nil
}
