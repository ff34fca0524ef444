package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/catalog"
	"banger/internal/model"
	"banger/internal/paths"
	"banger/internal/store"
)

// pullFixture is an image service over a real store with one kernel, and
// an HTTP server serving one bundle under several names.
type pullFixture struct {
	svc    *Service
	srv    *httptest.Server
	mu     sync.Mutex
	hits   map[string]int
	gate   chan struct{} // when set, each download waits for it
	inside chan string   // names of downloads under way
	cat    string        // the catalog file (also served as /catalog.json)
}

func newPullFixture(t *testing.T, images ...string) *pullFixture {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		if _, err := os.Stat("/usr/sbin/mkfs.ext4"); err != nil {
			t.Skip("mkfs.ext4 not installed")
		}
		t.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin")
	}
	dir := t.TempDir()
	l := paths.Layout{State: filepath.Join(dir, "state"), Config: filepath.Join(dir, "config"), Runtime: filepath.Join(dir, "run")}
	os.MkdirAll(l.State, 0o700)
	st, err := store.Open(context.Background(), l.DB())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateKernel(context.Background(), &model.Kernel{Name: "k", Version: "6.1", Vmlinux: "/nonexistent", Initramfs: "/nonexistent"}); err != nil {
		t.Fatal(err)
	}

	// A small real ext4 image, bundled.
	rootfs := filepath.Join(dir, "rootfs.ext4")
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc/hostname"), []byte("pulled\n"), 0o644)
	if err := mkfsFromDir(context.Background(), tree, rootfs, 16<<20); err != nil {
		t.Fatal(err)
	}
	var bundle bytes.Buffer
	if _, err := catalog.WriteBundle(context.Background(), &bundle, rootfs, catalog.Manifest{Name: "img", Arch: "x86_64", Kernel: "k", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	body := bundle.Bytes()
	sum := sha256.Sum256(body)

	f := &pullFixture{hits: map[string]int{}, inside: make(chan string, 16)}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		f.mu.Lock()
		f.hits[name]++
		gate := f.gate
		f.mu.Unlock()
		if name == "catalog.json" {
			http.ServeFile(w, r, f.cat)
			return
		}
		if gate != nil {
			f.inside <- name
			<-gate
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.Write(body)
	}))
	t.Cleanup(f.srv.Close)
	var entries []catalog.ImageEntry
	for _, n := range images {
		entries = append(entries, catalog.ImageEntry{Name: n, Arch: "x86_64", Kernel: "k",
			URL: f.srv.URL + "/" + n + ".tar.zst", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(body))})
	}
	b, _ := json.Marshal(catalog.Catalog{Kernels: []catalog.KernelEntry{}, Images: entries})
	f.cat = filepath.Join(dir, "catalog.json")
	os.WriteFile(f.cat, b, 0o644)
	f.svc = &Service{Store: st, Layout: l, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Catalog: f.cat}
	return f
}

func (f *pullFixture) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[name+".tar.zst"]
}

// Parallel ensures of one missing image download it once; every caller
// gets the image.
func TestEnsureImageParallelSameName(t *testing.T) {
	f := newPullFixture(t, "img")
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name, err := f.svc.EnsureImage(ctx, "img", nil)
			if err == nil && name != "img" {
				err = fmt.Errorf("got %q", name)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if n := f.count("img"); n != 1 {
		t.Errorf("%d downloads, want 1", n)
	}
	img, err := f.svc.Image(ctx, "img")
	if err != nil {
		t.Fatal(err)
	}
	if img.Kernel != "k" || !strings.HasPrefix(img.Source, "catalog:") {
		t.Errorf("image %+v", img)
	}
	if err := checkExt4(img.Rootfs); err != nil {
		t.Error(err)
	}
	if ents, _ := os.ReadDir(f.svc.downloads()); len(ents) != 0 {
		t.Errorf("downloads left behind: %v", ents)
	}
}

// Different names are not serialised: both downloads are under way at the
// same time.
func TestPullDifferentNamesInParallel(t *testing.T) {
	f := newPullFixture(t, "a", "b")
	f.gate = make(chan struct{})
	ctx := context.Background()
	errc := make(chan error, 2)
	for _, n := range []string{"a", "b"} {
		go func() {
			_, err := f.svc.PullImage(ctx, api.ImagePullParams{Ref: n}, nil)
			errc <- err
		}()
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case n := <-f.inside:
			seen[n] = true
		case <-time.After(10 * time.Second):
			close(f.gate)
			t.Fatalf("only %v downloading at once: pulls of different names were serialised", seen)
		}
	}
	close(f.gate)
	for range 2 {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// A name the catalog does not have is not found, and nothing is created.
func TestEnsureImageUnknown(t *testing.T) {
	f := newPullFixture(t, "img")
	_, err := f.svc.EnsureImage(context.Background(), "nope", nil)
	var ae *api.Error
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("want not found, got %v", err)
	}
	if !errors.As(err, &ae) || ae.Code != api.CodeNotFound {
		t.Errorf("want code not_found, got %v", err)
	}
	if _, err := os.Stat(f.svc.Layout.ImageDir("nope")); err == nil {
		t.Error("image dir created")
	}
	// A broken catalog still says the image is not found, with why.
	os.WriteFile(f.cat, []byte("{"), 0o644)
	if _, err := f.svc.EnsureImage(context.Background(), "nope", nil); err == nil || !strings.Contains(err.Error(), "catalog could not be read") {
		t.Errorf("broken catalog: %v", err)
	}
}

// An http catalog is read once per operation: ensuring a missing image
// checks the name and then pulls it from the same catalog.
func TestEnsureImageReadsTheCatalogOnce(t *testing.T) {
	f := newPullFixture(t, "img")
	f.svc.Catalog = f.srv.URL + "/catalog.json"
	if _, err := f.svc.EnsureImage(context.Background(), "img", nil); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	n := f.hits["catalog.json"]
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("the catalog was fetched %d times, want 1", n)
	}
}
