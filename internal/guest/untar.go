package guest

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"banger/internal/agent"
	"banger/internal/gitpack"
	"banger/internal/untar"
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
// when clean) with the shared confined extractor (internal/untar): no
// entry may escape dir (absolute names, "..", links leading out), and no
// entry is written below a symlink of the archive, so a link can never
// redirect a later write. Regular files, directories, symlinks and hard
// links inside dir are extracted with their modes (setuid, setgid and
// sticky included); other entry types are skipped. It returns the number
// of entries extracted.
func Untar(r io.Reader, dir string, clean bool) (int, error) {
	if clean {
		if err := emptyDir(dir); err != nil {
			return 0, err
		}
	}
	st, err := untar.Extract(context.Background(), r, dir, untar.Options{SpecialBits: true, ReplaceDirs: true})
	return st.Entries, err
}

// UntarWorkspace extracts a workspace stream (workspace.WriteTar) into
// dir, emptied first, as Untar does, and lays out the pack of HEAD's
// blobs from the files its blob plan names (wspack.go).
func UntarWorkspace(r io.Reader, dir string) (n int, err error) {
	if err := emptyDir(dir); err != nil {
		return 0, err
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
	seen := 0
	intercept := func(e untar.Entry, content io.Reader) (io.Reader, error) {
		seen++
		if wp != nil {
			if err := wp.endFile(); err != nil {
				return nil, err
			}
		}
		reg := e.Header.Typeflag == tar.TypeReg
		switch {
		case reg && e.Name == gitpack.PlanEntry:
			if wp != nil || seen > 1 {
				return nil, fmt.Errorf("workspace blob plan out of place")
			}
			var err error
			wp, err = startPack(dir, content, e.Header.Size)
			return nil, err
		case reg && e.Name == gitpack.IndexEntry:
			if wp == nil {
				return nil, fmt.Errorf("workspace pack index without a blob plan")
			}
			if err := wp.finish(content, e.Header.Size); err != nil {
				return nil, err // the deferred abort drops the pack
			}
			wp, done = nil, wp
			return nil, nil
		case reg && wp != nil && wp.wants(e.Name):
			return wp.addFile(content, e.Header.Size), nil
		}
		return content, nil
	}
	st, err := untar.Extract(context.Background(), r, dir, untar.Options{SpecialBits: true, ReplaceDirs: true, Intercept: intercept})
	return st.Entries, err
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
