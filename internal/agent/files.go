package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"banger/internal/api"
)

// File operations. Paths are absolute guest paths, resolved by the agent.
//
//   - file_stat, file_remove, file_mkdir: one Response line (File set for
//     stat and mkdir).
//   - file_list: a Response line (File: the directory), then one ListLine
//     per entry, at most Limit of them, then a ListLine with End set.
//   - file_read, file_archive: a Response line (File: what is read), then
//     stdout frames (the content, or a tar stream of the path named by its
//     base name), then an exit frame (Error set when it failed midway).
//     A read of a regular file whose size is not 0 sends exactly that many
//     bytes.
//   - file_write, file_extract: a Response line once the guest is ready
//     (or refuses), then the host's stdin frames (the content, or a tar
//     stream), an empty one ending them, then a final Response line (File
//     for a write, Extracted for an extraction). A guest that fails midway
//     sends the final line at once and drains the rest.
//   - file_watch: a Response line once the watch is armed, then one
//     api.FileEvent line per event until the host closes the stream.
const (
	OpFileStat    = "file_stat"
	OpFileList    = "file_list"
	OpFileRead    = "file_read"
	OpFileWrite   = "file_write"
	OpFileRemove  = "file_remove"
	OpFileMkdir   = "file_mkdir"
	OpFileWatch   = "file_watch"
	OpFileArchive = "file_archive"
	OpFileExtract = "file_extract"
)

// FileRequest carries a file operation's parameters.
type FileRequest struct {
	Path      string `json:"path"`
	Mode      string `json:"mode,omitempty"`      // write, mkdir: octal
	Parents   bool   `json:"parents,omitempty"`   // write, mkdir
	Recursive bool   `json:"recursive,omitempty"` // remove, watch
	Limit     int    `json:"limit,omitempty"`     // list
}

// ListLine is one line of a listing after its Response line.
type ListLine struct {
	File      *api.FileInfo `json:"file,omitempty"`
	End       bool          `json:"end,omitempty"`
	Truncated bool          `json:"truncated,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// Limits of the file operations on the host side.
const (
	// MaxFileLine bounds a listing or watch line: a FileInfo with two
	// paths of at most PATH_MAX each, JSON-escaped.
	MaxFileLine = 64 << 10
	// FileIdle ends a transfer whose guest sends (or takes) nothing for
	// this long.
	FileIdle = 2 * time.Minute
	// fileFinish bounds the wait for a write's or extraction's last line
	// once everything is sent (fsync of a large file under emulation).
	fileFinish = 5 * time.Minute
	// maxGuestError bounds a guest's error text.
	maxGuestError = 2048
	// chunk is the size of the stdin frames the host sends.
	chunk = 256 << 10
)

// SizeError is returned when a file or an archive from the guest is over
// the caller's size limit.
type SizeError struct {
	What string
	Size int64 // -1: not known in advance
	Max  int64
}

func (e *SizeError) Error() string {
	if e.Size >= 0 {
		return fmt.Sprintf("%s is %d bytes, over the limit of %d", e.What, e.Size, e.Max)
	}
	return fmt.Sprintf("%s is over the limit of %d bytes", e.What, e.Max)
}

// fileError turns a guest's refusal into a coded error. Only the codes a
// file operation may give are kept; the text is the guest's, escaped.
func fileError(resp Response) error {
	code := api.CodeOperationFailed
	switch resp.Code {
	case api.CodeNotFound, api.CodeBadRequest, api.CodeConflict:
		code = resp.Code
	}
	return &api.Error{Code: code, Message: GuestText(resp.Error)}
}

// GuestText makes guest-written text fit for an error message: bounded,
// control characters and invalid UTF-8 shown as \xNN.
func GuestText(s string) string {
	if len(s) > maxGuestError {
		s = s[:maxGuestError] + "..."
	}
	var sb strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size <= 1) || unicode.IsControl(r) {
			for _, c := range []byte(s[i : i+max(size, 1)]) {
				fmt.Fprintf(&sb, `\x%02x`, c)
			}
		} else {
			sb.WriteString(s[i : i+size])
		}
		i += max(size, 1)
	}
	return sb.String()
}

// CheckFileInfo refuses a FileInfo a guest could not honestly send.
func CheckFileInfo(fi *api.FileInfo) error {
	if fi == nil {
		return errors.New("no file information")
	}
	switch fi.Type {
	case api.FileTypeFile, api.FileTypeDir, api.FileTypeSymlink, api.FileTypeOther:
	default:
		return fmt.Errorf("unknown file type %q", GuestText(fi.Type))
	}
	if _, err := api.ParseMode(fi.Mode, 0); err != nil || fi.Mode == "" {
		return fmt.Errorf("bad mode %q", GuestText(fi.Mode))
	}
	if fi.Size < 0 {
		return fmt.Errorf("negative size %d", fi.Size)
	}
	if _, err := api.CheckGuestPath(fi.Path); err != nil {
		return fmt.Errorf("bad path: %v", err)
	}
	if strings.ContainsAny(fi.Name, "/\x00") || len(fi.Name) > 255 {
		return fmt.Errorf("bad name %q", GuestText(fi.Name))
	}
	if len(fi.Target) > api.MaxGuestPath || strings.IndexByte(fi.Target, 0) >= 0 {
		return errors.New("bad symlink target")
	}
	return nil
}

// fileCall opens op on p and reads its first Response line within the
// operation's deadline, leaving the stream positioned after it.
func (c *Client) fileCall(ctx context.Context, op string, req FileRequest) (net.Conn, Response, error) {
	p, err := api.CheckGuestPath(req.Path)
	if err != nil {
		return nil, Response{}, &api.Error{Code: api.CodeBadRequest, Message: err.Error()}
	}
	req.Path = p
	lctx, cancel := WithOpDeadline(ctx, op)
	defer cancel()
	st, err := c.Open(lctx, Request{Op: op, File: &req})
	if err != nil {
		return nil, Response{}, err
	}
	stop := context.AfterFunc(lctx, func() { st.SetReadDeadline(time.Unix(1, 0)) })
	resp, err := readResponse(st, op)
	if !stop() || err != nil {
		st.Close()
		if lctx.Err() != nil {
			return nil, Response{}, fmt.Errorf("agent %s: %w", op, lctx.Err())
		}
		return nil, Response{}, err
	}
	st.SetReadDeadline(time.Time{})
	if !resp.OK {
		st.Close()
		return nil, resp, fileError(resp)
	}
	return st, resp, nil
}

func readResponse(st io.Reader, op string) (Response, error) {
	line, err := ReadLine(st, MaxResponseLine)
	if err != nil {
		return Response{}, fmt.Errorf("agent %s: read response: %w", op, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("agent %s: bad response: %w", op, err)
	}
	return resp, nil
}

// FileStat describes p (not following a final symlink).
func (c *Client) FileStat(ctx context.Context, p string) (api.FileInfo, error) {
	st, resp, err := c.fileCall(ctx, OpFileStat, FileRequest{Path: p})
	if err != nil {
		return api.FileInfo{}, err
	}
	st.Close()
	if err := CheckFileInfo(resp.File); err != nil {
		return api.FileInfo{}, fmt.Errorf("agent %s: %w", OpFileStat, err)
	}
	return *resp.File, nil
}

// FileRemove removes p (a directory with its contents when recursive).
func (c *Client) FileRemove(ctx context.Context, p string, recursive bool) error {
	st, _, err := c.fileCall(ctx, OpFileRemove, FileRequest{Path: p, Recursive: recursive})
	if err != nil {
		return err
	}
	st.Close()
	return nil
}

// FileMkdir creates the directory p with mode (octal; default 0755).
func (c *Client) FileMkdir(ctx context.Context, p, mode string, parents bool) (api.FileInfo, error) {
	if _, err := api.ParseMode(mode, 0o755); err != nil {
		return api.FileInfo{}, &api.Error{Code: api.CodeBadRequest, Message: err.Error()}
	}
	st, resp, err := c.fileCall(ctx, OpFileMkdir, FileRequest{Path: p, Mode: mode, Parents: parents})
	if err != nil {
		return api.FileInfo{}, err
	}
	st.Close()
	if err := CheckFileInfo(resp.File); err != nil {
		return api.FileInfo{}, fmt.Errorf("agent %s: %w", OpFileMkdir, err)
	}
	return *resp.File, nil
}

// FileList lists the directory p: at most limit entries (at most
// api.MaxListEntries), Truncated when there are more.
func (c *Client) FileList(ctx context.Context, p string, limit int) (api.FileList, error) {
	if limit <= 0 || limit > api.MaxListEntries {
		limit = api.MaxListEntries
	}
	// The whole listing shares the operation's deadline.
	ctx, cancel := WithOpDeadline(ctx, OpFileList)
	defer cancel()
	st, resp, err := c.fileCall(ctx, OpFileList, FileRequest{Path: p, Limit: limit})
	if err != nil {
		return api.FileList{}, err
	}
	defer st.Close()
	if err := CheckFileInfo(resp.File); err != nil {
		return api.FileList{}, fmt.Errorf("agent %s: %w", OpFileList, err)
	}
	stop := context.AfterFunc(ctx, func() { st.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	out := api.FileList{Path: resp.File.Path, Entries: []api.FileInfo{}}
	for {
		line, err := ReadLine(st, MaxFileLine)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return api.FileList{}, fmt.Errorf("agent %s: read listing: %w", OpFileList, err)
		}
		var l ListLine
		if err := json.Unmarshal(line, &l); err != nil {
			return api.FileList{}, fmt.Errorf("agent %s: bad listing line: %w", OpFileList, err)
		}
		switch {
		case l.Error != "":
			return api.FileList{}, fmt.Errorf("list %s: %s", out.Path, GuestText(l.Error))
		case l.End:
			out.Truncated = l.Truncated
			return out, nil
		}
		if len(out.Entries) >= limit {
			return api.FileList{}, fmt.Errorf("agent %s: guest sent more than the %d entries asked for", OpFileList, limit)
		}
		if err := CheckFileInfo(l.File); err != nil {
			return api.FileList{}, fmt.Errorf("agent %s: %w", OpFileList, err)
		}
		if path.Dir(l.File.Path) != out.Path || l.File.Name != path.Base(l.File.Path) {
			return api.FileList{}, fmt.Errorf("agent %s: entry %q is not in %s", OpFileList, GuestText(l.File.Path), out.Path)
		}
		out.Entries = append(out.Entries, *l.File)
	}
}

// FileRead opens the regular file p for reading. The reader yields the
// file's content and fails when the guest sends more than the file's
// size (or than maxBytes), stops short, stays silent for FileIdle, or
// reports an error; closing it ends the transfer.
func (c *Client) FileRead(ctx context.Context, p string, maxBytes int64) (api.FileInfo, io.ReadCloser, error) {
	st, resp, err := c.fileCall(ctx, OpFileRead, FileRequest{Path: p})
	if err != nil {
		return api.FileInfo{}, nil, err
	}
	if err := CheckFileInfo(resp.File); err != nil {
		st.Close()
		return api.FileInfo{}, nil, fmt.Errorf("agent %s: %w", OpFileRead, err)
	}
	fi := *resp.File
	if fi.Type != api.FileTypeFile {
		st.Close()
		return api.FileInfo{}, nil, &api.Error{Code: api.CodeBadRequest, Message: fmt.Sprintf("%s is a %s, not a regular file", fi.Path, fi.Type)}
	}
	if fi.Size > maxBytes {
		st.Close()
		return api.FileInfo{}, nil, &SizeError{What: fi.Path, Size: fi.Size, Max: maxBytes}
	}
	r := &dataReader{st: st, idle: c.fileIdle(), max: maxBytes, exact: -1, what: fi.Path}
	if fi.Size > 0 {
		r.max, r.exact = fi.Size, fi.Size
	}
	return fi, r, nil
}

// FileArchive opens a tar stream of p (a file, a directory with
// everything below it, or a symlink), its entries named from p's base
// name. The reader fails past maxBytes, on silence and on guest errors.
func (c *Client) FileArchive(ctx context.Context, p string, maxBytes int64) (api.FileInfo, io.ReadCloser, error) {
	st, resp, err := c.fileCall(ctx, OpFileArchive, FileRequest{Path: p})
	if err != nil {
		return api.FileInfo{}, nil, err
	}
	if err := CheckFileInfo(resp.File); err != nil {
		st.Close()
		return api.FileInfo{}, nil, fmt.Errorf("agent %s: %w", OpFileArchive, err)
	}
	return *resp.File, &dataReader{st: st, idle: c.fileIdle(), max: maxBytes, exact: -1, what: "archive of " + resp.File.Path}, nil
}

func (c *Client) fileIdle() time.Duration {
	if c.idle > 0 {
		return c.idle
	}
	return FileIdle
}

// dataReader reads the stdout frames of a read or archive stream up to
// its exit frame.
type dataReader struct {
	st    net.Conn
	idle  time.Duration
	max   int64 // most bytes accepted
	exact int64 // bytes the guest must send, -1 when unknown
	what  string
	n     int64
	buf   []byte
	err   error
}

func (r *dataReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *dataReader) next() error {
	t, p, err := ReadFrame(IdleReader(r.st, r.idle))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read %s: %w", r.what, err)
	}
	switch t {
	case FrameStdout:
		if r.n+int64(len(p)) > r.max {
			if r.exact >= 0 {
				return fmt.Errorf("read %s: the guest sent more than the file's %d bytes", r.what, r.exact)
			}
			return &SizeError{What: r.what, Size: -1, Max: r.max}
		}
		r.n += int64(len(p))
		r.buf = p
		return nil
	case FrameExit:
		var es ExitStatus
		if err := json.Unmarshal(p, &es); err != nil {
			return fmt.Errorf("read %s: bad exit frame: %w", r.what, err)
		}
		if es.Error != "" || es.Code != 0 {
			return fmt.Errorf("read %s: %s", r.what, GuestText(es.Error))
		}
		if r.exact >= 0 && r.n != r.exact {
			return fmt.Errorf("read %s: the guest sent %d of the file's %d bytes", r.what, r.n, r.exact)
		}
		return io.EOF
	default:
		return fmt.Errorf("read %s: unexpected frame %q", r.what, t)
	}
}

func (r *dataReader) Close() error { return r.st.Close() }

// FileWrite writes what r yields to p atomically (a temporary file in the
// same directory, synced and renamed over p), with mode (octal; default
// 0644, or the mode of the file it replaces), creating missing parent
// directories when parents is set. The caller bounds r.
func (c *Client) FileWrite(ctx context.Context, p, mode string, parents bool, r io.Reader) (api.FileInfo, error) {
	if _, err := api.ParseMode(mode, 0o644); err != nil {
		return api.FileInfo{}, &api.Error{Code: api.CodeBadRequest, Message: err.Error()}
	}
	resp, err := c.upload(ctx, OpFileWrite, FileRequest{Path: p, Mode: mode, Parents: parents}, r)
	if err != nil {
		return api.FileInfo{}, err
	}
	if err := CheckFileInfo(resp.File); err != nil {
		return api.FileInfo{}, fmt.Errorf("agent %s: %w", OpFileWrite, err)
	}
	return *resp.File, nil
}

// FileExtract extracts the tar stream r yields under the directory dir,
// confined to it. The caller bounds r.
func (c *Client) FileExtract(ctx context.Context, dir string, r io.Reader) (api.ArchiveResult, error) {
	resp, err := c.upload(ctx, OpFileExtract, FileRequest{Path: dir}, r)
	if err != nil {
		return api.ArchiveResult{}, err
	}
	if resp.Extracted == nil || resp.Extracted.Files < 0 || resp.Extracted.Bytes < 0 {
		return api.ArchiveResult{}, fmt.Errorf("agent %s: no valid result", OpFileExtract)
	}
	return *resp.Extracted, nil
}

// upload runs a write or an extraction: the ready line, r as stdin
// frames, then the final line, which may come early with an error.
func (c *Client) upload(ctx context.Context, op string, req FileRequest, r io.Reader) (Response, error) {
	st, _, err := c.fileCall(ctx, op, req)
	if err != nil {
		return Response{}, err
	}
	defer st.Close()
	idle := c.fileIdle()
	type result struct {
		resp Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := readResponse(st, op)
		done <- result{resp, err}
	}()
	stop := context.AfterFunc(ctx, func() {
		st.SetReadDeadline(time.Unix(1, 0))
		st.SetWriteDeadline(time.Unix(1, 0))
	})
	defer stop()
	sendErr := make(chan error, 1)
	go func() {
		sendErr <- sendFrames(st, r, idle)
	}()
	var serr error
	select {
	case res := <-done:
		if res.err == nil && res.resp.OK {
			// An answer racing the end of the upload: it counts once
			// everything was sent.
			if serr = <-sendErr; serr == nil {
				return res.resp, nil
			}
			return Response{}, fmt.Errorf("agent %s: the guest answered before the upload ended: %w", op, serr)
		}
		// The guest failed midway and said so: stop sending. The sender
		// ends at its next write (the caller's reader is not read after
		// upload returns).
		st.Close()
		<-sendErr
		if res.err != nil {
			return Response{}, res.err
		}
		return Response{}, fileError(res.resp)
	case serr = <-sendErr:
	}
	if serr != nil {
		st.Close()
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("agent %s: %w", op, ctx.Err())
		}
		return Response{}, serr
	}
	t := time.AfterFunc(fileFinish, func() { st.SetReadDeadline(time.Unix(1, 0)) })
	defer t.Stop()
	res := <-done
	if res.err != nil {
		if ctx.Err() != nil {
			return Response{}, fmt.Errorf("agent %s: %w", op, ctx.Err())
		}
		return Response{}, res.err
	}
	if !res.resp.OK {
		return Response{}, fileError(res.resp)
	}
	return res.resp, nil
}

// sendFrames sends what r yields as stdin frames, then the empty one. A
// guest that takes nothing for idle fails it.
func sendFrames(st net.Conn, r io.Reader, idle time.Duration) error {
	fw := NewFrameWriter(st)
	buf := make([]byte, chunk)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			st.SetWriteDeadline(time.Now().Add(idle))
			if werr := fw.Write(FrameStdin, buf[:n]); werr != nil {
				return fmt.Errorf("send to the guest: %w", werr)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			st.SetWriteDeadline(time.Now().Add(idle))
			if werr := fw.Write(FrameStdin, nil); werr != nil {
				return fmt.Errorf("send to the guest: %w", werr)
			}
			st.SetWriteDeadline(time.Time{})
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Watch is a running watch of guest files.
type Watch struct {
	st   net.Conn
	stop func() bool
}

// FileWatch arms a watch on p (and, when recursive, every directory below
// it) and returns once the guest says it is armed. Events come from Next
// until Close or ctx ends.
func (c *Client) FileWatch(ctx context.Context, p string, recursive bool) (*Watch, error) {
	st, _, err := c.fileCall(ctx, OpFileWatch, FileRequest{Path: p, Recursive: recursive})
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.Close() })
	return &Watch{st: st, stop: stop}, nil
}

// Next returns the next event.
func (w *Watch) Next() (api.FileEvent, error) {
	line, err := ReadLine(w.st, MaxFileLine)
	if err != nil {
		return api.FileEvent{}, fmt.Errorf("watch: %w", err)
	}
	var ev api.FileEvent
	if err := json.Unmarshal(line, &ev); err != nil {
		return api.FileEvent{}, fmt.Errorf("watch: bad event: %w", err)
	}
	switch ev.Op {
	case api.FileOpCreate, api.FileOpWrite, api.FileOpRemove, api.FileOpRename, api.FileOpChmod, api.FileOpOverflow:
	default:
		return api.FileEvent{}, fmt.Errorf("watch: unknown event %q", GuestText(ev.Op))
	}
	if _, err := api.CheckGuestPath(ev.Path); err != nil {
		return api.FileEvent{}, fmt.Errorf("watch: bad event path: %v", err)
	}
	return ev, nil
}

// Close ends the watch.
func (w *Watch) Close() error {
	w.stop()
	return w.st.Close()
}
