package catalog

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
	"path"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/fsutil"
)

// progressInterval is the minimum time between two Progress calls.
const progressInterval = 100 * time.Millisecond

// copyBufSize is the buffer size of downloads and hashing.
const copyBufSize = 1 << 20

// Fetcher downloads files and verifies them.
type Fetcher struct {
	// Client fetches http(s) URLs; nil means http.DefaultClient.
	Client *http.Client
	// Progress, if set, is called during a download with the bytes
	// received so far and the expected total (-1 if unknown): at most
	// about ten times a second, and once more when the body is complete.
	Progress func(current, total int64)
}

// Fetch downloads url into dir as a content-addressed file named
// "<sha256>-<base name of url>" and returns its path. url is http, https or
// file. The body must hash to sha256 and, when size > 0, be size bytes
// long (it must also match the server's Content-Length). If the file is
// already in dir and its content is right, it is returned without
// downloading; a corrupt one is replaced.
//
// The download goes to a temporary ".partial-*" file in dir that is synced
// and renamed into place once verified; on any error (including context
// cancellation) it is removed, so dir is left as it was.
func (f *Fetcher) Fetch(ctx context.Context, url, sha256 string, size int64, dir string) (string, error) {
	p, err := f.fetch(ctx, url, strings.ToLower(sha256), size, dir)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", url, err)
	}
	return p, nil
}

func (f *Fetcher) fetch(ctx context.Context, rawURL, sum string, size int64, dir string) (_ string, err error) {
	if !validSHA256(sum) {
		return "", fmt.Errorf("sha256 %q is not 64 hex characters", sum)
	}
	if size < 0 {
		return "", fmt.Errorf("negative size %d", size)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	final := filepath.Join(dir, sum+"-"+baseName(u))

	ok, err := checkExisting(ctx, final, sum, size)
	if err != nil || ok {
		return final, err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}

	body, length, err := f.open(ctx, u)
	if err != nil {
		return "", err
	}
	defer body.Close()
	if size > 0 && length >= 0 && length != size {
		return "", fmt.Errorf("size mismatch: source has %d bytes, want %d", length, size)
	}
	want := length
	if size > 0 {
		want = size
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".partial-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	var src io.Reader = ctxReader{ctx, body}
	if want >= 0 {
		// One byte more than expected, to notice an overlong body.
		src = io.LimitReader(src, want+1)
	}
	h := sha256.New()
	pw := &progressWriter{fn: f.Progress, total: want}
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h, pw), src, make([]byte, copyBufSize))
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
	}
	pw.done()
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return "", fmt.Errorf("sha256 mismatch: got %s, want %s", got, sum)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	if err := fsutil.SyncDir(dir); err != nil {
		os.Remove(final)
		return "", err
	}
	return final, nil
}

// baseName is the last element of u's path, or "download" if it has none
// usable as a file name.
func baseName(u *url.URL) string {
	b := path.Base(u.Path)
	if b == "." || b == "/" || b == ".." || b == "" {
		return "download"
	}
	return b
}

// checkExisting reports whether name exists with the right content. A file
// with the wrong size or hash is removed.
func checkExisting(ctx context.Context, name, sum string, size int64) (bool, error) {
	fh, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return false, err
	}
	good := st.Mode().IsRegular() && (size <= 0 || st.Size() == size)
	if good {
		h := sha256.New()
		if _, err := io.CopyBuffer(h, ctxReader{ctx, fh}, make([]byte, copyBufSize)); err != nil {
			return false, fmt.Errorf("verify existing %s: %w", name, err)
		}
		good = hex.EncodeToString(h.Sum(nil)) == sum
	}
	if good {
		return true, nil
	}
	if err := os.Remove(name); err != nil {
		return false, fmt.Errorf("remove corrupt %s: %w", name, err)
	}
	return false, nil
}

// open starts reading u and returns its body and length (-1 if unknown).
func (f *Fetcher) open(ctx context.Context, u *url.URL) (io.ReadCloser, int64, error) {
	switch u.Scheme {
	case "file":
		p, err := fileURLPath(u)
		if err != nil {
			return nil, 0, err
		}
		fh, err := os.Open(p)
		if err != nil {
			return nil, 0, err
		}
		st, err := fh.Stat()
		if err != nil {
			fh.Close()
			return nil, 0, err
		}
		if !st.Mode().IsRegular() {
			fh.Close()
			return nil, 0, fmt.Errorf("%s is not a regular file", p)
		}
		return fh, st.Size(), nil
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, 0, err
		}
		// The bytes hashed must be the bytes served: no transparent
		// decompression.
		req.Header.Set("Accept-Encoding", "identity")
		hc := f.Client
		if hc == nil {
			hc = http.DefaultClient
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, 0, err
		}
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("server said %s", resp.Status)
		}
		return resp.Body, resp.ContentLength, nil
	}
	return nil, 0, fmt.Errorf("unsupported URL scheme %q", u.Scheme)
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
