package oci

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/fsutil"
	"banger/internal/hosttools"
)

// BuildExt4 makes the ext4 file out (labelled "root") from dir, as
// unpacked by Unpack into t. mkfs.ext4 -d copies the tree (without the
// host's extended attributes); a read-only debugfs run lists what it
// made, and one read-write debugfs run fixes up, for the entries that
// differ, what the host copy could not hold: ownership, exact modes
// (setuid and the like included), device nodes, fifos the host refused,
// and the layers' extended attributes. A last listing checks that every
// entry of t is there with the wanted type, mode and ownership. Nothing
// needs root; dir can be removed afterwards.
//
// size is the file size in bytes; 0 picks one: the bytes used times 1.5
// plus 256 MiB, rounded up to 64 MiB, at least 512 MiB. out is written
// through a temporary file next to it and only appears when complete
// and synced (fsutil.CreateAtomic).
func BuildExt4(ctx context.Context, dir string, t *Tree, out string, size int64) error {
	mkfs, err := hosttools.Path(hosttools.MkfsExt4)
	if err != nil {
		return err
	}
	debugfs, err := hosttools.Path(hosttools.Debugfs)
	if err != nil {
		return err
	}
	paths := t.Paths()
	var dirs []string
	for _, p := range paths {
		if err := noControl(p); err != nil {
			return fmt.Errorf("build ext4: file name: %w", err)
		}
		if t.entries[p].IsDir() {
			dirs = append(dirs, p)
		}
	}
	if size <= 0 {
		size = autoSize(t)
	}

	af, err := fsutil.CreateAtomic(out, 0o644)
	if err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	defer af.Abort()
	tmp := af.TempPath()
	if err := af.Truncate(size); err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	work, err := os.MkdirTemp(filepath.Dir(out), ".debugfs-")
	if err == nil {
		work, err = filepath.Abs(work)
	}
	if err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	defer os.RemoveAll(work)

	if err := runMkfs(ctx, mkfs, dir, tmp, size, t.Len()); err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	got, err := listExt4(ctx, debugfs, tmp, dirs, work)
	if err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	// Device nodes and fifos mkfs.ext4 could not copy are made first,
	// then listed like the rest: every later command names its inode by
	// number, never by a (long, hostile) path.
	nodes, made, err := mknods(t, paths, got)
	if err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	if len(nodes) > 0 {
		if _, err := debugfsRun(ctx, debugfs, tmp, nodes, work, true); err != nil {
			return fmt.Errorf("build ext4: %w", err)
		}
		if got, err = listExt4(ctx, debugfs, tmp, dirs, work); err != nil {
			return fmt.Errorf("build ext4: %w", err)
		}
	}
	script, err := fixups(t, paths, got, made, work)
	if err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	if len(script) > 0 {
		if _, err := debugfsRun(ctx, debugfs, tmp, script, work, true); err != nil {
			return fmt.Errorf("build ext4: %w", err)
		}
		if got, err = listExt4(ctx, debugfs, tmp, dirs, work); err != nil {
			return fmt.Errorf("build ext4: %w", err)
		}
	}
	if err := verify(t, paths, got); err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	if err := af.Commit(); err != nil {
		return fmt.Errorf("build ext4: %w", err)
	}
	return nil
}

const (
	blockSize   = 4096
	inodeRatio  = 16384 // mke2fs.conf's default bytes per inode
	inodeSize   = 256
	mib         = 1 << 20
	minAutoSize = 512 * mib
)

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// autoSize is the bytes used times 1.5 plus 256 MiB, rounded up to 64
// MiB, at least 512 MiB.
func autoSize(t *Tree) int64 {
	var used int64
	for _, e := range t.entries {
		switch e.Type() {
		case unix.S_IFREG:
			if e.Hardlink == "" {
				used += roundUp(e.Size, blockSize)
			}
		case unix.S_IFDIR:
			used += blockSize
		case unix.S_IFLNK:
			if len(e.Linkname) >= 60 { // longer targets need a block
				used += blockSize
			}
		}
		used += 2 * inodeSize // see inodes: twice as many as entries
	}
	return max(roundUp(used*3/2+256*mib, 64*mib), minAutoSize)
}

// inodes returns the inode count to ask mkfs.ext4 for, or 0 if its
// default suffices: room for twice the entries, so that the guest can
// add as many files again.
func inodes(size int64, entries int) int64 {
	need := int64(entries)*2 + 8192
	if size/inodeRatio >= need {
		return 0
	}
	return need
}

func runMkfs(ctx context.Context, mkfs, dir, img string, size int64, entries int) error {
	run := func(ext string) (string, error) {
		args := []string{"-q", "-F", "-L", "root", "-d", dir, "-E", ext}
		if n := inodes(size, entries); n > 0 {
			args = append(args, "-N", strconv.FormatInt(n, 10))
		}
		b, err := exec.CommandContext(ctx, mkfs, append(args, img)...).CombinedOutput()
		return strings.TrimSpace(string(b)), err
	}
	// no_copy_xattrs: the image's xattrs come from the layers, never
	// from the host (SELinux labels and the like).
	msg, err := run("lazy_itable_init=1,lazy_journal_init=1,no_copy_xattrs")
	if err != nil && strings.Contains(msg, "no_copy_xattrs") { // e2fsprogs < 1.47
		msg, err = run("lazy_itable_init=1,lazy_journal_init=1")
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("mkfs.ext4: %w", ctx.Err())
		}
		if strings.Contains(msg, "Could not allocate block") || strings.Contains(msg, "No space") ||
			strings.Contains(msg, "Could not allocate inode") {
			return fmt.Errorf("mkfs.ext4: the tree does not fit in %d MiB; use a larger size", size/mib)
		}
		return hosttools.OutputError("mkfs.ext4", err, []byte(msg))
	}
	return nil
}

// ext4Inode is what debugfs' ls -p says about a directory entry.
type ext4Inode struct {
	ino      uint64
	mode     uint32
	uid, gid int
}

// listExt4 lists the directories dirs of img with one debugfs run.
func listExt4(ctx context.Context, debugfs, img string, dirs []string, work string) (map[string]ext4Inode, error) {
	var script script
	for _, d := range dirs {
		if err := script.ls(d); err != nil {
			return nil, err
		}
	}
	stdout, err := debugfsRun(ctx, debugfs, img, script.Bytes(), work, false)
	if err != nil {
		return nil, err
	}
	got := make(map[string]ext4Inode, len(dirs)*8)
	idx := -1
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "debugfs: ") {
			idx++ // the echo of the next ls command
			continue
		}
		if !strings.HasPrefix(line, "/") || idx < 0 || idx >= len(dirs) {
			continue
		}
		name, in, err := parseLsP(line)
		if err != nil {
			return nil, fmt.Errorf("debugfs: %w", err)
		}
		switch {
		case in.ino == 0 || name == "": // unused slots (lost+found has many)
			continue
		case name == ".":
			if dirs[idx] == "/" {
				got["/"] = in
			}
			continue
		case name == "..":
			continue
		}
		got[path.Join(dirs[idx], name)] = in
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("debugfs: %w", err)
	}
	return got, nil
}

// parseLsP parses a line of debugfs' "ls -p": /INO/MODE/UID/GID/NAME/SIZE/
// (names cannot hold a slash).
func parseLsP(line string) (string, ext4Inode, error) {
	f := strings.SplitN(strings.TrimSuffix(line[1:], "/"), "/", 5)
	if len(f) != 5 {
		return "", ext4Inode{}, fmt.Errorf("cannot parse ls -p line %q", line)
	}
	i := strings.LastIndexByte(f[4], '/')
	if i < 0 {
		return "", ext4Inode{}, fmt.Errorf("cannot parse ls -p line %q", line)
	}
	ino, err1 := strconv.ParseUint(f[0], 10, 64)
	mode, err2 := strconv.ParseUint(f[1], 8, 32)
	uid, err3 := strconv.Atoi(f[2])
	gid, err4 := strconv.Atoi(f[3])
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			return "", ext4Inode{}, fmt.Errorf("cannot parse ls -p line %q: %w", line, err)
		}
	}
	return f[4][:i], ext4Inode{ino: ino, mode: uint32(mode), uid: uid, gid: gid}, nil
}

// mknods writes the debugfs commands that make the device nodes and
// fifos of t that mkfs.ext4 left out of the image (got), each in its
// directory, named by inode number. It returns the script and the
// paths it makes.
func mknods(t *Tree, paths []string, got map[string]ext4Inode) ([]byte, map[string]bool, error) {
	var s script
	made := map[string]bool{}
	var cwd uint64
	for _, p := range paths {
		e := t.entries[p]
		if _, ok := got[p]; ok {
			continue
		}
		switch e.Type() {
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		default:
			return nil, nil, fmt.Errorf("%s is missing from the image (was the unpacked directory changed?)", p)
		}
		dir, name := path.Split(p)
		d, ok := got[path.Clean(dir)]
		if !ok || d.mode&unix.S_IFMT != unix.S_IFDIR {
			return nil, nil, fmt.Errorf("%s: directory missing from the image", p)
		}
		if d.ino != cwd { // debugfs' mknod takes a name in the current directory
			if err := s.cd(inode(d.ino)); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", p, err)
			}
			cwd = d.ino
		}
		var err error
		switch kind := byte('c'); e.Type() {
		case unix.S_IFBLK:
			kind = 'b'
			fallthrough
		case unix.S_IFCHR:
			switch {
			case e.Major <= 0xffff && e.Minor <= 0xffff:
				err = s.mknod(name, kind, e.Major, e.Minor)
			case e.Major <= 0xfff && e.Minor <= 0xfffff:
				err = s.mknod(name, kind, 0, 0) // fixups stores the number
			default:
				return nil, nil, fmt.Errorf("%s: device number %d:%d out of range", p, e.Major, e.Minor)
			}
		default:
			err = s.mknod(name, 'p', 0, 0)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		made[p] = true
	}
	return s.Bytes(), made, nil
}

// fixups writes the debugfs commands that make the image match t, given
// what is there (got; made: the nodes mknods made, which get every
// field set). Every command names its inode by number. Extended
// attribute values go to files in work, which ea_set reads.
func fixups(t *Tree, paths []string, got map[string]ext4Inode, made map[string]bool, work string) ([]byte, error) {
	var s script
	nx := 0
	eaSet := func(tg target, e *Entry) error {
		for _, k := range sortedKeys(e.Xattrs) {
			nx++
			vf := filepath.Join(work, fmt.Sprintf("xattr-%d", nx))
			if err := os.WriteFile(vf, e.Xattrs[k], 0o600); err != nil {
				return err
			}
			if err := s.eaSet(tg, vf, k); err != nil {
				return fmt.Errorf("%s: %w", e.Path, err)
			}
		}
		return nil
	}
	setAll := func(tg target, e *Entry, g ext4Inode, fresh bool) error {
		if e.UID < 0 || e.GID < 0 {
			return fmt.Errorf("%s: negative owner %d:%d", e.Path, e.UID, e.GID)
		}
		var err error
		set := func(field string, v uint64) {
			if err == nil {
				err = s.sif(tg, field, v)
			}
		}
		if fresh && (e.Major > 0xffff || e.Minor > 0xffff) {
			// Beyond what debugfs' mknod takes: store the kernel's
			// new-style encoding by hand.
			set("block[1]", uint64(e.Minor&0xff|e.Major<<8|(e.Minor&^0xff)<<12))
		}
		if fresh || g.mode != e.Mode {
			set("mode", uint64(e.Mode))
		}
		if fresh || g.uid != e.UID {
			set("uid", uint64(e.UID))
		}
		if fresh || g.gid != e.GID {
			set("gid", uint64(e.GID))
		}
		// mkfs.ext4 copied the host mtimes, except the root's; new
		// nodes get theirs here.
		if (fresh || e.Path == "/") && e.ModTime.Unix() > 0 {
			set("mtime", uint64(e.ModTime.Unix()))
		}
		if err != nil {
			return fmt.Errorf("%s: %w", e.Path, err)
		}
		return eaSet(tg, e)
	}

	done := map[uint64]bool{}
	for _, p := range paths {
		e := t.entries[p]
		g, ok := got[p]
		if !ok {
			return nil, fmt.Errorf("%s is missing from the image (was the unpacked directory changed?)", p)
		}
		if g.mode&unix.S_IFMT != e.Type() {
			return nil, fmt.Errorf("%s: file type %o in the image, want %o", p, g.mode&unix.S_IFMT, e.Type())
		}
		if done[g.ino] { // another name of a hard-linked inode
			continue
		}
		done[g.ino] = true
		if err := setAll(inode(g.ino), e, g, made[p]); err != nil {
			return nil, err
		}
	}
	return s.Bytes(), nil
}

// verify checks every entry of t against the image listing.
func verify(t *Tree, paths []string, got map[string]ext4Inode) error {
	var bad []string
	for _, p := range paths {
		e := t.entries[p]
		g, ok := got[p]
		switch {
		case !ok:
			bad = append(bad, p+": missing")
		case g.mode != e.Mode || g.uid != e.UID || g.gid != e.GID:
			bad = append(bad, fmt.Sprintf("%s: mode 0%o uid %d gid %d, want 0%o %d %d", p, g.mode, g.uid, g.gid, e.Mode, e.UID, e.GID))
		}
		if len(bad) == 5 {
			bad = append(bad, "...")
			break
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("the image does not match the layers: %s", strings.Join(bad, "; "))
	}
	return nil
}

// debugfsRun runs script against img (read-write if write) and returns
// its output. It fails on any error debugfs reports on stderr, as
// debugfs exits 0 regardless.
func debugfsRun(ctx context.Context, debugfs, img string, script []byte, work string, write bool) ([]byte, error) {
	cf := filepath.Join(work, "commands")
	if err := os.WriteFile(cf, script, 0o600); err != nil {
		return nil, fmt.Errorf("debugfs: %w", err)
	}
	args := []string{"-f", cf, img}
	if write {
		args = append([]string{"-w"}, args...)
	}
	cmd := exec.CommandContext(ctx, debugfs, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var msgs []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "debugfs ") { // the version banner
			continue
		}
		if len(msgs) == 5 {
			msgs = append(msgs, "...")
			break
		}
		msgs = append(msgs, l)
	}
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("debugfs: %w", ctx.Err())
	case err != nil:
		return nil, hosttools.OutputError("debugfs", err, []byte(strings.Join(msgs, "; ")))
	case len(msgs) > 0:
		return nil, fmt.Errorf("debugfs: %s", strings.Join(msgs, "; "))
	}
	return stdout.Bytes(), nil
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
