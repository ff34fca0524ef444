// Package image manages the boot artifacts VMs are made from: imported
// kernels (vmlinux plus banger's initramfs) and root filesystem images
// (ext4), built from a directory or with debootstrap, or registered as is.
package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/fsutil"
	"banger/internal/hosttools"
	"banger/internal/kernel"
	"banger/internal/model"
	"banger/internal/paths"
	"banger/internal/store"
)

// Service manages kernels and images.
type Service struct {
	Store  *store.Store
	Layout paths.Layout
	Log    *slog.Logger
	// AgentPath is the banger-agent binary put into every initramfs.
	AgentPath string
	// Catalog is the configured catalog (path or URL; "" = built in).
	Catalog string
	// MaxImageBytes caps what a pulled OCI image may expand to (its
	// layers uncompressed, its entries together: 4096 bytes each plus a
	// regular file's size); 0 is
	// oci.DefaultMaxBytes. Config: max_image_size.
	MaxImageBytes int64
	// HTTP downloads catalogs and artifacts (default http.DefaultClient).
	HTTP *http.Client
	// DefaultImage is the configured default_image: what ResolveImage
	// gives for an empty reference ("" = the only image there is).
	DefaultImage string
	// Builder runs builds from an image (--from-image) in a throwaway
	// VM: the VM manager in the daemon, a fake in tests. Nil: such
	// builds are refused.
	Builder BuildRunner

	mu        sync.Mutex
	pending   map[string]bool        // names being imported/built, to refuse concurrent duplicates
	pullLocks map[string]*sync.Mutex // per-name locks: parallel pulls of one name download once
}

// BuildRunner boots a throwaway VM from base, copies p.Copy into it,
// runs p.Run in it, powers it off and, only when every step succeeded,
// calls save with the VM's root disk (a qcow2 overlay over base's
// rootfs). The VM is gone when it returns, whatever happened.
type BuildRunner interface {
	BuildImage(ctx context.Context, base *model.Image, p api.ImageBuildParams, save func(ctx context.Context, rootDisk string) error, progress func(api.Progress)) error
}

// Progress receives named stages.
type Progress func(api.Progress)

func step(p Progress, stage string, f func() error) error {
	start := time.Now()
	err := f()
	if err == nil && p != nil {
		p(api.Progress{Stage: stage, DurationMS: time.Since(start).Milliseconds()})
	}
	return err
}

// reserve marks name (of kind) as being created, so two concurrent
// imports of one name cannot both write its directory.
func (s *Service) reserve(kind, name string) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		s.pending = map[string]bool{}
	}
	key := kind + "/" + name
	if s.pending[key] {
		return nil, api.Errorf(api.CodeAlreadyExists, "%s %q is being created right now", kind, name)
	}
	s.pending[key] = true
	return func() {
		s.mu.Lock()
		delete(s.pending, key)
		s.mu.Unlock()
	}, nil
}

// ImportKernel imports a Debian kernel package or an extracted tree.
func (s *Service) ImportKernel(ctx context.Context, p api.KernelImportParams, progress Progress) (*model.Kernel, error) {
	if err := model.ValidateName(p.Name); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "invalid kernel name: %v", err)
	}
	if p.From == "" {
		return nil, api.Errorf(api.CodeBadRequest, "--from is required: a linux-image .deb or an extracted kernel tree")
	}
	if !filepath.IsAbs(p.From) {
		return nil, api.Errorf(api.CodeBadRequest, "--from must be an absolute path, got %q", p.From)
	}
	if _, err := os.Stat(p.From); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "--from %s: %v", p.From, err)
	}
	release, err := s.reserve("kernel", p.Name)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := s.Store.GetKernel(ctx, p.Name); err == nil {
		return nil, api.Errorf(api.CodeAlreadyExists, "kernel %q already exists", p.Name)
	}
	return s.importKernel(ctx, p.Name, p.From, p.From, progress)
}

// importKernel builds kernel name from a .deb or tree at from and
// records it; the caller holds the name's reservation.
func (s *Service) importKernel(ctx context.Context, name, from, source string, progress Progress) (*model.Kernel, error) {
	p := api.KernelImportParams{Name: name, From: from}
	agentBin, err := os.ReadFile(s.AgentPath)
	if err != nil {
		return nil, fmt.Errorf("read guest agent binary: %w", err)
	}
	dir := s.Layout.KernelDir(p.Name)
	if _, err := os.Stat(dir); err == nil {
		// Leftover of an interrupted import: nothing in the store uses it.
		os.RemoveAll(dir)
	}
	var res kernel.BuildResult
	err = step(progress, "extract_kernel", func() error {
		res, err = kernel.Build(ctx, p.From, dir, agentBin)
		return err
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("import kernel %q: %w", p.Name, err)
	}
	k := &model.Kernel{
		Name: p.Name, Version: res.Version, SHA256: res.VmlinuxSHA256, Source: source,
		Vmlinux:   filepath.Join(dir, kernel.VmlinuxName),
		Initramfs: filepath.Join(dir, kernel.InitramfsName),
	}
	if err := s.Store.CreateKernel(ctx, k); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s.Log.Info("kernel imported", "kernel", k.Name, "version", k.Version, "modules", len(res.Modules))
	return k, nil
}

// Kernels lists kernels.
func (s *Service) Kernels(ctx context.Context) ([]*model.Kernel, error) {
	return s.Store.ListKernels(ctx)
}

// Kernel returns one kernel.
func (s *Service) Kernel(ctx context.Context, name string) (*model.Kernel, error) {
	k, err := s.Store.GetKernel(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(api.CodeNotFound, "kernel %q not found", name)
	}
	return k, err
}

// DeleteKernel removes a kernel no image or VM uses.
func (s *Service) DeleteKernel(ctx context.Context, name string) error {
	k, err := s.Kernel(ctx, name)
	if err != nil {
		return err
	}
	imgs, err := s.Store.ListImages(ctx)
	if err != nil {
		return err
	}
	var users []string
	for _, img := range imgs {
		if img.Kernel == k.Name {
			users = append(users, img.Name)
		}
	}
	if len(users) > 0 {
		return api.Errorf(api.CodeConflict, "kernel %q is used by image(s) %s", k.Name, strings.Join(users, ", "))
	}
	if n, err := s.Store.CountVMsUsingKernel(ctx, k.Name); err != nil {
		return err
	} else if n > 0 {
		return api.Errorf(api.CodeConflict, "kernel %q is used by %d vm(s)", k.Name, n)
	}
	if err := s.Store.DeleteKernel(ctx, k.Name); err != nil {
		return err
	}
	return os.RemoveAll(s.Layout.KernelDir(k.Name))
}

// Initrd returns the initramfs to boot k with: the one made at import,
// followed by a small archive holding the current agent as /init. The
// kernel unpacks concatenated archives in order, so the current agent
// always wins, even for kernels imported by an older banger.
//
// The result is cached next to the kernel with its sha256 beside it
// (initrd-AGENT.img.sha256, written after the image): a cached copy is
// reused only when its content still has that hash, so a file a crash
// truncated or anything else changed is rebuilt, never booted.
func (s *Service) Initrd(ctx context.Context, k *model.Kernel) (string, error) {
	return Initrd(s.AgentPath)(ctx, k)
}

// Initrd returns what Service.Initrd does for the agent at agentPath,
// without a Service: the VM manager is made before the image service
// (which takes the manager as its BuildRunner).
func Initrd(agentPath string) func(ctx context.Context, k *model.Kernel) (string, error) {
	return func(ctx context.Context, k *model.Kernel) (string, error) { return initrd(agentPath, k) }
}

func initrd(agentPath string, k *model.Kernel) (string, error) {
	agentBin, err := os.ReadFile(agentPath)
	if err != nil {
		return "", fmt.Errorf("read guest agent binary: %w", err)
	}
	sum := sha256.Sum256(agentBin)
	path := filepath.Join(filepath.Dir(k.Initramfs), "initrd-"+hex.EncodeToString(sum[:6])+".img")
	if cachedOK(path) {
		return path, nil
	}
	base, err := os.ReadFile(k.Initramfs)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	buf.Write(base)
	for buf.Len()%4 != 0 {
		buf.WriteByte(0)
	}
	if err := kernel.WriteInitramfs(&buf, []kernel.InitramfsFile{{Path: "init", Mode: 0o755, Data: agentBin}}); err != nil {
		return "", err
	}
	os.Remove(path + hashSuffix) // never a hash that describes another file
	if err := fsutil.AtomicWriteFile(path, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	h := sha256.Sum256(buf.Bytes())
	if err := fsutil.AtomicWriteFile(path+hashSuffix, []byte(hex.EncodeToString(h[:])+"\n"), 0o644); err != nil {
		return "", err
	}
	// Older agent variants are useless now.
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(k.Initramfs), "initrd-*.img"))
	for _, o := range old {
		if o != path {
			os.Remove(o)
			os.Remove(o + hashSuffix)
		}
	}
	return path, nil
}

// hashSuffix names the file holding a cached artifact's sha256.
const hashSuffix = ".sha256"

// cachedOK reports whether path exists with the sha256 recorded beside
// it when it was made.
func cachedOK(path string) bool {
	want, err := os.ReadFile(path + hashSuffix)
	if err != nil {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == strings.TrimSpace(string(want))
}

// Images lists images.
func (s *Service) Images(ctx context.Context) ([]*model.Image, error) { return s.Store.ListImages(ctx) }

// Image returns one image.
func (s *Service) Image(ctx context.Context, name string) (*model.Image, error) {
	img, err := s.Store.GetImage(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, api.Errorf(api.CodeNotFound, "image %q not found", name)
	}
	return img, err
}

// ResolveImage returns the image a VM create names: ref, else the
// default image, else the only image there is. A ref not installed yet
// (an OCI reference or a catalog name) is pulled, with its kernel;
// parallel callers that need the same one wait for a single download.
// The daemon calls it before it asks the VM manager for a VM.
func (s *Service) ResolveImage(ctx context.Context, ref string, progress Progress) (*model.Image, error) {
	if ref == "" {
		ref = s.DefaultImage
	}
	if ref == "" {
		imgs, err := s.Store.ListImages(ctx)
		if err != nil {
			return nil, err
		}
		switch len(imgs) {
		case 0:
			return nil, api.Errorf(api.CodeNotFound, "no image available: build one with `banger image build` or register one")
		case 1:
			return imgs[0], nil
		default:
			return nil, api.Errorf(api.CodeBadRequest, "several images exist; choose one with --image or set default_image in the config")
		}
	}
	name, err := s.EnsureImage(ctx, ref, progress)
	if err != nil {
		return nil, err
	}
	return s.Image(ctx, name)
}

// DeleteImage removes an image no VM or snapshot uses.
func (s *Service) DeleteImage(ctx context.Context, name string) error {
	img, err := s.Image(ctx, name)
	if err != nil {
		return err
	}
	if n, err := s.Store.CountVMsUsingImage(ctx, img.Name); err != nil {
		return err
	} else if n > 0 {
		return api.Errorf(api.CodeConflict, "image %q is used by %d vm(s); delete them first", img.Name, n)
	}
	// A snapshot's root disk is a qcow2 over the image's root filesystem.
	if n, err := s.Store.CountSnapshotsUsingImage(ctx, img.Name); err != nil {
		return err
	} else if n > 0 {
		return api.Errorf(api.CodeConflict, "image %q is used by %d snapshot(s); remove them first (banger snapshot rm)", img.Name, n)
	}
	if err := s.Store.DeleteImage(ctx, img.Name); err != nil {
		return err
	}
	if strings.HasPrefix(img.Rootfs, s.Layout.ImageDir(img.Name)+string(os.PathSeparator)) {
		return os.RemoveAll(s.Layout.ImageDir(img.Name))
	}
	return nil
}

// resolveKernel picks the kernel for a new image: the named one, or the
// only one there is.
func (s *Service) resolveKernel(ctx context.Context, name string) (*model.Kernel, error) {
	if name != "" {
		return s.Kernel(ctx, name)
	}
	ks, err := s.Store.ListKernels(ctx)
	if err != nil {
		return nil, err
	}
	switch len(ks) {
	case 0:
		return nil, api.Errorf(api.CodeNotFound, "no kernel imported yet: run `banger kernel import NAME --from linux-image.deb` first")
	case 1:
		return ks[0], nil
	}
	return nil, api.Errorf(api.CodeBadRequest, "several kernels exist; choose one with --kernel")
}

// Register records an existing ext4 file as an image, in place.
func (s *Service) Register(ctx context.Context, p api.ImageRegisterParams) (*model.Image, error) {
	if err := model.ValidateName(p.Name); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "invalid image name: %v", err)
	}
	if p.Rootfs == "" || !filepath.IsAbs(p.Rootfs) {
		return nil, api.Errorf(api.CodeBadRequest, "--rootfs must be an absolute path to an ext4 file")
	}
	fi, err := os.Stat(p.Rootfs)
	if err != nil || !fi.Mode().IsRegular() {
		return nil, api.Errorf(api.CodeBadRequest, "--rootfs %s is not a regular file", p.Rootfs)
	}
	if err := checkExt4(p.Rootfs); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "--rootfs %s: %v", p.Rootfs, err)
	}
	k, err := s.resolveKernel(ctx, p.Kernel)
	if err != nil {
		return nil, err
	}
	img := &model.Image{Name: p.Name, Rootfs: p.Rootfs, Kernel: k.Name, SizeBytes: fi.Size(), Source: "register:" + p.Rootfs}
	if err := s.Store.CreateImage(ctx, img); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, api.Errorf(api.CodeAlreadyExists, "image %q already exists", p.Name)
		}
		return nil, err
	}
	return img, nil
}

// checkExt4 looks for the ext2/3/4 superblock magic.
func checkExt4(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 1024+0x38); err != nil {
		return fmt.Errorf("not an ext4 image: %w", err)
	}
	if magic[0] != 0x53 || magic[1] != 0xEF {
		return errors.New("not an ext4 image (no ext superblock)")
	}
	return nil
}

// Build makes an ext4 image from a directory or with debootstrap.
func (s *Service) Build(ctx context.Context, p api.ImageBuildParams, progress Progress) (*model.Image, error) {
	if err := model.ValidateName(p.Name); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "invalid image name: %v", err)
	}
	sources := 0
	for _, s := range []string{p.FromDir, p.Debootstrap, p.FromImage} {
		if s != "" {
			sources++
		}
	}
	if sources != 1 {
		return nil, api.Errorf(api.CodeBadRequest, "give exactly one of --from-dir, --debootstrap or --from-image")
	}
	if p.FromImage == "" && (len(p.Run) > 0 || len(p.Copy) > 0) {
		return nil, api.Errorf(api.CodeBadRequest, "--run and --copy need --from-image")
	}
	if p.FromImage != "" {
		return s.buildFromImage(ctx, p, progress)
	}
	size := int64(4 << 30)
	if p.Size != "" {
		var err error
		if size, err = config.ParseSize(p.Size); err != nil {
			return nil, api.Errorf(api.CodeBadRequest, "--size: %v", err)
		}
	}
	if p.FromDir != "" {
		if !filepath.IsAbs(p.FromDir) {
			return nil, api.Errorf(api.CodeBadRequest, "--from-dir must be an absolute path")
		}
		if fi, err := os.Stat(p.FromDir); err != nil || !fi.IsDir() {
			return nil, api.Errorf(api.CodeBadRequest, "--from-dir %s is not a directory", p.FromDir)
		}
	}
	if p.Debootstrap != "" && os.Geteuid() != 0 {
		return nil, api.Errorf(api.CodeBadRequest, "--debootstrap needs root (debootstrap creates device nodes and chroots)")
	}
	k, err := s.resolveKernel(ctx, p.Kernel)
	if err != nil {
		return nil, err
	}
	if _, err := s.Store.GetImage(ctx, p.Name); err == nil {
		return nil, api.Errorf(api.CodeAlreadyExists, "image %q already exists", p.Name)
	}
	release, err := s.reserve("image", p.Name)
	if err != nil {
		return nil, err
	}
	defer release()

	source := "dir:" + p.FromDir
	if p.Debootstrap != "" {
		source = "debootstrap:" + p.Debootstrap
	}
	return s.install(ctx, p.Name, k.Name, source, func(dir string) (string, error) {
		src := p.FromDir
		if p.Debootstrap != "" {
			src = filepath.Join(dir, "tree")
			defer os.RemoveAll(src)
			if err := step(progress, "debootstrap", func() error { return s.debootstrap(ctx, p, src) }); err != nil {
				return "", err
			}
		}
		rootfs := filepath.Join(dir, "rootfs.ext4")
		return rootfs, step(progress, "mkfs_ext4", func() error { return mkfsFromDir(ctx, src, rootfs, size) })
	})
}

// mkfsFromDir turns a directory into an ext4 image without mounting
// anything; out appears only complete and synced.
func mkfsFromDir(ctx context.Context, dir, out string, size int64) error {
	f, err := fsutil.CreateAtomic(out, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	if err := f.Truncate(size); err != nil {
		return err
	}
	if b, err := hosttools.Run(ctx, hosttools.MkfsExt4, "-q", "-F", "-L", "root", "-d", dir,
		"-E", "lazy_itable_init=1,lazy_journal_init=1", f.TempPath()); err != nil {
		if msg := string(b); strings.Contains(msg, "Could not allocate block") || strings.Contains(msg, "No space") {
			return fmt.Errorf("mkfs.ext4: the tree does not fit in %d MiB; pass a larger --size", size>>20)
		}
		return err
	}
	return f.Commit()
}

func (s *Service) debootstrap(ctx context.Context, p api.ImageBuildParams, target string) error {
	include := []string{"systemd-sysv", "ca-certificates"}
	include = append(include, p.Packages...)
	args := []string{"--variant=minbase", "--include=" + strings.Join(include, ","), p.Debootstrap, target}
	if p.Mirror != "" {
		args = append(args, p.Mirror)
	}
	if _, err := hosttools.Run(ctx, hosttools.Debootstrap, args...); err != nil {
		return fmt.Errorf("debootstrap %s: %w", p.Debootstrap, err)
	}
	return nil
}
