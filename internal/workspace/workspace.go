// Package workspace ships a git repository into a guest and describes how
// the guest's edits come back: it lists what a prepare sends (tracked
// files, optionally untracked ones, never ignored ones), writes it as one
// tar stream together with a minimal .git at the same HEAD, and holds the
// guest-side export script.
package workspace

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"banger/internal/api"
	"banger/internal/gitpack"
	"banger/internal/hosttools"
)

// GuestDir is where a workspace lives in the guest (on the work disk).
const GuestDir = "/root/repo"

// Modes of a prepare.
const (
	ModeCopy     = "copy"      // the repository's own files
	ModeFullCopy = "full_copy" // plus the files of its submodules
)

// Options select what a prepare sends.
type Options struct {
	IncludeUntracked bool
	Mode             string // ModeCopy (default) or ModeFullCopy
}

// File is one path that a prepare sends.
type File struct {
	Path string      `json:"path"` // slash-separated, relative to the repo root
	Size int64       `json:"size"`
	Mode fs.FileMode `json:"mode"`
	Link string      `json:"link,omitempty"` // symlink target
}

// Plan is what a prepare of one repository sends.
type Plan struct {
	Root   string `json:"root"`
	Head   string `json:"head"`   // commit, "" for a repository without commits
	Branch string `json:"branch"` // "" when detached
	Files  []File `json:"files"`
	// Submodules are gitlink paths sent as empty directories (copy mode),
	// so the guest repository does not see them as deleted.
	Submodules []string `json:"submodules,omitempty"`
	TotalBytes int64    `json:"total_bytes"`
	Dirty      bool     `json:"dirty"`     // tracked files differ from HEAD
	Untracked  int      `json:"untracked"` // untracked files included
	Mode       string   `json:"mode"`
	// IncludeUntracked is the option the plan was made with, passed on
	// so that a later re-sync repeats it.
	IncludeUntracked bool `json:"include_untracked"`
}

// ErrNotRepo is returned for a path outside any git work tree.
var ErrNotRepo = errors.New("not a git repository")

func git(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd, err := gitCommand(ctx, dir, args...)
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, hosttools.OutputError("git "+strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// Inspect builds the plan for the repository containing path.
func Inspect(ctx context.Context, path string, o Options) (*Plan, error) {
	switch o.Mode {
	case "":
		o.Mode = ModeCopy
	case ModeCopy, ModeFullCopy:
	default:
		return nil, fmt.Errorf("unknown mode %q (use copy or full_copy)", o.Mode)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", path)
	}
	top, err := git(ctx, abs, "rev-parse", "--show-toplevel")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, ErrNotRepo)
	}
	p := &Plan{Root: strings.TrimSpace(string(top)), Mode: o.Mode, IncludeUntracked: o.IncludeUntracked}
	if out, err := git(ctx, p.Root, "rev-parse", "--verify", "--quiet", "HEAD"); err == nil {
		p.Head = strings.TrimSpace(string(out))
	}
	if out, err := git(ctx, p.Root, "symbolic-ref", "--quiet", "--short", "HEAD"); err == nil {
		p.Branch = strings.TrimSpace(string(out))
	}

	// Tracked paths, with gitlinks (submodules) told apart.
	args := []string{"ls-files", "-z", "--cached", "--stage"}
	if o.Mode == ModeFullCopy {
		args = append(args, "--recurse-submodules")
	}
	out, err := git(ctx, p.Root, args...)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var paths []string
	for _, rec := range strings.Split(string(out), "\x00") {
		if rec == "" {
			continue
		}
		meta, name, ok := strings.Cut(rec, "\t")
		if !ok {
			continue
		}
		if strings.HasPrefix(meta, "160000 ") {
			// A submodule's gitlink: its files come only with full_copy.
			p.Submodules = append(p.Submodules, name)
			continue
		}
		if !seen[name] {
			seen[name] = true
			paths = append(paths, name)
		}
	}
	if o.IncludeUntracked {
		out, err := git(ctx, p.Root, "ls-files", "-z", "--others", "--exclude-standard")
		if err != nil {
			return nil, err
		}
		for _, name := range strings.Split(string(out), "\x00") {
			if name != "" && !seen[name] {
				seen[name] = true
				paths = append(paths, name)
				p.Untracked++
			}
		}
	}
	sort.Strings(paths)
	for _, name := range paths {
		fi, err := os.Lstat(filepath.Join(p.Root, filepath.FromSlash(name)))
		if err != nil {
			continue // tracked but deleted in the work tree: not sent
		}
		f := File{Path: name, Mode: fi.Mode()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			f.Link, _ = os.Readlink(filepath.Join(p.Root, name))
		case fi.Mode().IsRegular():
			f.Size = fi.Size()
		default:
			continue
		}
		p.Files = append(p.Files, f)
		p.TotalBytes += f.Size
	}
	if p.Head != "" {
		if out, err := git(ctx, p.Root, "status", "--porcelain", "--untracked-files=no"); err == nil && len(bytes.TrimSpace(out)) > 0 {
			p.Dirty = true
		}
	}
	return p, nil
}

// WriteTar writes the plan's files followed by a minimal .git: a shallow
// clone of HEAD with an index of HEAD's tree, so the guest has a real
// repository at the same commit and `git status` there shows exactly how
// the work tree differs from HEAD.
//
// HEAD's blobs are not sent twice: a work-tree file whose bytes are a
// blob of HEAD (the usual case) is named in a blob plan sent first
// (gitpack.PlanEntry), and the guest writes it into a pack as it
// extracts it; the host computes every checksum of that pack while it
// sends the files and sends the pack's index last (gitpack.IndexEntry).
// The .git's own pack then holds only the commit, its trees and the blobs
// no file carries (changed or deleted files, symlinks).
func WriteTar(ctx context.Context, p *Plan, w io.Writer) error {
	tw := tar.NewWriter(w)
	var bp *blobPlan
	if p.Head != "" {
		var err error
		if bp, err = planBlobs(ctx, p); err != nil {
			return err
		}
	}
	// With no file to lay out (every file changed since HEAD), there is
	// no plan: .git's own pack holds all of HEAD's blobs.
	withPlan := bp != nil && len(bp.plan.Files) > 0
	if withPlan {
		b, err := json.Marshal(bp.plan)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: gitpack.PlanEntry, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(b))}); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	for _, d := range p.Submodules {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return err
		}
	}
	for i, f := range p.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		src := filepath.Join(p.Root, filepath.FromSlash(f.Path))
		var err error
		if withPlan && bp.packed[i] {
			err = bp.addPacked(tw, src, f.Path, bp.sums[i])
		} else {
			err = addFile(tw, src, f.Path)
		}
		if err != nil {
			return err
		}
	}
	var objects []byte
	if bp != nil {
		objects = bp.objects
	}
	gitDir, cleanup, err := minimalGitDir(ctx, p, objects)
	if err != nil {
		return err
	}
	defer cleanup()
	err = filepath.WalkDir(gitDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(gitDir, path)
		name := ".git"
		if rel != "." {
			name = ".git/" + filepath.ToSlash(rel)
		}
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		return addFile(tw, path, name)
	})
	if err != nil {
		return fmt.Errorf("pack .git: %w", err)
	}
	if withPlan {
		idx, err := bp.index()
		if err != nil {
			return fmt.Errorf("index the work tree's blobs: %w", err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: gitpack.IndexEntry, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(idx))}); err != nil {
			return err
		}
		if _, err := tw.Write(idx); err != nil {
			return err
		}
	}
	return tw.Close()
}

// fileSum is what the first pass learnt of a regular file.
type fileSum struct {
	id    [20]byte
	adler uint32
	size  int64
	ok    bool
}

// blobPlan is the part of HEAD's blobs the work tree carries.
type blobPlan struct {
	plan    gitpack.Plan
	packed  []bool // by index in Plan.Files
	sums    []fileSum
	objects []byte // the .git pack's object list: commit, trees, other blobs
	// The pack the guest lays out, as the host hashes it while sending.
	packSum hash.Hash
	crc     hash.Hash32
	off     uint64
	entries []gitpack.Entry
	buf     []byte
}

func (b *blobPlan) Write(p []byte) (int, error) {
	b.packSum.Write(p)
	b.crc.Write(p)
	b.off += uint64(len(p))
	return len(p), nil
}

// planBlobs hashes the plan's regular files (in parallel, at native
// speed) and picks those whose bytes are a blob of HEAD, each blob once.
// It returns nil, and the whole of HEAD goes in .git as before, for a
// repository whose objects are not SHA-1.
func planBlobs(ctx context.Context, p *Plan) (*blobPlan, error) {
	if out, err := git(ctx, p.Root, "rev-parse", "--show-object-format"); err != nil || strings.TrimSpace(string(out)) != "sha1" {
		return nil, nil
	}
	out, err := git(ctx, p.Root, "ls-tree", "-r", "-t", "-z", "--full-tree", p.Head)
	if err != nil {
		return nil, err
	}
	root, err := git(ctx, p.Root, "rev-parse", p.Head+"^{tree}")
	if err != nil {
		return nil, err
	}
	objects := []string{p.Head, strings.TrimSpace(string(root))}
	var headBlobs []string
	inHead := map[[20]byte]bool{}
	for _, rec := range strings.Split(string(out), "\x00") {
		meta, _, ok := strings.Cut(rec, "\t")
		if !ok {
			continue
		}
		f := strings.Fields(meta)
		if len(f) != 3 {
			continue
		}
		switch f[1] {
		case "tree":
			objects = append(objects, f[2])
		case "blob":
			var id [20]byte
			if _, err := hex.Decode(id[:], []byte(f[2])); err != nil || len(f[2]) != 40 {
				return nil, fmt.Errorf("ls-tree: bad blob id %q", f[2])
			}
			if !inHead[id] {
				inHead[id] = true
				headBlobs = append(headBlobs, f[2])
			}
		}
	}
	sums := make([]fileSum, len(p.Files))
	work := make(chan int)
	var wg sync.WaitGroup
	for range max(1, runtime.NumCPU()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sums[i] = hashFile(filepath.Join(p.Root, filepath.FromSlash(p.Files[i].Path)))
			}
		}()
	}
	for i, f := range p.Files {
		if f.Mode.IsRegular() && ctx.Err() == nil {
			work <- i
		}
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	bp := &blobPlan{packed: make([]bool, len(p.Files)), sums: sums, packSum: sha1.New(), crc: crc32.NewIEEE(), buf: make([]byte, 64<<10)}
	chosen := map[[20]byte]bool{}
	for i, s := range sums {
		if s.ok && inHead[s.id] && !chosen[s.id] {
			chosen[s.id] = true
			bp.packed[i] = true
			bp.plan.Files = append(bp.plan.Files, gitpack.PlanFile{Path: p.Files[i].Path, Adler: s.adler})
		}
	}
	for _, h := range headBlobs {
		var id [20]byte
		hex.Decode(id[:], []byte(h))
		if !chosen[id] {
			objects = append(objects, h)
		}
	}
	bp.objects = []byte(strings.Join(objects, "\n") + "\n")
	bp.Write(gitpack.Header(uint32(len(bp.plan.Files))))
	return bp, nil
}

// hashFile is the blob id and Adler-32 of a file's bytes; ok is false
// when it cannot be read (it is then sent, or fails, as any file).
func hashFile(path string) fileSum {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fileSum{}
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return fileSum{}
	}
	id, adler, err := gitpack.BlobID(f, fi.Size())
	if err != nil {
		return fileSum{}
	}
	return fileSum{id: id, adler: adler, size: fi.Size(), ok: true}
}

// addPacked sends a file of the blob plan, checking that its bytes are
// still the blob hashed before, and hashes its pack entry.
func (b *blobPlan) addPacked(tw *tar.Writer, path, name string, s fileSum) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Size() != s.size {
		return fmt.Errorf("%s changed while being sent", name)
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime(), Size: s.size}); err != nil {
		return err
	}
	blob := sha1.New()
	blob.Write([]byte("blob " + strconv.FormatInt(s.size, 10) + "\x00"))
	off := b.off
	b.crc.Reset()
	src := io.TeeReader(io.LimitReader(f, s.size), io.MultiWriter(tw, blob))
	if _, err := gitpack.Object(b, src, s.size, s.adler, b.buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return fmt.Errorf("%s changed while being sent", name)
		}
		return err
	}
	if !bytes.Equal(blob.Sum(nil), s.id[:]) {
		return fmt.Errorf("%s changed while being sent", name)
	}
	b.entries = append(b.entries, gitpack.Entry{ID: s.id, CRC: b.crc.Sum32(), Offset: off})
	return nil
}

// index is the index of the laid-out pack, once every file was sent.
func (b *blobPlan) index() ([]byte, error) {
	var sum [20]byte
	copy(sum[:], b.packSum.Sum(nil))
	return gitpack.Index(b.entries, sum)
}

func addFile(tw *tar.Writer, path, name string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	h := &tar.Header{Name: name, Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime()}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		h.Typeflag = tar.TypeSymlink
		if h.Linkname, err = os.Readlink(path); err != nil {
			return err
		}
		return tw.WriteHeader(h)
	case fi.Mode().IsRegular():
		h.Typeflag = tar.TypeReg
		h.Size = fi.Size()
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		// A file that changes size mid-copy is an error rather than a
		// corrupt archive.
		n, err := io.Copy(tw, io.LimitReader(f, h.Size))
		if err == nil && n != h.Size {
			err = fmt.Errorf("%s changed while being sent", name)
		}
		return err
	}
	return nil
}

// minimalGitDir makes a throwaway repository whose .git the guest gets:
// HEAD's commit with every tree and blob it references, in one pack
// written without compression or delta search (the bytes go straight to a
// local VM; host CPU is the cost that matters), marked shallow so git does
// not look for the parents; HEAD naming the host's branch; an index of
// HEAD's tree with no stat data, which git refreshes on first use.
//
// objects, when not nil, is the list of objects the pack holds (one id a
// line); otherwise it is every object of HEAD.
func minimalGitDir(ctx context.Context, p *Plan, objects []byte) (string, func(), error) {
	tmp, err := os.MkdirTemp("", "banger-ws-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	fail := func(err error) (string, func(), error) {
		cleanup()
		return "", nil, fmt.Errorf("make the guest's .git: %w", err)
	}
	repo := filepath.Join(tmp, "repo")
	branch := p.Branch
	if branch == "" {
		branch = "main"
	}
	if _, err := git(ctx, tmp, "init", "--quiet", "--initial-branch="+branch, repo); err != nil {
		return fail(err)
	}
	gitDir := filepath.Join(repo, ".git")
	os.RemoveAll(filepath.Join(gitDir, "hooks"))
	if p.Head == "" {
		return gitDir, cleanup, nil
	}
	if objects == nil {
		if objects, err = git(ctx, p.Root, "rev-list", "--objects", "--no-walk", p.Head); err != nil {
			return fail(err)
		}
	}
	cmd, err := gitCommand(ctx, p.Root, "-c", "pack.compression=0", "pack-objects",
		"--quiet", "--window=0", "--depth=0", filepath.Join(gitDir, "objects/pack/pack"))
	if err != nil {
		return fail(err)
	}
	cmd.Stdin = bytes.NewReader(objects)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(hosttools.OutputError("git pack-objects", err, out))
	}
	if err := os.WriteFile(filepath.Join(gitDir, "shallow"), []byte(p.Head+"\n"), 0o644); err != nil {
		return fail(err)
	}
	if p.Branch != "" {
		_, err = git(ctx, repo, "update-ref", "refs/heads/"+p.Branch, p.Head)
	} else {
		_, err = git(ctx, repo, "update-ref", "--no-deref", "HEAD", p.Head)
	}
	if err != nil {
		return fail(err)
	}
	if _, err := git(ctx, repo, "read-tree", "HEAD"); err != nil {
		return fail(err)
	}
	return gitDir, cleanup, nil
}

// ExportScript writes the guest's changes as a binary-safe patch on
// stdout, relative to $1 (default HEAD), without touching the guest's
// index or work tree: it stages everything into a temporary index kept
// inside .git (git renames its lock file over the index, which must be on
// the same filesystem). The diff options pin the format the host's
// checker (internal/patchcheck) expects whatever the guest's git config
// says: no renames (a pure rename does not say whether it moves a
// symlink), no colour, no external diff or textconv, a/ and b/ prefixes.
const ExportScript = `set -e
cd ` + GuestDir + `
git rev-parse --git-dir >/dev/null 2>&1 || { echo "no workspace repository at ` + GuestDir + `" >&2; exit 3; }
base=${1:-HEAD}
if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
  if [ "$base" = HEAD ]; then base=$(git hash-object -t tree /dev/null); else
  echo "base commit $base is not known in the guest repository" >&2; exit 3; fi
fi
gitdir=$(git rev-parse --git-dir)
idx=$(mktemp "$gitdir/banger-export-index.XXXXXX")
trap 'rm -f "$idx"' EXIT
if [ -f "$gitdir/index" ]; then cp "$gitdir/index" "$idx"; else rm -f "$idx"; fi
GIT_INDEX_FILE=$idx git add -A .
GIT_INDEX_FILE=$idx git diff --cached --binary --full-index --no-renames --no-color --no-ext-diff --no-textconv --src-prefix=a/ --dst-prefix=b/ "$base" --
`

// Params describes the plan for the daemon.
func (p *Plan) Params() *api.WorkspaceParams {
	return &api.WorkspaceParams{Path: p.Root, Mode: p.Mode, IncludeUntracked: p.IncludeUntracked, Head: p.Head, Files: len(p.Files), Bytes: p.TotalBytes}
}
