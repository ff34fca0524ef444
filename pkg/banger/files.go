package banger

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// FileInfo describes a guest path.
type FileInfo struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// Type is "file", "dir", "symlink" or "other".
	Type string `json:"type"`
	Size int64  `json:"size"`
	// Mode is the permission bits in octal, e.g. "0644".
	Mode  string    `json:"mode"`
	MTime time.Time `json:"mtime"`
	// Target is a symbolic link's target.
	Target string `json:"target,omitempty"`
}

// Perm returns Mode as permission bits.
func (f FileInfo) Perm() fs.FileMode {
	m, _ := strconv.ParseUint(f.Mode, 8, 32)
	return fs.FileMode(m)
}

// FileList is a guest directory's entries.
type FileList struct {
	Path    string     `json:"path"`
	Entries []FileInfo `json:"entries"`
	// Truncated: the directory had more entries than the daemon returns.
	Truncated bool `json:"truncated"`
}

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
	return resp.Body, nil
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

// Remove removes a guest file, symbolic link or directory.
func (f *Files) Remove(ctx context.Context, path string) error {
	resp, err := f.do(ctx, http.MethodDelete, "", pathQuery(path), nil, "")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Mkdir creates a guest directory (and its parents with parents).
func (f *Files) Mkdir(ctx context.Context, path string, mode fs.FileMode, parents bool) (*FileInfo, error) {
	in := struct {
		Path    string `json:"path"`
		Mode    string `json:"mode,omitempty"`
		Parents bool   `json:"parents,omitempty"`
	}{Path: path, Parents: parents}
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
