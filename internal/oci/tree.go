package oci

import (
	"path"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// Entry is one path of the root filesystem, as the image wants it.
type Entry struct {
	// Path is absolute and clean: "/", "/etc/passwd".
	Path string
	// Mode is a Unix st_mode: the file type bits (unix.S_IFREG,
	// S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO) and the permission
	// bits including setuid, setgid and sticky.
	Mode uint32
	UID  int
	GID  int
	// Major and Minor are the device numbers of a character or block
	// device.
	Major, Minor uint32
	// Linkname is a symbolic link's target.
	Linkname string
	// Hardlink is, for a hard link, the path it was linked to when it
	// was created (the two share an inode from then on).
	Hardlink string
	// Size is a regular file's size.
	Size    int64
	ModTime time.Time
	// Xattrs are the extended attributes (for instance
	// security.capability); they are never set on the host, only in the
	// ext4 image.
	Xattrs map[string][]byte
}

// Type returns the file type bits of Mode.
func (e *Entry) Type() uint32 { return e.Mode & unix.S_IFMT }

// IsDir reports whether e is a directory.
func (e *Entry) IsDir() bool { return e.Type() == unix.S_IFDIR }

// Tree records every path of an unpacked image with its wanted
// ownership, mode and device numbers, whatever the unpacking user could
// create on the host.
type Tree struct {
	entries  map[string]*Entry
	children map[string]map[string]struct{} // directory -> names in it
}

func newTree() *Tree {
	t := &Tree{entries: map[string]*Entry{}, children: map[string]map[string]struct{}{}}
	t.put(&Entry{Path: "/", Mode: unix.S_IFDIR | 0o755})
	return t
}

// Get returns the entry of an absolute path.
func (t *Tree) Get(p string) (*Entry, bool) {
	e, ok := t.entries[p]
	return e, ok
}

// Len is the number of entries, "/" included.
func (t *Tree) Len() int { return len(t.entries) }

// Paths returns every path, parents before their children, names
// sorted within a directory.
func (t *Tree) Paths() []string {
	out := make([]string, 0, len(t.entries))
	var walk func(p string)
	walk = func(p string) {
		out = append(out, p)
		names := make([]string, 0, len(t.children[p]))
		for n := range t.children[p] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			walk(path.Join(p, n))
		}
	}
	walk("/")
	return out
}

// put adds or replaces e; its parent must be a directory of the tree.
func (t *Tree) put(e *Entry) {
	t.entries[e.Path] = e
	if e.Path == "/" {
		return
	}
	dir, base := path.Split(e.Path)
	dir = path.Clean(dir)
	c := t.children[dir]
	if c == nil {
		c = map[string]struct{}{}
		t.children[dir] = c
	}
	c[base] = struct{}{}
}

// remove deletes p and everything under it.
func (t *Tree) remove(p string) {
	for n := range t.children[p] {
		t.remove(path.Join(p, n))
	}
	delete(t.children, p)
	delete(t.entries, p)
	if p != "/" {
		dir, base := path.Split(p)
		delete(t.children[path.Clean(dir)], base)
	}
}

// childPaths returns the paths directly under directory p.
func (t *Tree) childPaths(p string) []string {
	out := make([]string, 0, len(t.children[p]))
	for n := range t.children[p] {
		out = append(out, path.Join(p, n))
	}
	return out
}
