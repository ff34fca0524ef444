package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/untar"
)

const cpHelp = `Copy files and directories between the host and a running VM, like
docker cp. Exactly one of SRC and DST is NAME:/PATH, an absolute path in
the guest of the VM NAME.

  banger vm cp ./build dev:/root/        into /root/build (DST exists: SRC goes inside it)
  banger vm cp ./a.txt dev:/root/b.txt   a file copied under a new name
  banger vm cp dev:/var/log ./logs       out: ./logs/log, or ./logs if it did not exist
  banger vm cp dev:/etc/hosts -          a tar stream of the path on stdout
  tar c . | banger vm cp - dev:/srv      a tar stream from stdin, extracted under /srv

When DST exists and is a directory, SRC is copied inside it under its own
name; otherwise DST names the copy, and its parent must exist. Directories
are copied with everything below them; permission bits and symlinks are
kept (a symlink is copied as a symlink, never followed; set-id bits are
not kept on the host). What comes out of a guest is extracted confined to
DST: entries that would land outside it are refused. Progress is shown on
a terminal. Sizes are capped by the daemon's file_max_mib (default 4096).`

// cpStage names the transfer in progress output.
const cpStage = "copy"

// guestRef splits "NAME:/path"; ok is false for a host path.
func guestRef(arg string) (vm, p string, ok bool) {
	i := strings.IndexByte(arg, ':')
	if i <= 0 || strings.Contains(arg[:i], "/") {
		return "", "", false
	}
	return arg[:i], arg[i+1:], true
}

func (a *App) vmCpCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files between the host and a VM (NAME:/PATH on one side, - for a tar stream)",
		Long:  cpHelp,
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.cp(cmd.Context(), args[0], args[1])
		},
	}
	c.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return nil, cobra.ShellCompDirectiveDefault
	}
	return c
}

func (a *App) cp(ctx context.Context, src, dst string) error {
	svm, sp, sIn := guestRef(src)
	dvm, dp, dIn := guestRef(dst)
	switch {
	case sIn && dIn:
		return api.Errorf(api.CodeBadRequest, "both %s and %s name a VM: one side must be a host path (or -)", src, dst)
	case !sIn && !dIn:
		return api.Errorf(api.CodeBadRequest, "neither %s nor %s names a VM: write NAME:/PATH on one side", src, dst)
	}
	gp := sp
	if dIn {
		gp = dp
	}
	clean, err := api.CheckGuestPath(gp)
	if err != nil {
		return api.Errorf(api.CodeBadRequest, "guest path: %v", err)
	}
	// A trailing slash says "a directory": kept for the checks below.
	if strings.HasSuffix(gp, "/") && clean != "/" {
		clean += "/"
	}
	if err := a.ensureDaemon(ctx); err != nil {
		return err
	}
	if sIn {
		return a.cpOut(ctx, svm, clean, dst)
	}
	return a.cpIn(ctx, src, dvm, clean)
}

// countingReader reports the bytes read through it.
type countingReader struct {
	r     io.Reader
	n     int64
	total int64
	event func(api.Progress)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 && c.event != nil {
		c.event(api.Progress{Stage: cpStage, Current: c.n, Total: max(c.total, c.n)})
	}
	return n, err
}

// cpIn copies a host path (or a tar stream on stdin) into a VM.
func (a *App) cpIn(ctx context.Context, src, vm, dst string) error {
	pr := a.progress(false)
	defer pr.Done()
	start := time.Now()
	finish := func(n int64) {
		pr.Event(api.Progress{Stage: cpStage, Current: n, Total: n, DurationMS: max(1, time.Since(start).Milliseconds())})
	}
	dirOnly := strings.HasSuffix(dst, "/")
	dst = strings.TrimSuffix(dst, "/")
	if dst == "" {
		dst = "/"
	}
	if src == "-" {
		if isTTY(a.Stdin) {
			return api.Errorf(api.CodeBadRequest, "refusing to read a tar stream from a terminal: pipe one in")
		}
		fi, err := a.client.FileStat(ctx, vm, dst)
		if err != nil {
			return err
		}
		if fi.Type != api.FileTypeDir {
			return api.Errorf(api.CodeBadRequest, "%s:%s is a %s: a tar stream goes into a directory", vm, dst, fi.Type)
		}
		cr := &countingReader{r: a.Stdin, event: pr.Event}
		if _, err := a.client.ArchiveWrite(ctx, vm, dst, cr); err != nil {
			return err
		}
		finish(cr.n)
		return nil
	}
	sfi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	// Where the copy goes: inside an existing directory, or as DST.
	dir, name := dst, filepath.Base(filepath.Clean(src))
	gfi, err := a.followGuestLinks(ctx, vm, dst)
	var ae *api.Error
	switch {
	case err == nil && gfi.Type == api.FileTypeDir:
	case err == nil:
		if dirOnly {
			return api.Errorf(api.CodeBadRequest, "%s:%s is a %s, not a directory", vm, dst, gfi.Type)
		}
		if sfi.IsDir() {
			return api.Errorf(api.CodeBadRequest, "cannot copy directory %s onto %s:%s, a %s", src, vm, dst, gfi.Type)
		}
		dir, name = path.Dir(dst), path.Base(dst)
	case errors.As(err, &ae) && ae.Code == api.CodeNotFound:
		if dirOnly {
			return api.Errorf(api.CodeNotFound, "%s:%s/ does not exist (the destination directory must exist)", vm, dst)
		}
		dir, name = path.Dir(dst), path.Base(dst)
		pfi, err := a.client.FileStat(ctx, vm, dir)
		if err != nil {
			return err
		}
		if pfi.Type != api.FileTypeDir {
			return api.Errorf(api.CodeBadRequest, "%s:%s is a %s, not a directory", vm, dir, pfi.Type)
		}
	default:
		return err
	}
	if name == "/" || name == "." || name == ".." {
		return api.Errorf(api.CodeBadRequest, "cannot tell what to name the copy of %s", src)
	}
	total, err := treeSize(src)
	if err != nil {
		return err
	}
	rd, wr := io.Pipe()
	go func() { wr.CloseWithError(writeTree(ctx, wr, src, name)) }()
	cr := &countingReader{r: rd, total: total, event: pr.Event}
	_, err = a.client.ArchiveWrite(ctx, vm, dir, cr)
	rd.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		return err
	}
	finish(cr.n)
	return nil
}

// followGuestLinks stats a guest path, following symlinks (a few hops),
// so that a DST that links to a directory receives the copy inside it, as
// docker cp does. Dangling or looping links are described as links.
func (a *App) followGuestLinks(ctx context.Context, vm, p string) (api.FileInfo, error) {
	fi, err := a.client.FileStat(ctx, vm, p)
	for hops := 0; err == nil && fi.Type == api.FileTypeSymlink && hops < 8; hops++ {
		t := fi.Target
		if !path.IsAbs(t) {
			t = path.Join(path.Dir(fi.Path), t)
		}
		next, err := a.client.FileStat(ctx, vm, t)
		if err != nil {
			break
		}
		if next.Type != api.FileTypeSymlink {
			if next.Type == api.FileTypeDir {
				fi.Type = api.FileTypeDir
			}
			break
		}
		fi.Target, fi.Path = next.Target, next.Path
	}
	return fi, err
}

// treeSize estimates the tar stream of root: contents plus a header each.
func treeSize(root string) (int64, error) {
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		total += 512
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += (fi.Size() + 511) &^ 511
			}
		}
		return nil
	})
	return total + 1024, err
}

// writeTree writes root as a tar stream whose entries are named from
// name; symlinks are written as symlinks, files other than regular ones,
// directories and symlinks are skipped.
func writeTree(ctx context.Context, w io.Writer, root, name string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		var link string
		switch {
		case fi.Mode().IsRegular(), fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return nil
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		h.Name = path.Join(name, filepath.ToSlash(rel))
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.Copy(tw, io.LimitReader(f, h.Size))
		if err == nil && n < h.Size {
			err = fmt.Errorf("%s shrank while it was copied", p)
		}
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// cpOut copies a guest path out of a VM, to a host path or as a tar
// stream on stdout.
func (a *App) cpOut(ctx context.Context, vm, src, dst string) error {
	src = strings.TrimSuffix(src, "/")
	if src == "" {
		return api.Errorf(api.CodeBadRequest, "copying the guest's / is not supported: name a directory below it")
	}
	if dst == "-" {
		if isTTY(a.Stdout) {
			return api.Errorf(api.CodeBadRequest, "refusing to write a tar stream to a terminal: redirect stdout")
		}
		rc, err := a.client.ArchiveRead(ctx, vm, src)
		if err != nil {
			return err
		}
		defer rc.Close()
		pr := a.progress(false)
		defer pr.Done()
		start := time.Now()
		cr := &countingReader{r: rc, event: pr.Event}
		n, err := io.Copy(a.Stdout, cr)
		if err != nil {
			return err
		}
		pr.Event(api.Progress{Stage: cpStage, Current: n, Total: n, DurationMS: max(1, time.Since(start).Milliseconds())})
		return nil
	}
	sfi, err := a.client.FileStat(ctx, vm, src)
	if err != nil {
		return err
	}
	top := path.Base(src)
	dirOnly := strings.HasSuffix(dst, "/")
	dir, name := dst, top
	hfi, err := os.Stat(dst)
	switch {
	case err == nil && hfi.IsDir():
	case err == nil:
		if dirOnly {
			return fmt.Errorf("%s is not a directory", dst)
		}
		if sfi.Type == api.FileTypeDir {
			return fmt.Errorf("cannot copy directory %s:%s onto %s, which is not a directory", vm, src, dst)
		}
		dir, name = filepath.Dir(dst), filepath.Base(dst)
	case errors.Is(err, fs.ErrNotExist):
		if dirOnly {
			return fmt.Errorf("%s does not exist (the destination directory must exist)", dst)
		}
		dir, name = filepath.Dir(dst), filepath.Base(dst)
		if di, err := os.Stat(dir); err != nil {
			return fmt.Errorf("copy to %s: %w", dst, err)
		} else if !di.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
	default:
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	rc, err := a.client.ArchiveRead(ctx, vm, src)
	if err != nil {
		return err
	}
	defer rc.Close()
	pr := a.progress(false)
	defer pr.Done()
	start := time.Now()
	var total int64
	if sfi.Type == api.FileTypeFile {
		total = sfi.Size + 1536
	}
	cr := &countingReader{r: rc, total: total, event: pr.Event}
	if _, err := extractGuestTar(ctx, cr, dir, top, name); err != nil {
		return fmt.Errorf("copy %s:%s to %s: %w", vm, src, dst, err)
	}
	pr.Event(api.Progress{Stage: cpStage, Current: cr.n, Total: cr.n, DurationMS: max(1, time.Since(start).Milliseconds())})
	return nil
}

// extractGuestTar extracts a tar stream a guest wrote under dir, confined
// to it (untar): every entry must be top or lie below it, and is renamed
// to lie below name instead. Symlinks are extracted as symlinks and never
// followed; set-id bits and owners are not kept.
func extractGuestTar(ctx context.Context, r io.Reader, dir, top, name string) (untar.Stats, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(renameTar(r, pw, top, name)) }()
	st, err := untar.Extract(ctx, pr, dir, untar.Options{})
	pr.CloseWithError(io.ErrClosedPipe)
	return st, err
}

// renameTar copies a tar stream, refusing entries that are not top or
// below it and renaming top to name.
func renameTar(r io.Reader, w io.Writer, top, name string) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		clean := path.Clean(h.Name)
		if clean != top && !strings.HasPrefix(clean, top+"/") {
			return fmt.Errorf("the guest sent %q, which is not below %q", h.Name, top)
		}
		h.Name = name + clean[len(top):]
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.Typeflag == tar.TypeLink {
			lc := path.Clean(h.Linkname)
			if lc != top && !strings.HasPrefix(lc, top+"/") {
				return fmt.Errorf("the guest sent a hard link to %q, which is not below %q", h.Linkname, top)
			}
			h.Linkname = name + lc[len(top):]
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
