package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"banger/internal/api"
)

// Files in a running VM (the /vms/{name}/files routes). Paths are
// absolute guest paths.

func filesPath(vm, suffix, p string, extra url.Values) string {
	q := url.Values{}
	q.Set("path", p)
	for k, v := range extra {
		q[k] = v
	}
	return "/vms/" + url.PathEscape(vm) + "/files" + suffix + "?" + q.Encode()
}

func flag(name string, on bool) url.Values {
	if !on {
		return nil
	}
	return url.Values{name: {"1"}}
}

// FileStat describes a guest path (a symlink itself, not its target).
func (c *Client) FileStat(ctx context.Context, vm, p string) (api.FileInfo, error) {
	var fi api.FileInfo
	err := c.Do(ctx, "GET", filesPath(vm, "/stat", p, nil), nil, &fi)
	return fi, err
}

// FileList lists a guest directory.
func (c *Client) FileList(ctx context.Context, vm, p string) (api.FileList, error) {
	var l api.FileList
	err := c.Do(ctx, "GET", filesPath(vm, "/list", p, nil), nil, &l)
	return l, err
}

// FileRemove removes a guest path (a directory and its contents when
// recursive).
func (c *Client) FileRemove(ctx context.Context, vm, p string, recursive bool) error {
	return c.Do(ctx, "DELETE", filesPath(vm, "", p, flag("recursive", recursive)), nil, nil)
}

// FileMkdir creates a guest directory.
func (c *Client) FileMkdir(ctx context.Context, vm string, p api.MkdirParams) (api.FileInfo, error) {
	var fi api.FileInfo
	err := c.Do(ctx, "POST", "/vms/"+url.PathEscape(vm)+"/files/mkdir", p, &fi)
	return fi, err
}

// FileReader is a guest file being read.
type FileReader struct {
	io.ReadCloser
	// Mode is the file's mode (octal) and Size its length, -1 when the
	// guest did not know it in advance.
	Mode string
	Size int64
	resp *http.Response
}

// Read fails when the daemon reports a failure after the content began.
func (f *FileReader) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if err == io.EOF {
		if terr := trailerError(f.resp); terr != nil {
			return n, terr
		}
	}
	return n, err
}

// FileRead opens a guest file for reading; the caller closes it.
func (c *Client) FileRead(ctx context.Context, vm, p string) (*FileReader, error) {
	resp, err := c.body(ctx, "GET", filesPath(vm, "", p, nil), "", nil)
	if err != nil {
		return nil, err
	}
	return &FileReader{ReadCloser: resp.Body, Mode: resp.Header.Get(api.HeaderFileMode), Size: resp.ContentLength, resp: resp}, nil
}

// FileWrite writes r to a guest file atomically; mode "" keeps the mode of
// the file it replaces (0644 for a new one), parents creates missing
// directories.
func (c *Client) FileWrite(ctx context.Context, vm, p string, r io.Reader, mode string, parents bool) (api.FileInfo, error) {
	q := flag("parents", parents)
	if mode != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("mode", mode)
	}
	resp, err := c.body(ctx, "PUT", filesPath(vm, "", p, q), "application/octet-stream", r)
	if err != nil {
		return api.FileInfo{}, err
	}
	defer resp.Body.Close()
	var fi api.FileInfo
	if err := json.NewDecoder(resp.Body).Decode(&fi); err != nil {
		return fi, fmt.Errorf("bad answer from daemon: %w", err)
	}
	return fi, nil
}

// ArchiveRead opens a tar stream of a guest path (entries named from its
// base name); the caller closes it. A failure after the stream began
// fails its last Read.
func (c *Client) ArchiveRead(ctx context.Context, vm, p string) (io.ReadCloser, error) {
	resp, err := c.body(ctx, "GET", filesPath(vm, "/archive", p, nil), "", nil)
	if err != nil {
		return nil, err
	}
	return &FileReader{ReadCloser: resp.Body, Size: -1, resp: resp}, nil
}

// ArchiveWrite extracts the tar stream r under the guest directory dir.
func (c *Client) ArchiveWrite(ctx context.Context, vm, dir string, r io.Reader) (api.ArchiveResult, error) {
	resp, err := c.body(ctx, "PUT", filesPath(vm, "/archive", dir, nil), "application/x-tar", r)
	if err != nil {
		return api.ArchiveResult{}, err
	}
	defer resp.Body.Close()
	var res api.ArchiveResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, fmt.Errorf("bad answer from daemon: %w", err)
	}
	return res, nil
}

// FileWatch watches a guest path (recursively: the directories below it
// too) and calls fn with every event, the first being api.FileOpReady once
// the watch is armed, until ctx ends (nil is returned then) or fn returns
// an error (returned).
func (c *Client) FileWatch(ctx context.Context, vm, p string, recursive bool, fn func(api.FileEvent) error) error {
	resp, err := c.body(ctx, "GET", filesPath(vm, "/watch", p, flag("recursive", recursive)), "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev api.FileEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bad event from daemon: %w", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	return fmt.Errorf("watch: the daemon ended the stream")
}

// body makes a call with a raw body (nil for none) and returns the
// successful answer, whose body the caller closes.
func (c *Client) body(ctx context.Context, method, path, contentType string, r io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), r)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if r != nil {
		req.Header.Set("Expect", "100-continue")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, c.Socket, unwrapNet(err))
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// trailerError is the error the daemon put in the error trailer, if any.
func trailerError(resp *http.Response) error {
	t := resp.Trailer.Get(api.ErrorTrailer)
	if t == "" {
		return nil
	}
	var ae api.Error
	if json.Unmarshal([]byte(t), &ae) == nil && ae.Code != "" {
		return &ae
	}
	return fmt.Errorf("transfer failed: %s", t)
}
