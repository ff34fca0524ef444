package image

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/model"
	"banger/internal/testreq"
)

// fakeBuilder stands for the VM manager: instead of booting a VM it makes
// the qcow2 overlay such a VM would leave behind and hands it to save,
// unless fail is set (a step of the build failed: save is never called).
type fakeBuilder struct {
	t     *testing.T
	fail  error
	bases []string
	saved bool
}

func (b *fakeBuilder) BuildImage(ctx context.Context, base *model.Image, p api.ImageBuildParams, save func(ctx context.Context, rootDisk string) error, progress func(api.Progress)) error {
	b.bases = append(b.bases, base.Name)
	if b.fail != nil {
		return b.fail
	}
	overlay := filepath.Join(b.t.TempDir(), "root.qcow2")
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base.Rootfs, "-F", "raw", overlay).CombinedOutput(); err != nil {
		b.t.Fatalf("qemu-img: %v %s", err, out)
	}
	b.saved = true
	return save(ctx, overlay)
}

func TestBuildFromImageThroughTheRunner(t *testing.T) {
	testreq.RequireTools(t, "scripts/quickstart.sh installs them", "qemu-img", "mkfs.ext4")
	f := newPullFixture(t)
	ctx := context.Background()
	base := filepath.Join(t.TempDir(), "base.ext4")
	if err := mkfsFromDir(ctx, t.TempDir(), base, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Store.CreateImage(ctx, &model.Image{Name: "base", Rootfs: base, Kernel: "k"}); err != nil {
		t.Fatal(err)
	}
	params := api.ImageBuildParams{Name: "built", FromImage: "base", Run: []string{"true"}}

	// Without a runner such builds are refused.
	if _, err := f.svc.Build(ctx, params, nil); err == nil || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("build without a runner: %v", err)
	}

	// A failing build registers nothing and leaves no files.
	b := &fakeBuilder{t: t, fail: api.Errorf(api.CodeOperationFailed, `--run "true" exited with status 1`)}
	f.svc.Builder = b
	_, err := f.svc.Build(ctx, params, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "exited with status 1") {
		t.Fatalf("failed build: %v", err)
	}
	if _, err := f.svc.Store.GetImage(ctx, "built"); err == nil {
		t.Error("a failed build registered its image")
	}
	if _, err := os.Stat(f.svc.Layout.ImageDir("built")); !os.IsNotExist(err) {
		t.Errorf("a failed build left its directory: %v", err)
	}

	// A good one boots the resolved base and saves the flattened disk.
	b.fail = nil
	img, err := f.svc.Build(ctx, params, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !b.saved || strings.Join(b.bases, ",") != "base,base" {
		t.Errorf("runner saw bases %v, saved %v", b.bases, b.saved)
	}
	if img.Name != "built" || img.Kernel != "k" || img.Source != "image:base" {
		t.Errorf("built image: %+v", img)
	}
	if fi, err := os.Stat(img.Rootfs); err != nil || fi.Size() != 16<<20 {
		t.Errorf("built rootfs: %v %v", fi, err)
	}
}

// ResolveImage: what a VM create boots.
func TestResolveImage(t *testing.T) {
	f := newPullFixture(t, "img")
	ctx := context.Background()
	code := func(err error) string {
		var ae *api.Error
		if errors.As(err, &ae) {
			return ae.Code
		}
		return ""
	}
	if _, err := f.svc.ResolveImage(ctx, "", nil); code(err) != api.CodeNotFound {
		t.Errorf("no images: %v", err)
	}
	if _, err := f.svc.ResolveImage(ctx, "missing", nil); code(err) != api.CodeNotFound {
		t.Errorf("a name neither here nor in the catalog: %v", err)
	}
	// A catalog name is pulled.
	img, err := f.svc.ResolveImage(ctx, "img", nil)
	if err != nil || img.Name != "img" || f.count("img") != 1 {
		t.Fatalf("pull on create: %+v %v (downloads %d)", img, err, f.count("img"))
	}
	// The only image is the default; with two, one must be named or configured.
	if img, err := f.svc.ResolveImage(ctx, "", nil); err != nil || img.Name != "img" {
		t.Errorf("the only image: %+v %v", img, err)
	}
	if err := f.svc.Store.CreateImage(ctx, &model.Image{Name: "other", Rootfs: img.Rootfs, Kernel: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.ResolveImage(ctx, "", nil); code(err) != api.CodeBadRequest {
		t.Errorf("two images, none named: %v", err)
	}
	f.svc.DefaultImage = "other"
	if img, err := f.svc.ResolveImage(ctx, "", nil); err != nil || img.Name != "other" {
		t.Errorf("default_image: %+v %v", img, err)
	}
	if f.count("img") != 1 {
		t.Errorf("downloaded again: %d", f.count("img"))
	}
}
