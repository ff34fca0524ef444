package catalog

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

const (
	goodSHA = "7b5597492a0a65aee61985a492e6bcc3f2cde830072a0e3b3d8c7e1b90279bd3"
	otherSH = "0000000000000000000000000000000000000000000000000000000000000000"
)

func TestEmbedded(t *testing.T) {
	c, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	k, ok := c.Kernel("debian-bookworm")
	if !ok {
		t.Fatal("no debian-bookworm kernel in the embedded catalog")
	}
	if k.Format != FormatDeb || k.Arch != "x86_64" || k.Size <= 0 ||
		!strings.HasPrefix(k.URL, "http://deb.debian.org/debian/pool/main/l/linux-signed-amd64/linux-image-") {
		t.Errorf("unexpected entry %+v", k)
	}
	if len(c.Images) != 0 {
		t.Errorf("embedded catalog has images: %+v", c.Images)
	}
	if _, ok := c.Image("debian-bookworm"); ok {
		t.Error("Image found a kernel name")
	}
	// Load("") is the embedded catalog.
	c2, err := Load(context.Background(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if k2, _ := c2.Kernel("debian-bookworm"); k2 != k {
		t.Errorf("Load(\"\") = %+v, want %+v", k2, k)
	}
}

func testCatalogJSON(t *testing.T, kernelURL, imageURL string) []byte {
	t.Helper()
	c := Catalog{
		Kernels: []KernelEntry{{
			Name: "k1", Arch: "x86_64", URL: kernelURL, SHA256: goodSHA, Size: 10, Format: FormatTarZst,
		}},
		Images: []ImageEntry{{
			Name: "debian", Arch: "x86_64", Distro: "debian", Kernel: "k1", URL: imageURL, SHA256: otherSH, Size: 20,
		}},
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "sub", "catalog.json")
	writeTestFile(t, name, testCatalogJSON(t, "https://example.com/k1.tar.zst", "debian.tar.zst"))

	for _, src := range []string{name, "file://" + name} {
		c, err := Load(context.Background(), src, nil)
		if err != nil {
			t.Fatalf("Load(%s): %v", src, err)
		}
		k, ok := c.Kernel("k1")
		if !ok || k.URL != "https://example.com/k1.tar.zst" {
			t.Errorf("kernel = %+v, %v", k, ok)
		}
		im, ok := c.Image("debian")
		want := "file://" + filepath.Join(dir, "sub", "debian.tar.zst")
		if !ok || im.URL != want || im.Kernel != "k1" || im.Size != 20 {
			t.Errorf("image = %+v, want url %s", im, want)
		}
	}

	if _, err := Load(context.Background(), filepath.Join(dir, "missing.json"), nil); err == nil {
		t.Error("missing file loaded")
	}
	if _, err := Load(context.Background(), "relative/catalog.json", nil); err == nil {
		t.Error("relative path accepted")
	}
}

func TestLoadHTTP(t *testing.T) {
	var body []byte
	mux := http.NewServeMux()
	mux.HandleFunc("/cat/catalog.json", func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	mux.HandleFunc("/moved.json", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/cat/catalog.json", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	body = testCatalogJSON(t, "../kernels/k1.tar.zst", "debian.tar.zst")

	for _, src := range []string{srv.URL + "/cat/catalog.json", srv.URL + "/moved.json"} {
		c, err := Load(context.Background(), src, srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		if k, _ := c.Kernel("k1"); k.URL != srv.URL+"/kernels/k1.tar.zst" {
			t.Errorf("%s: kernel url = %q", src, k.URL)
		}
		if im, _ := c.Image("debian"); im.URL != srv.URL+"/cat/debian.tar.zst" {
			t.Errorf("%s: image url = %q", src, im.URL)
		}
	}

	_, err := Load(context.Background(), srv.URL+"/nope.json", srv.Client())
	if err == nil || !strings.Contains(err.Error(), "404 Not Found") {
		t.Errorf("404 catalog: err = %v", err)
	}

	body = []byte(`{"kernels": [`)
	if _, err := Load(context.Background(), srv.URL+"/cat/catalog.json", srv.Client()); err == nil {
		t.Error("truncated JSON accepted")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Load(ctx, srv.URL+"/cat/catalog.json", srv.Client()); err == nil {
		t.Error("cancelled load succeeded")
	}
}

func TestValidate(t *testing.T) {
	kernel := func(mod func(*KernelEntry)) Catalog {
		k := KernelEntry{Name: "k1", Arch: "x86_64", URL: "https://example.com/k", SHA256: goodSHA, Size: 1, Format: FormatDeb}
		mod(&k)
		return Catalog{Kernels: []KernelEntry{k}}
	}
	image := func(mod func(*ImageEntry)) Catalog {
		im := ImageEntry{Name: "img", Arch: "x86_64", Kernel: "k1", URL: "file:///srv/img.tar.zst", SHA256: goodSHA}
		mod(&im)
		return Catalog{Images: []ImageEntry{im}}
	}
	good := kernel(func(*KernelEntry) {})
	good.Images = image(func(*ImageEntry) {}).Images
	if err := good.Validate(); err != nil {
		t.Fatalf("good catalog: %v", err)
	}

	tests := []struct {
		name string
		c    Catalog
		want string
	}{
		{"bad name", kernel(func(k *KernelEntry) { k.Name = "Bad" }), `catalog: kernel "Bad": bad name: name "Bad" may contain only lowercase letters`},
		{"empty name", image(func(im *ImageEntry) { im.Name = "" }), `catalog: image "": bad name: name must not be empty`},
		{"leading dot", image(func(im *ImageEntry) { im.Name = ".x" }), `catalog: image ".x": bad name:`},
		{"long name", image(func(im *ImageEntry) { im.Name = strings.Repeat("a", 64) }), `the limit is 63`},
		{"dot in name", image(func(im *ImageEntry) { im.Name = "linux-6.1" }), `catalog: image "linux-6.1": bad name:`},
		{"short sha", image(func(im *ImageEntry) { im.SHA256 = "abc" }), `catalog: image "img": sha256 must be 64 hex characters`},
		{"upper sha", kernel(func(k *KernelEntry) { k.SHA256 = strings.ToUpper(goodSHA) }), `catalog: kernel "k1": sha256 must be 64 hex characters`},
		{"negative size", kernel(func(k *KernelEntry) { k.Size = -1 }), `catalog: kernel "k1": size must not be negative`},
		{"ftp url", kernel(func(k *KernelEntry) { k.URL = "ftp://example.com/k" }), `catalog: kernel "k1": url "ftp://example.com/k" must be http, https or file`},
		{"relative url", image(func(im *ImageEntry) { im.URL = "img.tar.zst" }), `catalog: image "img": url "img.tar.zst" must be http, https or file`},
		{"no host", kernel(func(k *KernelEntry) { k.URL = "http:///k" }), `has no host`},
		{"relative file url", kernel(func(k *KernelEntry) { k.URL = "file:k" }), `no absolute path`},
		{"bad format", kernel(func(k *KernelEntry) { k.Format = "rpm" }), `catalog: kernel "k1": unknown format "rpm"`},
		{"empty format", kernel(func(k *KernelEntry) { k.Format = "" }), `unknown format ""`},
		{"no kernel", image(func(im *ImageEntry) { im.Kernel = "" }), `catalog: image "img": kernel must be set`},
		{"duplicate kernel", Catalog{Kernels: append(good.Kernels, good.Kernels[0])}, `catalog: kernel "k1": duplicate name`},
		{"duplicate image", Catalog{Images: append(good.Images, good.Images[0])}, `catalog: image "img": duplicate name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			// Load reports the same error.
			b, _ := json.Marshal(tt.c)
			name := filepath.Join(t.TempDir(), "c.json")
			writeTestFile(t, name, b)
			_, err = Load(context.Background(), name, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				// A relative URL is resolved by Load, so that case is valid there.
				if tt.name != "relative url" {
					t.Fatalf("Load: err = %v, want %q", err, tt.want)
				}
			}
		})
	}

	// The same name may be both a kernel and an image.
	both := Catalog{
		Kernels: []KernelEntry{{Name: "x", URL: "https://e/k", SHA256: goodSHA, Format: FormatDeb}},
		Images:  []ImageEntry{{Name: "x", URL: "https://e/i", SHA256: goodSHA, Kernel: "x"}},
	}
	if err := both.Validate(); err != nil {
		t.Errorf("kernel and image of one name: %v", err)
	}
}
