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
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"banger/internal/api"
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
	cmd, err := hosttools.Command(ctx, hosttools.Git, append([]string{"-C", dir}, args...)...)
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
func WriteTar(ctx context.Context, p *Plan, w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, d := range p.Submodules {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return err
		}
	}
	for _, f := range p.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := addFile(tw, filepath.Join(p.Root, filepath.FromSlash(f.Path)), f.Path); err != nil {
			return err
		}
	}
	gitDir, cleanup, err := minimalGitDir(ctx, p)
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
	return tw.Close()
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
func minimalGitDir(ctx context.Context, p *Plan) (string, func(), error) {
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
	objects, err := git(ctx, p.Root, "rev-list", "--objects", "--no-walk", p.Head)
	if err != nil {
		return fail(err)
	}
	cmd, err := hosttools.Command(ctx, hosttools.Git, "-C", p.Root, "-c", "pack.compression=0", "pack-objects",
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
// the same filesystem).
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
GIT_INDEX_FILE=$idx git diff --cached --binary --full-index "$base" --
`

// Params describes the plan for the daemon.
func (p *Plan) Params() *api.WorkspaceParams {
	return &api.WorkspaceParams{Path: p.Root, Mode: p.Mode, IncludeUntracked: p.IncludeUntracked, Head: p.Head, Files: len(p.Files), Bytes: p.TotalBytes}
}
