package guest

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/gitpack"
)

// runUntar extracts the tar stream the host sends as stdin frames into
// req.Dir and answers with an exit frame: code 0, or 1 with the error. The
// stream is consumed to its end (the empty stdin frame) either way, so the
// host never blocks on a half-read stream.
func runUntar(req *agent.UntarRequest, conn io.ReadWriter) {
	fw := agent.NewFrameWriter(conn)
	fail := func(err error) {
		fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 1, Error: err.Error()})
	}
	if req == nil || req.Dir == "" || !filepath.IsAbs(req.Dir) {
		drainStdin(conn)
		fail(errors.New("untar: an absolute target directory is required"))
		return
	}
	pr, pw := io.Pipe()
	go func() {
		for {
			t, p, err := agent.ReadFrame(conn)
			if err != nil {
				pw.CloseWithError(fmt.Errorf("stream ended early: %w", err))
				return
			}
			if t != agent.FrameStdin {
				continue
			}
			if len(p) == 0 {
				pw.Close()
				return
			}
			if _, err := pw.Write(p); err != nil {
				// Extraction failed; keep draining to the end.
				continue
			}
		}
	}()
	var err error
	if req.Workspace {
		_, err = UntarWorkspace(pr, req.Dir)
	} else {
		_, err = Untar(pr, req.Dir, req.Clean)
	}
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		fail(err)
		return
	}
	fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 0, Workspace: req.Workspace})
}

func drainStdin(r io.Reader) {
	for {
		t, p, err := agent.ReadFrame(r)
		if err != nil || (t == agent.FrameStdin && len(p) == 0) {
			return
		}
	}
}

// Untar extracts a tar stream under dir (created if needed; emptied first
// when clean). Entries may not escape dir: absolute names and ".." are
// refused, and so is any entry below a symlink, so a link in the archive
// can never redirect a later write outside dir. It returns the number of
// entries. Plain syscalls keep it cheap per file (it runs under emulation).
func Untar(r io.Reader, dir string, clean bool) (int, error) {
	return extract(r, dir, clean, false)
}

// UntarWorkspace extracts a workspace stream (workspace.WriteTar) into
// dir, emptied first: as Untar, and it lays out the pack of HEAD's blobs
// from the files its blob plan names (wspack.go).
func UntarWorkspace(r io.Reader, dir string) (int, error) {
	return extract(r, dir, true, true)
}

func extract(r io.Reader, dir string, clean, workspace bool) (n int, err error) {
	if clean {
		if err := emptyDir(dir); err != nil {
			return 0, err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	links := map[string]bool{} // symlinks this archive created
	made := map[string]bool{}  // directories known to exist
	below := func(name string) bool {
		for d := filepath.Dir(name); d != "."; d = filepath.Dir(d) {
			if links[d] {
				return true
			}
		}
		return false
	}
	mkparents := func(name string) error {
		d := filepath.Dir(name)
		if d == "." || made[d] {
			return nil
		}
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
		for ; d != "."; d = filepath.Dir(d) {
			made[d] = true
		}
		return nil
	}
	var wp, done *wsPack
	defer func() {
		if done != nil {
			done.root.Close()
		}
		if wp != nil {
			wp.abort()
			if err == nil {
				err = fmt.Errorf("workspace stream ended without its pack index")
			}
		}
	}()
	tr := tar.NewReader(r)
	buf := make([]byte, 256<<10)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read tar: %w", err)
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return n, fmt.Errorf("tar entry %q escapes the target", h.Name)
		}
		if name == "." {
			continue
		}
		if workspace && h.Typeflag == tar.TypeReg && filepath.ToSlash(name) == gitpack.PlanEntry {
			if wp != nil || n > 0 {
				return n, fmt.Errorf("workspace blob plan out of place")
			}
			if wp, err = startPack(dir, tr, h.Size); err != nil {
				return n, err
			}
			made[".git"], made[".git/objects"], made[packDir] = true, true, true
			continue
		}
		if workspace && h.Typeflag == tar.TypeReg && filepath.ToSlash(name) == gitpack.IndexEntry {
			if wp == nil {
				return n, fmt.Errorf("workspace pack index without a blob plan")
			}
			if err := wp.finish(tr, h.Size); err != nil {
				return n, err // the deferred abort drops the pack
			}
			wp, done = nil, wp
			continue
		}
		if below(name) {
			return n, fmt.Errorf("tar entry %q lies below a symlink", h.Name)
		}
		if err := mkparents(name); err != nil {
			return n, fmt.Errorf("create parents of %s: %w", name, err)
		}
		target := filepath.Join(dir, name)
		mode := os.FileMode(h.Mode).Perm() | os.FileMode(h.Mode)&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, mode); err != nil && !errors.Is(err, os.ErrExist) {
				return n, fmt.Errorf("create %s: %w", name, err)
			}
			made[name] = true
			if mode&0o022 != 0 || mode&^0o777 != 0 {
				os.Chmod(target, mode)
			}
		case tar.TypeReg:
			if !clean {
				if fi, err := os.Lstat(target); err == nil && !fi.Mode().IsRegular() {
					os.RemoveAll(target)
				}
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|unix.O_NOFOLLOW, mode)
			if err != nil {
				return n, fmt.Errorf("create %s: %w", name, err)
			}
			if wp != nil && wp.wants(filepath.ToSlash(name)) {
				err = wp.add(f, tr, h.Size)
			} else {
				_, err = io.CopyBuffer(f, tr, buf)
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return n, fmt.Errorf("write %s: %w", name, err)
			}
			// The umask may have narrowed the mode given at creation.
			if mode&0o022 != 0 || mode&^0o777 != 0 {
				os.Chmod(target, mode)
			}
		case tar.TypeSymlink:
			os.RemoveAll(target)
			if err := os.Symlink(h.Linkname, target); err != nil {
				return n, fmt.Errorf("symlink %s: %w", name, err)
			}
			links[name] = true
		default:
			// Workspaces carry files, dirs and symlinks only.
			continue
		}
		n++
	}
}

// emptyDir removes everything inside dir, keeping dir itself.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}
