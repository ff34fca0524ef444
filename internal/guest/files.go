package guest

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/fsutil"
	"banger/internal/untar"
)

// The file operations of the agent (protocol in internal/agent/files.go).

// fileBuf is the size of the content chunks sent to the host.
const fileBuf = 256 << 10

// handleFile serves one file operation on conn.
func (s *Server) handleFile(ctx context.Context, req agent.Request, conn net.Conn) {
	if req.File == nil {
		reply(conn, agent.Response{Error: "file operation without parameters", Code: api.CodeBadRequest})
		return
	}
	fr := *req.File
	p, err := api.CheckGuestPath(fr.Path)
	if err != nil {
		reply(conn, agent.Response{Error: err.Error(), Code: api.CodeBadRequest})
		return
	}
	fr.Path = p
	switch req.Op {
	case agent.OpFileStat:
		fi, err := statFile(p)
		answer(conn, fi, err)
	case agent.OpFileRemove:
		answer(conn, nil, removeFile(p, fr.Recursive))
	case agent.OpFileMkdir:
		fi, err := mkdirFile(p, fr.Mode, fr.Parents)
		answer(conn, fi, err)
	case agent.OpFileList:
		listDir(conn, p, fr.Limit)
	case agent.OpFileRead:
		readFile(conn, p)
	case agent.OpFileArchive:
		archiveFile(conn, p)
	case agent.OpFileWrite:
		writeFile(conn, fr)
	case agent.OpFileExtract:
		extractArchive(ctx, conn, p)
	case agent.OpFileWatch:
		watchFiles(ctx, s.Log, conn, p, fr.Recursive)
	}
}

// answer replies with fi or err.
func answer(w io.Writer, fi *api.FileInfo, err error) {
	if err != nil {
		reply(w, errResponse(err))
		return
	}
	reply(w, agent.Response{OK: true, File: fi})
}

// errResponse classifies err for the host.
func errResponse(err error) agent.Response {
	code := ""
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		code = ae.Code
	case errors.Is(err, fs.ErrNotExist):
		code = api.CodeNotFound
	case errors.Is(err, syscall.ENOTEMPTY), errors.Is(err, fs.ErrExist):
		code = api.CodeConflict
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.EINVAL), errors.Is(err, syscall.ELOOP):
		code = api.CodeBadRequest
	}
	return agent.Response{Error: err.Error(), Code: code}
}

func badRequest(format string, args ...any) error {
	return api.Errorf(api.CodeBadRequest, format, args...)
}

// fileInfo describes the file at p from its lstat (or fstat) result.
func fileInfo(p string, fi fs.FileInfo) *api.FileInfo {
	out := &api.FileInfo{
		Name:  path.Base(p),
		Path:  p,
		Size:  fi.Size(),
		Mode:  api.FormatMode(fi.Mode()),
		MTime: fi.ModTime().UTC(),
	}
	switch {
	case fi.Mode().IsRegular():
		out.Type = api.FileTypeFile
	case fi.IsDir():
		out.Type = api.FileTypeDir
	case fi.Mode()&fs.ModeSymlink != 0:
		out.Type = api.FileTypeSymlink
		out.Target, _ = os.Readlink(p)
	default:
		out.Type = api.FileTypeOther
	}
	return out
}

func statFile(p string) (*api.FileInfo, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, err
	}
	return fileInfo(p, fi), nil
}

func removeFile(p string, recursive bool) error {
	if p == "/" {
		return badRequest("refusing to remove /")
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() && recursive {
		return os.RemoveAll(p)
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return api.Errorf(api.CodeConflict, "remove %s: directory not empty (remove it recursively)", p)
		}
		return err
	}
	return nil
}

func mkdirFile(p, modeText string, parents bool) (*api.FileInfo, error) {
	mode, err := api.ParseMode(modeText, 0o755)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if parents {
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			return fileInfo(p, fi), nil
		}
		if err := os.MkdirAll(path.Dir(p), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.Mkdir(p, mode); err != nil {
		return nil, err
	}
	// The umask may have narrowed the mode.
	if err := os.Chmod(p, mode); err != nil {
		return nil, err
	}
	return statFile(p)
}

// listDir answers a listing: at most limit entries, sorted by name among
// those read.
func listDir(conn io.Writer, p string, limit int) {
	if limit <= 0 || limit > api.MaxListEntries {
		limit = api.MaxListEntries
	}
	fi, err := os.Lstat(p)
	if err == nil && !fi.IsDir() {
		// A symlink to a directory is listed as the directory.
		if fi, err = os.Stat(p); err == nil && !fi.IsDir() {
			err = badRequest("%s is not a directory", p)
		}
	}
	if err != nil {
		reply(conn, errResponse(err))
		return
	}
	f, err := os.Open(p)
	if err != nil {
		reply(conn, errResponse(err))
		return
	}
	defer f.Close()
	reply(conn, agent.Response{OK: true, File: fileInfo(p, fi)})
	enc := json.NewEncoder(conn)
	var ents []fs.DirEntry
	truncated := false
	for {
		batch, err := f.ReadDir(256)
		ents = append(ents, batch...)
		if len(ents) > limit {
			ents, truncated = ents[:limit], true
			break
		}
		if err == io.EOF || (err == nil && len(batch) == 0) {
			break
		}
		if err != nil {
			enc.Encode(agent.ListLine{Error: err.Error()})
			return
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, e := range ents {
		ep := path.Join(p, e.Name())
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if enc.Encode(agent.ListLine{File: fileInfo(ep, info)}) != nil {
			return
		}
	}
	enc.Encode(agent.ListLine{End: true, Truncated: truncated})
}

// readFile sends a regular file's content.
func readFile(conn io.Writer, p string) {
	f, err := os.Open(p)
	if err != nil {
		reply(conn, errResponse(err))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		reply(conn, errResponse(err))
		return
	}
	if !st.Mode().IsRegular() {
		what := "not a regular file"
		if st.IsDir() {
			what = "a directory"
		}
		reply(conn, errResponse(badRequest("%s is %s", p, what)))
		return
	}
	fi := fileInfo(p, st)
	reply(conn, agent.Response{OK: true, File: fi})
	fw := agent.NewFrameWriter(conn)
	w := fw.StreamWriter(agent.FrameStdout)
	buf := make([]byte, fileBuf)
	if fi.Size > 0 {
		// Exactly the size announced: a file that grows meanwhile is
		// cut there, one that shrinks is an error.
		_, err = io.CopyBuffer(w, io.LimitReader(f, fi.Size), buf)
		if err == nil {
			var rest int64
			if rest, err = f.Seek(0, io.SeekCurrent); err == nil && rest < fi.Size {
				err = fmt.Errorf("%s shrank while it was read", p)
			}
		}
	} else {
		_, err = io.CopyBuffer(w, f, buf)
	}
	exit(fw, err)
}

func exit(fw *agent.FrameWriter, err error) {
	if err != nil {
		fw.WriteJSON(agent.FrameExit, agent.ExitStatus{Code: 1, Error: err.Error()})
		return
	}
	fw.WriteJSON(agent.FrameExit, agent.ExitStatus{})
}

// archiveFile sends a tar stream of p, named from its base name, without
// following symlinks.
func archiveFile(conn io.Writer, p string) {
	if p == "/" {
		reply(conn, errResponse(badRequest("refusing to archive /: name a directory below it")))
		return
	}
	fi, err := os.Lstat(p)
	if err != nil {
		reply(conn, errResponse(err))
		return
	}
	reply(conn, agent.Response{OK: true, File: fileInfo(p, fi)})
	fw := agent.NewFrameWriter(conn)
	tw := tar.NewWriter(fw.StreamWriter(agent.FrameStdout))
	base := path.Base(p)
	buf := make([]byte, fileBuf)
	err = filepath.WalkDir(p, func(fp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(p, fp)
		name := path.Join(base, filepath.ToSlash(rel))
		return writeEntry(tw, fp, name, buf)
	})
	if err == nil {
		err = tw.Close()
	}
	exit(fw, err)
}

// writeEntry writes one file as a tar entry; other types than files,
// directories and symlinks are skipped.
func writeEntry(tw *tar.Writer, fp, name string, buf []byte) error {
	fi, err := os.Lstat(fp)
	if err != nil {
		return err
	}
	var link string
	switch {
	case fi.Mode().IsRegular(), fi.IsDir():
	case fi.Mode()&fs.ModeSymlink != 0:
		if link, err = os.Readlink(fp); err != nil {
			return err
		}
	default:
		return nil
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	h.Name = name
	if fi.IsDir() {
		h.Name += "/"
	}
	h.Uname, h.Gname = "", ""
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.OpenFile(fp, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyBuffer(tw, io.LimitReader(f, h.Size), buf)
	if err == nil && n < h.Size {
		err = fmt.Errorf("%s shrank while it was archived", fp)
	}
	return err
}

// stdinReader reads the host's stdin frames as a stream, ending at the
// empty one. After a failure, drain consumes the rest.
type stdinReader struct {
	r    io.Reader
	buf  []byte
	done bool // the empty frame came, or the stream is gone
	gone bool // the stream ended before the empty frame
}

func (s *stdinReader) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.done {
			return 0, io.EOF
		}
		t, b, err := agent.ReadFrame(s.r)
		if err != nil {
			s.done, s.gone = true, true
			return 0, fmt.Errorf("stream ended early: %w", err)
		}
		if t != agent.FrameStdin {
			continue
		}
		if len(b) == 0 {
			s.done = true
			return 0, io.EOF
		}
		s.buf = b
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *stdinReader) drain() {
	s.buf = nil
	for !s.done {
		t, b, err := agent.ReadFrame(s.r)
		if err != nil {
			s.done, s.gone = true, true
		} else if t == agent.FrameStdin && len(b) == 0 {
			s.done = true
		}
	}
}

// writeFile writes the host's content to a temporary file next to the
// target, syncs it and renames it into place.
func writeFile(conn io.ReadWriter, fr agent.FileRequest) {
	p := fr.Path
	tmp, err := prepareWrite(fr)
	if err != nil {
		reply(conn, errResponse(err))
		return
	}
	reply(conn, agent.Response{OK: true})
	in := &stdinReader{r: conn}
	defer tmp.Abort() // a no-op once committed
	if _, err := io.CopyBuffer(tmp, in, make([]byte, fileBuf)); err != nil {
		if in.gone {
			return // the host went away: nobody to answer
		}
		reply(conn, errResponse(err))
		in.drain()
		return
	}
	if err := tmp.Commit(); err != nil {
		reply(conn, errResponse(err))
		return
	}
	fi, err := statFile(p)
	answer(conn, fi, err)
}

// prepareWrite checks the target and creates the temporary file with the
// final mode: the one asked, else the replaced file's, else 0644.
func prepareWrite(fr agent.FileRequest) (*fsutil.AtomicFile, error) {
	p := fr.Path
	if p == "/" {
		return nil, badRequest("/ is a directory")
	}
	mode, err := api.ParseMode(fr.Mode, 0o644)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	dir := path.Dir(p)
	if fr.Parents {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	if di, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("parent directory of %s: %w", p, err)
	} else if !di.IsDir() {
		return nil, badRequest("%s is not a directory", dir)
	}
	if fi, err := os.Lstat(p); err == nil {
		if fi.IsDir() {
			return nil, badRequest("%s is a directory", p)
		}
		if fr.Mode == "" && fi.Mode().IsRegular() {
			mode = fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		}
	}
	tmp, err := fsutil.CreateAtomic(p, mode)
	if err != nil {
		return nil, err
	}
	return tmp, nil
}

// extractArchive extracts the host's tar stream under the directory p,
// confined to it (untar).
func extractArchive(ctx context.Context, conn io.ReadWriter, p string) {
	if fi, err := os.Stat(p); err != nil {
		reply(conn, errResponse(err))
		return
	} else if !fi.IsDir() {
		reply(conn, errResponse(badRequest("%s is not a directory", p)))
		return
	}
	reply(conn, agent.Response{OK: true})
	in := &stdinReader{r: conn}
	st, err := untar.Extract(ctx, in, p, untar.Options{SpecialBits: true})
	if err != nil {
		if in.gone {
			return // the host went away
		}
		in.drain()
		if errors.Is(err, untar.ErrLimit) {
			err = badRequest("%v", err)
		}
		reply(conn, errResponse(fmt.Errorf("extract into %s: %w", p, err)))
		return
	}
	// Trailing bytes after the archive's end marker.
	in.drain()
	reply(conn, agent.Response{OK: true, Extracted: &api.ArchiveResult{Files: int64(st.Entries), Bytes: st.Bytes}})
}
