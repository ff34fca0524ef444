package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"banger/internal/agent"
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
	_, err := Untar(pr, req.Dir, req.Clean)
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		fail(err)
		return
	}
	fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 0})
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
