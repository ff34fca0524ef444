// Package fetch downloads what banger takes from the network (catalogs,
// images, kernels, releases) in one verified way: a GET bound to a
// context, a size cap checked against the announced length and the
// bytes read, an optional expected SHA-256 and an atomic write into
// place (a temporary file in the target's directory, fsync, rename,
// fsync of the directory), so a target path never holds a partial or
// unverified download. http and https URLs are accepted, file URLs when
// asked. Errors read "fetch URL: ...".
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"banger/internal/fsutil"
)

// Doer sends HTTP requests; *http.Client is one.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// ErrMismatch is wrapped by File's error when the content does not
// have the expected SHA-256.
var ErrMismatch = errors.New("sha256 mismatch")

// ErrTooLarge is wrapped by the error of a body larger than its cap.
var ErrTooLarge = errors.New("too large")

// progressInterval is the least time between two Progress calls.
const progressInterval = 100 * time.Millisecond

// copyBufSize is the copy buffer of downloads.
const copyBufSize = 1 << 20

// Client fetches URLs. The zero value uses http.DefaultClient.
type Client struct {
	// HTTP sends http(s) requests; nil means http.DefaultClient.
	HTTP Doer
	// AllowFile accepts file:// URLs (local catalogs and their files);
	// otherwise only http and https are.
	AllowFile bool
	// Progress, if set, is called during File with the bytes received
	// so far and the expected total (-1 if unknown): at most about ten
	// times a second, and once more when the body is complete.
	Progress func(current, total int64)
}

// Want says what File must receive.
type Want struct {
	// SHA256 is the expected lowercase hex digest; "" checks none (the
	// digest is still returned).
	SHA256 string
	// Size, when > 0, is the exact expected length.
	Size int64
	// MaxSize, when > 0, caps the length.
	MaxSize int64
	// Mode is the written file's mode; 0 means 0644.
	Mode fs.FileMode
}

// Open starts reading rawURL and returns its body (the caller closes
// it), its length (-1 if unknown) and the URL it finally came from
// (after redirects). A non-2xx answer is an error. The request asks for
// no transparent compression: the bytes read are the bytes served.
func (c *Client) Open(ctx context.Context, rawURL string) (io.ReadCloser, int64, *url.URL, error) {
	body, n, u, err := c.open(ctx, rawURL)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	return body, n, u, nil
}

func (c *Client) open(ctx context.Context, rawURL string) (io.ReadCloser, int64, *url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, 0, nil, err
	}
	switch u.Scheme {
	case "file":
		if !c.AllowFile {
			break
		}
		p, err := FileURLPath(u)
		if err != nil {
			return nil, 0, nil, err
		}
		fh, err := os.Open(p)
		if err != nil {
			return nil, 0, nil, err
		}
		st, err := fh.Stat()
		if err != nil {
			fh.Close()
			return nil, 0, nil, err
		}
		if !st.Mode().IsRegular() {
			fh.Close()
			return nil, 0, nil, fmt.Errorf("%s is not a regular file", p)
		}
		return fh, st.Size(), u, nil
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, 0, nil, err
		}
		req.Header.Set("Accept-Encoding", "identity")
		hc := c.HTTP
		if hc == nil {
			hc = http.DefaultClient
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, 0, nil, err
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			resp.Body.Close()
			return nil, 0, nil, fmt.Errorf("server said %s", resp.Status)
		}
		final := u
		if resp.Request != nil && resp.Request.URL != nil {
			final = resp.Request.URL
		}
		return resp.Body, resp.ContentLength, final, nil
	}
	return nil, 0, nil, fmt.Errorf("unsupported URL scheme %q", u.Scheme)
}

// FileURLPath returns the local path of a file:// URL.
func FileURLPath(u *url.URL) (string, error) {
	if u.Host != "" && u.Host != "localhost" {
		return "", fmt.Errorf("file URL %q names a remote host", u.String())
	}
	if u.Path == "" || !filepath.IsAbs(u.Path) {
		return "", fmt.Errorf("file URL %q has no absolute path", u.String())
	}
	return filepath.Clean(u.Path), nil
}

// Bytes reads a small document of at most limit bytes and returns it
// with the URL it finally came from.
func (c *Client) Bytes(ctx context.Context, rawURL string, limit int64) ([]byte, *url.URL, error) {
	body, n, u, err := c.open(ctx, rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	defer body.Close()
	if n > limit {
		return nil, nil, fmt.Errorf("fetch %s: %w: %d bytes is more than the limit of %d", rawURL, ErrTooLarge, n, limit)
	}
	data, err := io.ReadAll(io.LimitReader(ctxReader{ctx, body}, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s: read: %w", rawURL, err)
	}
	if int64(len(data)) > limit {
		return nil, nil, fmt.Errorf("fetch %s: %w: larger than the limit of %d bytes", rawURL, ErrTooLarge, limit)
	}
	return data, u, nil
}

// File downloads rawURL to dst, checked against w, and returns the hex
// SHA-256 of the content (also with an ErrMismatch error). dst appears
// only complete and verified; on any error (the context's included)
// nothing is left behind and an existing dst is unchanged.
func (c *Client) File(ctx context.Context, rawURL, dst string, w Want) (string, error) {
	sum, err := c.file(ctx, rawURL, dst, w)
	if err != nil {
		return sum, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	return sum, nil
}

func (c *Client) file(ctx context.Context, rawURL, dst string, w Want) (string, error) {
	if w.SHA256 != "" && !ValidSHA256(w.SHA256) {
		return "", fmt.Errorf("sha256 %q is not 64 hex characters", w.SHA256)
	}
	if w.Size < 0 || w.MaxSize < 0 {
		return "", fmt.Errorf("negative size")
	}
	if w.Size > 0 && w.MaxSize > 0 && w.Size > w.MaxSize {
		return "", fmt.Errorf("%w: expected size %d is more than the limit of %d", ErrTooLarge, w.Size, w.MaxSize)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	body, length, _, err := c.open(ctx, rawURL)
	if err != nil {
		return "", err
	}
	defer body.Close()
	if w.Size > 0 && length >= 0 && length != w.Size {
		return "", fmt.Errorf("size mismatch: source has %d bytes, want %d", length, w.Size)
	}
	if w.MaxSize > 0 && length > w.MaxSize {
		return "", fmt.Errorf("%w: %d bytes is more than the limit of %d", ErrTooLarge, length, w.MaxSize)
	}
	want := length // -1: unknown
	if w.Size > 0 {
		want = w.Size
	}
	mode := w.Mode
	if mode == 0 {
		mode = 0o644
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	f, err := fsutil.CreateAtomic(dst, mode)
	if err != nil {
		return "", err
	}
	defer f.Abort()

	var src io.Reader = ctxReader{ctx, body}
	switch {
	case want >= 0:
		src = io.LimitReader(src, want+1) // one more, to notice an overlong body
	case w.MaxSize > 0:
		src = io.LimitReader(src, w.MaxSize+1)
	}
	h := sha256.New()
	pw := &progressWriter{fn: c.Progress, total: want}
	n, err := io.CopyBuffer(io.MultiWriter(f, h, pw), src, make([]byte, copyBufSize))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return "", cerr
		}
		if errors.Is(err, io.ErrUnexpectedEOF) && want >= 0 {
			return "", fmt.Errorf("truncated: got %d of %d bytes", n, want)
		}
		return "", fmt.Errorf("read: %w", err)
	}
	switch {
	case want >= 0 && n < want:
		return "", fmt.Errorf("truncated: got %d of %d bytes", n, want)
	case want >= 0 && n > want:
		return "", fmt.Errorf("too long: got more than %d bytes", want)
	case w.MaxSize > 0 && n > w.MaxSize:
		return "", fmt.Errorf("%w: larger than the limit of %d bytes", ErrTooLarge, w.MaxSize)
	}
	pw.done()
	sum := hex.EncodeToString(h.Sum(nil))
	if w.SHA256 != "" && sum != w.SHA256 {
		return sum, fmt.Errorf("%w: got %s, want %s", ErrMismatch, sum, w.SHA256)
	}
	if err := f.Commit(); err != nil {
		return "", err
	}
	return sum, nil
}

// ValidSHA256 reports whether s is 64 lowercase hex characters.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// progressWriter counts bytes and reports them, throttled, to fn.
type progressWriter struct {
	fn    func(current, total int64)
	total int64
	n     int64
	last  time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if p.fn != nil {
		if now := time.Now(); now.Sub(p.last) >= progressInterval {
			p.last = now
			p.fn(p.n, p.total)
		}
	}
	return len(b), nil
}

func (p *progressWriter) done() {
	if p.fn != nil {
		p.fn(p.n, p.total)
	}
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}
