package guest

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"

	"banger/internal/gitpack"
)

// Bounds on a workspace stream's control entries.
const (
	maxBlobPlan  = 256 << 20
	maxBlobIndex = 1<<20 + 64<<20
)

// packDir is where a workspace's laid-out pack goes, under its root.
const packDir = ".git/objects/pack"

// wsPack lays out, as a workspace is extracted, the pack of HEAD's blobs
// that the work tree's files carry (see gitpack): the files named by the
// blob plan, in its order, are copied into a pack of stored blobs whose
// checksums and index the host computed. Everything is written through
// an os.Root at the workspace, so nothing in the stream (a symlink the
// archive made, say) can steer it outside.
type wsPack struct {
	root *os.Root
	f    *os.File
	bw   *bufio.Writer
	plan gitpack.Plan
	k    int // plan files written so far
	cur  *gitpack.ObjectWriter
	tmp  string
}

// startPack reads the blob plan and opens the pack the files go into.
func startPack(dir string, r io.Reader, size int64) (*wsPack, error) {
	if size > maxBlobPlan {
		return nil, fmt.Errorf("workspace blob plan of %d bytes is over its limit", size)
	}
	var plan gitpack.Plan
	if err := json.NewDecoder(io.LimitReader(r, size)).Decode(&plan); err != nil {
		return nil, fmt.Errorf("workspace blob plan: %w", err)
	}
	for i := range plan.Files {
		plan.Files[i].Path = path.Clean(plan.Files[i].Path)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	w := &wsPack{root: root, plan: plan, tmp: packDir + "/tmp_banger_blobs.pack"}
	if err := root.MkdirAll(packDir, 0o755); err != nil {
		root.Close()
		return nil, fmt.Errorf("create %s: %w", packDir, err)
	}
	if w.f, err = root.OpenFile(w.tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o444); err != nil {
		root.Close()
		return nil, fmt.Errorf("create the workspace pack: %w", err)
	}
	w.bw = bufio.NewWriterSize(w.f, 1<<20)
	w.bw.Write(gitpack.Header(uint32(len(plan.Files))))
	return w, nil
}

// wants says whether the file named name is the plan's next one.
func (w *wsPack) wants(name string) bool {
	return w.k < len(w.plan.Files) && w.plan.Files[w.k].Path == name
}

// addFile returns the reader a plan file's content is extracted from:
// it also feeds the pack; endFile completes the object.
func (w *wsPack) addFile(content io.Reader, size int64) io.Reader {
	w.cur = gitpack.NewObjectWriter(w.bw, size, w.plan.Files[w.k].Adler)
	w.k++
	return io.TeeReader(content, w.cur)
}

// endFile completes the object of the file extracted last, if any.
func (w *wsPack) endFile() error {
	if w.cur == nil {
		return nil
	}
	err := w.cur.Close()
	w.cur = nil
	if err != nil {
		return fmt.Errorf("workspace pack: %w", err)
	}
	return nil
}

// finish ends the pack with the checksum its index (read from r) names
// and puts both in place.
func (w *wsPack) finish(r io.Reader, size int64) error {
	if err := w.endFile(); err != nil {
		return err
	}
	if w.k != len(w.plan.Files) {
		return fmt.Errorf("workspace stream ended its blob plan at %q (file %d of %d)", w.plan.Files[w.k].Path, w.k+1, len(w.plan.Files))
	}
	if size > maxBlobIndex {
		return fmt.Errorf("workspace pack index of %d bytes is over its limit", size)
	}
	idx := make([]byte, size)
	if _, err := io.ReadFull(r, idx); err != nil {
		return fmt.Errorf("workspace pack index: %w", err)
	}
	sum, err := gitpack.PackSum(idx)
	if err != nil {
		return fmt.Errorf("workspace pack index: %w", err)
	}
	w.bw.Write(sum[:])
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("write the workspace pack: %w", err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("write the workspace pack: %w", err)
	}
	w.f = nil
	name := packDir + "/pack-" + hex.EncodeToString(sum[:])
	if err := w.root.Rename(w.tmp, name+".pack"); err != nil {
		return fmt.Errorf("place the workspace pack: %w", err)
	}
	f, err := w.root.OpenFile(name+".idx", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o444)
	if err != nil {
		return fmt.Errorf("place the workspace pack index: %w", err)
	}
	_, err = f.Write(idx)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("place the workspace pack index: %w", err)
	}
	return nil
}

// abort drops an unfinished pack.
func (w *wsPack) abort() {
	if w.f != nil {
		w.f.Close()
	}
	w.root.Remove(w.tmp)
	w.root.Close()
}
