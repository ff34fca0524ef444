package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"banger/internal/api"
	"banger/internal/catalog"
	"banger/internal/model"
	"banger/internal/oci"
	"banger/internal/store"
)

// nameLock serialises pulls of one name: a second caller waits for the
// first and then finds the artifact installed.
func (s *Service) nameLock(key string) func() {
	s.mu.Lock()
	if s.pullLocks == nil {
		s.pullLocks = map[string]*sync.Mutex{}
	}
	l := s.pullLocks[key]
	if l == nil {
		l = &sync.Mutex{}
		s.pullLocks[key] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func (s *Service) httpClient() *http.Client {
	if s.HTTP != nil {
		return s.HTTP
	}
	return http.DefaultClient
}

// LoadCatalog reads the catalog at src, or the configured one when src
// is empty.
func (s *Service) LoadCatalog(ctx context.Context, src string) (*catalog.Catalog, error) {
	if src == "" {
		src = s.Catalog
	}
	c, err := catalog.Load(ctx, src, s.httpClient())
	if err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	return c, nil
}

// catalogs loads each catalog one operation needs once: an ensure that
// checks a name and then pulls it, and a pull that also pulls its kernel,
// read an http catalog_url a single time.
type catalogs struct {
	s      *Service
	loaded map[string]*catalog.Catalog
}

func (s *Service) newCatalogs() *catalogs {
	return &catalogs{s: s, loaded: map[string]*catalog.Catalog{}}
}

// get is LoadCatalog, remembered for this operation.
func (c *catalogs) get(ctx context.Context, src string) (*catalog.Catalog, error) {
	if src == "" {
		src = c.s.Catalog
	}
	if cat, ok := c.loaded[src]; ok {
		return cat, nil
	}
	cat, err := c.s.LoadCatalog(ctx, src)
	if err != nil {
		return nil, err
	}
	c.loaded[src] = cat
	return cat, nil
}

func (s *Service) downloads() string { return filepath.Join(s.Layout.State, "downloads") }

// fetch downloads a catalog artifact into the download cache, reporting
// bytes under stage.
func (s *Service) fetch(ctx context.Context, stage, url, sha string, size int64, progress Progress) (string, error) {
	if err := os.MkdirAll(s.downloads(), 0o700); err != nil {
		return "", err
	}
	start := time.Now()
	f := &catalog.Fetcher{Client: s.httpClient()}
	if progress != nil {
		f.Progress = func(cur, total int64) { progress(api.Progress{Stage: stage, Current: cur, Total: total}) }
	}
	path, err := f.Fetch(ctx, url, sha, size, s.downloads())
	if err != nil {
		return "", err
	}
	if progress != nil {
		progress(api.Progress{Stage: stage, DurationMS: time.Since(start).Milliseconds(), Current: size, Total: size})
	}
	return path, nil
}

func names[E any](entries []E, name func(E) string) string {
	var out []string
	for _, e := range entries {
		out = append(out, name(e))
	}
	sort.Strings(out)
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// PullKernel installs a kernel from the catalog. Pulling a kernel that is
// already imported is a no-op success; parallel pulls of one name
// download it once.
func (s *Service) PullKernel(ctx context.Context, p api.KernelPullParams, progress Progress) (*api.PullResult, error) {
	return s.pullKernel(ctx, p, s.newCatalogs(), progress)
}

func (s *Service) pullKernel(ctx context.Context, p api.KernelPullParams, cats *catalogs, progress Progress) (*api.PullResult, error) {
	if err := model.ValidateName(p.Name); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "invalid kernel name: %v", err)
	}
	defer s.nameLock("kernel/" + p.Name)()
	if k, err := s.Store.GetKernel(ctx, p.Name); err == nil {
		return &api.PullResult{Name: k.Name, AlreadyPresent: true, Source: k.Source}, nil
	}
	cat, err := cats.get(ctx, p.Catalog)
	if err != nil {
		return nil, err
	}
	e, ok := cat.Kernel(p.Name)
	if !ok {
		return nil, api.Errorf(api.CodeNotFound, "kernel %q is not in the catalog (available: %s)", p.Name,
			names(cat.Kernels, func(e catalog.KernelEntry) string { return e.Name }))
	}
	release, err := s.reserve("kernel", p.Name)
	if err != nil {
		return nil, err
	}
	defer release()
	file, err := s.fetch(ctx, "download_kernel", e.URL, e.SHA256, e.Size, progress)
	if err != nil {
		return nil, fmt.Errorf("pull kernel %q: %w", p.Name, err)
	}
	defer os.Remove(file)
	// kernel.Build reads a .deb and a tar.zst alike.
	source := fmt.Sprintf("catalog:%s@sha256:%s", e.URL, e.SHA256)
	k, err := s.importKernel(ctx, p.Name, file, source, progress)
	if err != nil {
		return nil, err
	}
	return &api.PullResult{Name: k.Name, Source: k.Source}, nil
}

// EnsureKernel makes sure kernel name is imported, pulling it from the
// catalog when it is not.
func (s *Service) EnsureKernel(ctx context.Context, name, catalogSrc string, progress Progress) error {
	return s.ensureKernel(ctx, name, catalogSrc, s.newCatalogs(), progress)
}

func (s *Service) ensureKernel(ctx context.Context, name, catalogSrc string, cats *catalogs, progress Progress) error {
	if _, err := s.Store.GetKernel(ctx, name); err == nil {
		return nil
	}
	_, err := s.pullKernel(ctx, api.KernelPullParams{Name: name, Catalog: catalogSrc}, cats, progress)
	return err
}

// IsOCIRef tells a registry reference (it has a registry/repository path,
// a tag or a digest) from a catalog name.
func IsOCIRef(ref string) bool { return strings.ContainsAny(ref, "/:@") }

// PullImage installs an image from the catalog (a name) or from an OCI
// registry (a reference). Pulling a name that exists is a no-op success;
// parallel pulls of one name do the work once.
func (s *Service) PullImage(ctx context.Context, p api.ImagePullParams, progress Progress) (*api.PullResult, error) {
	return s.pullImage(ctx, p, s.newCatalogs(), progress)
}

func (s *Service) pullImage(ctx context.Context, p api.ImagePullParams, cats *catalogs, progress Progress) (*api.PullResult, error) {
	if p.Ref == "" {
		return nil, api.Errorf(api.CodeBadRequest, "image pull needs a catalog name or a registry reference")
	}
	if IsOCIRef(p.Ref) {
		return s.pullOCI(ctx, p, cats, progress)
	}
	name := p.Name
	if name == "" {
		name = p.Ref
	}
	if err := model.ValidateName(name); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "invalid image name: %v", err)
	}
	defer s.nameLock("image/" + name)()
	if img, err := s.Store.GetImage(ctx, name); err == nil {
		return &api.PullResult{Name: img.Name, AlreadyPresent: true, Source: img.Source}, nil
	}
	cat, err := cats.get(ctx, p.Catalog)
	if err != nil {
		return nil, err
	}
	e, ok := cat.Image(p.Ref)
	if !ok {
		return nil, api.Errorf(api.CodeNotFound, "image %q is not in the catalog (available: %s)", p.Ref,
			names(cat.Images, func(e catalog.ImageEntry) string { return e.Name }))
	}
	kernel := e.Kernel
	if p.Kernel != "" {
		kernel = p.Kernel
	}
	if err := s.ensureKernel(ctx, kernel, p.Catalog, cats, progress); err != nil {
		return nil, fmt.Errorf("pull image %q: kernel %q: %w", name, kernel, err)
	}
	release, err := s.reserve("image", name)
	if err != nil {
		return nil, err
	}
	defer release()
	file, err := s.fetch(ctx, "download_image", e.URL, e.SHA256, e.Size, progress)
	if err != nil {
		return nil, fmt.Errorf("pull image %q: %w", name, err)
	}
	defer os.Remove(file)
	source := fmt.Sprintf("catalog:%s@sha256:%s", e.URL, e.SHA256)
	img, err := s.install(ctx, name, kernel, source, func(dir string) (string, error) {
		var rootfs string
		err := step(progress, "unpack_image", func() error {
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			defer f.Close()
			_, rootfs, err = catalog.ReadBundle(ctx, f, dir)
			return err
		})
		return rootfs, err
	})
	if err != nil {
		return nil, fmt.Errorf("pull image %q: %w", name, err)
	}
	return &api.PullResult{Name: img.Name, Source: img.Source}, nil
}

// install makes the image directory, lets fill put a rootfs into it and
// records the image; on failure nothing is left.
func (s *Service) install(ctx context.Context, name, kernel, source string, fill func(dir string) (string, error)) (*model.Image, error) {
	dir := s.Layout.ImageDir(name)
	os.RemoveAll(dir) // leftover of an interrupted pull: no row uses it
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	rootfs, err := fill(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(rootfs)
	if err != nil {
		return nil, err
	}
	img := &model.Image{Name: name, Rootfs: rootfs, Kernel: kernel, SizeBytes: fi.Size(), Source: source}
	if err := s.Store.CreateImage(context.WithoutCancel(ctx), img); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, api.Errorf(api.CodeAlreadyExists, "image %q already exists", name)
		}
		return nil, err
	}
	ok = true
	s.Log.Info("image installed", "image", name, "kernel", kernel, "source", source)
	return img, nil
}

func (s *Service) pullOCI(ctx context.Context, p api.ImagePullParams, cats *catalogs, progress Progress) (*api.PullResult, error) {
	name := p.Name
	if name == "" {
		var err error
		if name, err = oci.DefaultName(p.Ref); err != nil {
			return nil, api.Errorf(api.CodeBadRequest, "%v", err)
		}
	}
	if err := model.ValidateName(name); err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "invalid image name %q: %v (choose one with --name)", name, err)
	}
	defer s.nameLock("image/" + name)()
	if img, err := s.Store.GetImage(ctx, name); err == nil {
		return &api.PullResult{Name: img.Name, AlreadyPresent: true, Source: img.Source}, nil
	}
	kernel, err := s.kernelFor(ctx, p.Kernel, p.Catalog, cats, progress)
	if err != nil {
		return nil, err
	}
	release, err := s.reserve("image", name)
	if err != nil {
		return nil, err
	}
	defer release()
	var img oci.Image
	var info oci.Info
	err = step(progress, "resolve", func() error {
		img, info, err = oci.Resolve(ctx, p.Ref, oci.PullOptions{})
		return err
	})
	if err != nil {
		return nil, api.Errorf(api.CodeBadRequest, "%v", err)
	}
	source := "oci:" + info.Pinned
	res, err := s.install(ctx, name, kernel, source, func(dir string) (string, error) {
		tree := filepath.Join(dir, "tree")
		defer os.RemoveAll(tree)
		var t *oci.Tree
		err := step(progress, "pull_layers", func() error {
			var cb func(cur, total int64)
			if progress != nil {
				cb = func(cur, total int64) { progress(api.Progress{Stage: "pull_layers", Current: cur, Total: total}) }
			}
			var err error
			t, err = oci.Unpack(ctx, img, tree, oci.UnpackOptions{Progress: cb, MaxBytes: s.MaxImageBytes})
			return err
		})
		if err != nil {
			return "", err
		}
		rootfs := filepath.Join(dir, "rootfs.ext4")
		err = step(progress, "mkfs_ext4", func() error { return oci.BuildExt4(ctx, tree, t, rootfs, 0) })
		return rootfs, err
	})
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", p.Ref, err)
	}
	return &api.PullResult{Name: res.Name, Source: res.Source}, nil
}

// kernelFor picks the kernel of a pulled OCI image: the one asked for
// (pulled from the catalog when missing), else the only one imported.
func (s *Service) kernelFor(ctx context.Context, name, catalogSrc string, cats *catalogs, progress Progress) (string, error) {
	if name != "" {
		if err := s.ensureKernel(ctx, name, catalogSrc, cats, progress); err != nil {
			return "", err
		}
		return name, nil
	}
	ks, err := s.Store.ListKernels(ctx)
	if err != nil {
		return "", err
	}
	switch len(ks) {
	case 0:
		return "", api.Errorf(api.CodeBadRequest, "no kernel imported: pass --kernel NAME (a catalog kernel is pulled, e.g. debian-bookworm) or run `banger kernel pull debian-bookworm` first")
	case 1:
		return ks[0].Name, nil
	default:
		return "", api.Errorf(api.CodeBadRequest, "several kernels exist; choose one with --kernel")
	}
}

// EnsureImage makes sure image ref is installed, pulling it from the
// catalog (a name) or a registry (a reference), together with its
// kernel; it returns the image's name. It is how `vm create --image X`
// gets a missing image.
func (s *Service) EnsureImage(ctx context.Context, ref string, progress Progress) (string, error) {
	name := ref
	if IsOCIRef(ref) {
		var err error
		if name, err = oci.DefaultName(ref); err != nil {
			return "", api.Errorf(api.CodeBadRequest, "%v", err)
		}
	}
	cats := s.newCatalogs()
	if img, err := s.Store.GetImage(ctx, name); err == nil {
		return img.Name, s.ensureKernel(ctx, img.Kernel, "", cats, progress)
	}
	if !IsOCIRef(ref) {
		// Only names the catalog knows are pulled; anything else is
		// simply not found.
		cat, err := cats.get(ctx, "")
		if err != nil {
			return "", api.Errorf(api.CodeNotFound, "image %q not found (and the catalog could not be read: %v)", ref, err)
		}
		if _, ok := cat.Image(ref); !ok {
			return "", api.Errorf(api.CodeNotFound, "image %q not found, here or in the catalog", ref)
		}
	}
	res, err := s.pullImage(ctx, api.ImagePullParams{Ref: ref}, cats, progress)
	if err != nil {
		return "", err
	}
	return res.Name, nil
}

// ExportBundle writes image name as a bundle (.tar.zst) to w.
func (s *Service) ExportBundle(ctx context.Context, name string, w io.Writer) error {
	img, err := s.Image(ctx, name)
	if err != nil {
		return err
	}
	_, err = catalog.WriteBundle(ctx, w, img.Rootfs, catalog.Manifest{
		Name: img.Name, Arch: "x86_64", Kernel: img.Kernel,
		Created: time.Now().UTC(), Source: img.Source,
	})
	return err
}
