// Package untar reads tar streams that come from untrusted places
// (kernel packages, image bundles, OCI layers, release archives, files
// sent to a guest) and extracts them into a directory without ever
// writing outside it.
//
// Walk is the checked reader every caller shares: it cleans and checks
// each entry name (no absolute names unless asked, no "..", no NUL, a
// length cap), counts entries and bytes against limits and honours a
// context. Extract builds on it and writes the entries under a
// directory opened with os.Root, so neither a name, nor a symbolic link
// (of the archive or already there), nor a hard link can reach outside
// it; entries below a symbolic link the archive made are refused, so a
// link's target is data and never followed while extracting. Callers
// with rules of their own (OCI whiteouts, a bundle's fixed members) use
// Walk and the confined helpers CreateFile, Mknod and Lutimes on their
// own os.Root.
package untar

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Defaults for Limits fields left zero.
const (
	DefaultMaxBytes   = 64 << 30
	DefaultMaxEntries = 4_000_000
	DefaultMaxPathLen = 4096
)

// ErrLimit is wrapped by the error of a stream that passes one of its
// Limits.
var ErrLimit = errors.New("archive exceeds a limit")

// Limits bound what one stream may hold. Zero fields take the defaults.
type Limits struct {
	// MaxBytes caps the sizes of all entries together (a sparse file
	// counts its logical size).
	MaxBytes int64
	// MaxEntries caps the number of entries.
	MaxEntries int
	// MaxPathLen caps the length of an entry name and of a link target.
	MaxPathLen int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxPathLen <= 0 {
		l.MaxPathLen = DefaultMaxPathLen
	}
	return l
}

// Entry is one checked tar entry.
type Entry struct {
	// Name is the entry's clean relative slash-separated name
	// ("./usr/bin/" is "usr/bin"); "" is the root directory itself.
	Name   string
	Header *tar.Header
}

// WalkOptions tune Walk.
type WalkOptions struct {
	Limits
	// AllowAbsolute accepts names with leading slashes, taking them as
	// relative to the root (as OCI layers may). Otherwise they are
	// refused.
	AllowAbsolute bool
}

// Walk reads the tar stream r and calls fn for every entry, with the
// reader of its content (fn need not read it all). Global extended
// headers are skipped. A name that escapes (absolute, "..", NUL), a
// name or link target longer than MaxPathLen, or a stream passing
// MaxEntries or MaxBytes ends the walk with an error, as does an error
// of fn or ctx.
func Walk(ctx context.Context, r io.Reader, o WalkOptions, fn func(e Entry, content io.Reader) error) error {
	l := o.Limits.withDefaults()
	tr := tar.NewReader(ctxReader{ctx, r})
	var entries int
	var bytes int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if entries++; entries > l.MaxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrLimit, l.MaxEntries)
		}
		if len(h.Name) > l.MaxPathLen || len(h.Linkname) > l.MaxPathLen {
			return fmt.Errorf("%w: entry name or link target of entry %d longer than %d bytes", ErrLimit, entries, l.MaxPathLen)
		}
		if h.Size < 0 || h.Size > l.MaxBytes-bytes {
			return fmt.Errorf("%w: entries add up to more than %d bytes", ErrLimit, l.MaxBytes)
		}
		bytes += h.Size
		name := h.Name
		if o.AllowAbsolute {
			name = strings.TrimLeft(name, "/")
		}
		clean, err := CleanName(name)
		if err != nil {
			return err
		}
		if err := fn(Entry{Name: clean, Header: h}, tr); err != nil {
			return err
		}
	}
}

// NameError is the error of a refused entry name (or hard link
// target).
type NameError struct {
	Name   string // as in the archive
	Reason string
}

func (e *NameError) Error() string { return fmt.Sprintf("entry %q %s: refusing it", e.Name, e.Reason) }

// CleanName turns a tar entry name ("./boot/x", "a//b/") into a clean
// relative path ("boot/x", "a/b"), "" for the root itself, or a
// *NameError if it is absolute, has a ".." component or a NUL byte.
func CleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", &NameError{name, "has a NUL byte"}
	}
	if strings.HasPrefix(name, "/") {
		return "", &NameError{name, "is absolute (escapes the target)"}
	}
	parts := strings.Split(name, "/")
	out := parts[:0]
	for _, c := range parts {
		switch c {
		case "", ".":
			continue
		case "..":
			return "", &NameError{name, `has a ".." component: it leaves the root (escapes the target)`}
		}
		out = append(out, c)
	}
	clean := strings.Join(out, "/")
	if clean != "" && !fs.ValidPath(clean) {
		return "", &NameError{name, "is not a valid path"}
	}
	return clean, nil
}

// ctxReader makes reads fail once ctx is done.
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

// holeChunk is the unit sparse writes check for zeros: a multiple of
// every common filesystem block size.
const holeChunk = 64 << 10

var zeros = make([]byte, holeChunk)

func allZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }
