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

	"banger/internal/fetch"
)

// copyBufSize is the buffer size of hashing.
const copyBufSize = 1 << 20

// Fetcher downloads files and verifies them, with internal/fetch.
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
// The download goes to a temporary file in dir that is synced and
// renamed into place once verified; on any error (including context
// cancellation) it is removed, so dir is left as it was.
func (f *Fetcher) Fetch(ctx context.Context, rawURL, sha256 string, size int64, dir string) (string, error) {
	sum := strings.ToLower(sha256)
	if !fetch.ValidSHA256(sum) {
		return "", fmt.Errorf("fetch %s: sha256 %q is not 64 hex characters", rawURL, sum)
	}
	if size < 0 {
		return "", fmt.Errorf("fetch %s: negative size %d", rawURL, size)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	final := filepath.Join(dir, sum+"-"+baseName(u))
	ok, err := checkExisting(ctx, final, sum, size)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	if ok {
		return final, nil
	}
	c := &fetch.Client{Progress: f.Progress, AllowFile: true}
	if f.Client != nil {
		c.HTTP = f.Client
	}
	if _, err := c.File(ctx, rawURL, final, fetch.Want{SHA256: sum, Size: size}); err != nil {
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
