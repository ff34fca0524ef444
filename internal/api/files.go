package api

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

// Files in a running VM's guest (GET/PUT/DELETE /v1/vms/{name}/files and
// the routes below it). Paths are absolute guest paths, resolved in the
// guest by its agent.

// File types in FileInfo.Type.
const (
	FileTypeFile    = "file"
	FileTypeDir     = "dir"
	FileTypeSymlink = "symlink"
	FileTypeOther   = "other"
)

// FileInfo describes one guest file (lstat: a symlink is described, not
// followed).
type FileInfo struct {
	Name  string    `json:"name"`
	Path  string    `json:"path"`
	Type  string    `json:"type"`
	Size  int64     `json:"size"`
	Mode  string    `json:"mode"` // octal permission and set-id/sticky bits, e.g. "0644"
	MTime time.Time `json:"mtime"`
	// Target is a symlink's target, as stored.
	Target string `json:"target,omitempty"`
}

// FileList answers GET /files/list.
type FileList struct {
	Path    string     `json:"path"`
	Entries []FileInfo `json:"entries"`
	// Truncated: the directory has more than MaxListEntries entries.
	Truncated bool `json:"truncated"`
}

// MaxListEntries caps the entries of one listing.
const MaxListEntries = 10000

// MkdirParams is the body of POST /files/mkdir.
type MkdirParams struct {
	Path    string `json:"path"`
	Mode    string `json:"mode,omitempty"` // octal, default "0755"
	Parents bool   `json:"parents,omitempty"`
}

// ArchiveResult answers PUT /files/archive: regular files and symlinks
// and directories extracted (Files) and the bytes of file content (Bytes).
type ArchiveResult struct {
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
}

// File event operations in FileEvent.Op. OpReady is the first line of a
// watch, once it is armed; FileOpOverflow says the guest kernel dropped
// events (its inotify queue was full).
const (
	FileOpReady    = "ready"
	FileOpCreate   = "create"
	FileOpWrite    = "write"
	FileOpRemove   = "remove"
	FileOpRename   = "rename"
	FileOpChmod    = "chmod"
	FileOpOverflow = "overflow"
)

// FileEvent is one line of GET /files/watch.
type FileEvent struct {
	Path string    `json:"path"`
	Op   string    `json:"op"`
	Time time.Time `json:"time,omitzero"`
}

// HeaderFileMode carries a read file's mode (octal) on GET /files.
const HeaderFileMode = "X-Banger-Mode"

// MaxGuestPath bounds a guest path (Linux PATH_MAX).
const MaxGuestPath = 4096

// CheckGuestPath refuses what cannot be an absolute guest path: relative
// paths, NUL bytes, over-long ones. The path is cleaned.
func CheckGuestPath(p string) (string, error) {
	switch {
	case p == "":
		return "", errors.New("a path is required")
	case strings.IndexByte(p, 0) >= 0:
		return "", errors.New("path contains a NUL byte")
	case len(p) > MaxGuestPath:
		return "", fmt.Errorf("path is over %d bytes", MaxGuestPath)
	case !strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	return path.Clean(p), nil
}

// FormatMode writes a mode's permission and special bits as octal.
func FormatMode(m fs.FileMode) string {
	v := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return fmt.Sprintf("%04o", v)
}

// ParseMode reads an octal mode ("0644", "755", "4755"); "" gives def.
func ParseMode(s string, def fs.FileMode) (fs.FileMode, error) {
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return 0, fmt.Errorf("mode %q is not an octal mode (0000 to 7777)", s)
	}
	m := fs.FileMode(v & 0o777)
	if v&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if v&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if v&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}
