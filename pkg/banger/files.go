package banger

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"

	"banger/internal/api"
)

// FileInfo describes a guest path: Type is "file", "dir", "symlink" or
// "other"; Mode is the permission and set-id/sticky bits in octal
// ("0644"); Target is a symbolic link's target.
type FileInfo = api.FileInfo

// FileList is a guest directory's entries (at most 10000; Truncated
// says there were more).
type FileList = api.FileList

// FileEvent is one change a Watch reports: Op is "ready" (first, once
// the watch is armed), "create", "write", "remove", "rename", "chmod" or
// "overflow" (the guest dropped events).
type FileEvent = api.FileEvent

// ArchiveResult says what PutArchive extracted.
type ArchiveResult = api.ArchiveResult

// Files reaches a running VM's files. Paths are absolute guest paths,
// resolved in the guest by its agent.
type Files struct {
	c  *Client
	vm string
}

// Files returns the file operations of a VM.
func (c *Client) Files(vm string) *Files { return &Files{c: c, vm: vm} }

func (f *Files) do(ctx context.Context, method, suffix string, q url.Values, body io.Reader, ct string) (*http.Response, error) {
	req, err := f.c.newRequest(ctx, method, vmPath(f.vm, "/files"+suffix), q, body, ct)
	if err != nil {
		return nil, err
	}
	return f.c.send(req)
}

func pathQuery(path string) url.Values { return url.Values{"path": {path}} }

// Open streams a guest file; the caller closes the reader.
func (f *Files) Open(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := f.do(ctx, http.MethodGet, "", pathQuery(path), nil, "")
	if err != nil {
		return nil, err
	}
	return &trailerReader{resp: resp}, nil
}

// Read reads a whole guest file into memory (at most max bytes; a larger
// file is an error).
func (f *Files) Read(ctx context.Context, path string, max int64) ([]byte, error) {
	rc, err := f.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, max)
	}
	return b, nil
}

// WriteOptions tune Write.
type WriteOptions struct {
	// Mode is the file's permission bits (0 means 0644).
	Mode fs.FileMode
	// Parents creates missing parent directories.
	Parents bool
}

// Write writes r to a guest file atomically (the guest sees the old
// content or the new, never a part).
func (f *Files) Write(ctx context.Context, path string, r io.Reader, o WriteOptions) (*FileInfo, error) {
	q := pathQuery(path)
	if o.Mode != 0 {
		q.Set("mode", fmt.Sprintf("%04o", o.Mode.Perm()))
	}
	if o.Parents {
		q.Set("parents", "true")
	}
	resp, err := f.do(ctx, http.MethodPut, "", q, r, "application/octet-stream")
	if err != nil {
		return nil, err
	}
	return decodeInto[FileInfo](resp)
}

// Stat describes a guest path (a symbolic link itself, not its target).
func (f *Files) Stat(ctx context.Context, path string) (*FileInfo, error) {
	resp, err := f.do(ctx, http.MethodGet, "/stat", pathQuery(path), nil, "")
	if err != nil {
		return nil, err
	}
	return decodeInto[FileInfo](resp)
}

// List returns a guest directory's entries.
func (f *Files) List(ctx context.Context, path string) (*FileList, error) {
	resp, err := f.do(ctx, http.MethodGet, "/list", pathQuery(path), nil, "")
	if err != nil {
		return nil, err
	}
	return decodeInto[FileList](resp)
}

// Remove removes a guest file, symbolic link or empty directory.
func (f *Files) Remove(ctx context.Context, path string) error {
	return f.remove(ctx, path, false)
}

// RemoveAll removes a guest path and, for a directory, what it holds.
func (f *Files) RemoveAll(ctx context.Context, path string) error {
	return f.remove(ctx, path, true)
}

func (f *Files) remove(ctx context.Context, path string, recursive bool) error {
	q := pathQuery(path)
	if recursive {
		q.Set("recursive", "true")
	}
	resp, err := f.do(ctx, http.MethodDelete, "", q, nil, "")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Mkdir creates a guest directory (and its parents with parents); mode
// 0 means 0755.
func (f *Files) Mkdir(ctx context.Context, path string, mode fs.FileMode, parents bool) (*FileInfo, error) {
	in := api.MkdirParams{Path: path, Parents: parents}
	if mode != 0 {
		in.Mode = fmt.Sprintf("%04o", mode.Perm())
	}
	body, ct, err := jsonBody(in)
	if err != nil {
		return nil, err
	}
	resp, err := f.do(ctx, http.MethodPost, "/mkdir", nil, body, ct)
	if err != nil {
		return nil, err
	}
	return decodeInto[FileInfo](resp)
}

// maxJSONAnswer bounds a JSON answer read into memory.
const maxJSONAnswer = 64 << 20

func decodeInto[T any](resp *http.Response) (*T, error) {
	defer resp.Body.Close()
	var v T
	if err := jsonDecode(io.LimitReader(resp.Body, maxJSONAnswer), &v); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	return &v, nil
}

// GetArchive streams a guest file or directory as a tar archive (modes
// and symbolic links kept); the caller closes the reader. A failure the
// daemon reports after the first byte is returned by the reader's last
// Read.
func (f *Files) GetArchive(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := f.do(ctx, http.MethodGet, "/archive", pathQuery(path), nil, "")
	if err != nil {
		return nil, err
	}
	return &trailerReader{resp: resp}, nil
}

// PutArchive extracts a tar stream under the guest directory dir.
func (f *Files) PutArchive(ctx context.Context, dir string, tar io.Reader) (*ArchiveResult, error) {
	resp, err := f.do(ctx, http.MethodPut, "/archive", pathQuery(dir), tar, "application/x-tar")
	if err != nil {
		return nil, err
	}
	return decodeInto[ArchiveResult](resp)
}

// Watch reports changes under a guest directory to fn, from the "ready"
// event on, until ctx ends (then it returns nil), fn returns an error
// (returned), or the stream ends.
func (f *Files) Watch(ctx context.Context, path string, recursive bool, fn func(FileEvent) error) error {
	q := pathQuery(path)
	if recursive {
		q.Set("recursive", "true")
	}
	resp, err := f.do(ctx, http.MethodGet, "/watch", q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev FileEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bad watch event: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	return fmt.Errorf("watch %s: the daemon ended the stream", path)
}

// trailerReader reads a download and turns an error the daemon put in
// the X-Banger-Error trailer into the last Read's error.
type trailerReader struct {
	resp *http.Response
}

func (t *trailerReader) Read(p []byte) (int, error) {
	n, err := t.resp.Body.Read(p)
	if err == io.EOF {
		if v := t.resp.Trailer.Get(api.ErrorTrailer); v != "" {
			var ae Error
			if json.Unmarshal([]byte(v), &ae) == nil && ae.Code != "" {
				return n, &ae
			}
			return n, fmt.Errorf("download failed: %s", v)
		}
	}
	return n, err
}

func (t *trailerReader) Close() error { return t.resp.Body.Close() }
