package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/fsutil"
	"banger/internal/hosttools"
	"banger/internal/model"
)

// buildFromImage boots p.FromImage, runs the build's copies and commands
// in it (through the BuildRunner) and saves the powered-off root disk as image
// p.Name. A failing step registers nothing and leaves no files.
func (s *Service) buildFromImage(ctx context.Context, p api.ImageBuildParams, progress Progress) (*model.Image, error) {
	if p.Size != "" {
		return nil, api.Errorf(api.CodeBadRequest, "--size does not apply to --from-image (the new image has the base image's size)")
	}
	if s.Builder == nil {
		return nil, fmt.Errorf("image builds from an image are not available")
	}
	for _, c := range p.Copy {
		if !filepath.IsAbs(c.Src) || !strings.HasPrefix(c.Dst, "/") {
			return nil, api.Errorf(api.CodeBadRequest, "--copy %s:%s: both paths must be absolute", c.Src, c.Dst)
		}
		if _, err := os.Lstat(c.Src); err != nil {
			return nil, api.Errorf(api.CodeBadRequest, "--copy %s: %v", c.Src, err)
		}
	}
	base, err := s.Image(ctx, p.FromImage)
	if err != nil {
		return nil, fmt.Errorf("--from-image: %w", err)
	}
	kernel := base.Kernel
	if p.Kernel != "" {
		k, err := s.Kernel(ctx, p.Kernel)
		if err != nil {
			return nil, err
		}
		kernel = k.Name
	}
	if _, err := s.Store.GetImage(ctx, p.Name); err == nil {
		return nil, api.Errorf(api.CodeAlreadyExists, "image %q already exists", p.Name)
	}
	release, err := s.reserve("image", p.Name)
	if err != nil {
		return nil, err
	}
	defer release()

	var img *model.Image
	save := func(ctx context.Context, rootDisk string) error {
		var err error
		img, err = s.install(ctx, p.Name, kernel, "image:"+base.Name, func(dir string) (string, error) {
			out := filepath.Join(dir, "rootfs.ext4")
			tmp := out + ".tmp"
			defer os.Remove(tmp) // a no-op once renamed
			// Flatten the overlay and its base into one raw ext4 file
			// (sparse: qemu-img skips zero blocks).
			if _, err := hosttools.Run(ctx, hosttools.QEMUImg, "convert", "-q", "-f", "qcow2", "-O", "raw", rootDisk, tmp); err != nil {
				return "", fmt.Errorf("flatten image: %w", err)
			}
			if err := fsutil.SyncFile(tmp); err != nil {
				return "", err
			}
			return out, fsutil.Rename(tmp, out)
		})
		return err
	}
	if err := s.Builder.BuildImage(ctx, base, p, save, progress); err != nil {
		return nil, fmt.Errorf("build image %q: %w", p.Name, err)
	}
	if img == nil {
		return nil, fmt.Errorf("build image %q: nothing was saved", p.Name)
	}
	return img, nil
}
