package catalog

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/fetch"
	"banger/internal/model"
)

// Kernel formats.
const (
	// FormatDeb is a Debian linux-image package.
	FormatDeb = "deb"
	// FormatTarZst is a zstd-compressed tar of a tree laid out like
	// `dpkg -x` output: boot/vmlinuz-*, lib/modules/...
	FormatTarZst = "tar.zst"
)

// maxCatalogSize bounds a catalog read from a file or over HTTP.
const maxCatalogSize = 16 << 20

// embeddedCatalog is the catalog built into banger (a string, so it
// cannot be modified).
//
//go:embed catalog.json
var embeddedCatalog string

// Catalog lists the kernels and images banger can download.
type Catalog struct {
	Kernels []KernelEntry `json:"kernels"`
	Images  []ImageEntry  `json:"images"`
}

// KernelEntry is a downloadable kernel.
type KernelEntry struct {
	Name        string `json:"name"`
	Arch        string `json:"arch"` // "x86_64"
	Version     string `json:"version,omitempty"`
	Description string `json:"description,omitempty"`
	URL         string `json:"url"`
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	// Format is FormatDeb or FormatTarZst.
	Format string `json:"format"`
}

// ImageEntry is a downloadable image bundle (see WriteBundle).
type ImageEntry struct {
	Name        string `json:"name"`
	Arch        string `json:"arch"`
	Distro      string `json:"distro,omitempty"`
	Description string `json:"description,omitempty"`
	// Kernel is the name of the catalog kernel the image pairs with.
	Kernel string `json:"kernel"`
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// validSHA256 reports whether s is 64 lowercase hex characters.
func validSHA256(s string) bool { return fetch.ValidSHA256(s) }

// Embedded returns the catalog built into banger.
func Embedded() (*Catalog, error) {
	c, err := parse([]byte(embeddedCatalog), nil)
	if err != nil {
		return nil, fmt.Errorf("embedded %w", err)
	}
	return c, nil
}

// Load reads and validates a catalog. src is "" for the embedded catalog,
// an absolute file path or file:// URL, or an http(s):// URL fetched with
// hc (http.DefaultClient if nil). Relative entry URLs are resolved against
// the catalog's location.
func Load(ctx context.Context, src string, hc *http.Client) (*Catalog, error) {
	if src == "" {
		return Embedded()
	}
	var (
		data []byte
		base *url.URL
		err  error
	)
	switch {
	case filepath.IsAbs(src):
		base = &url.URL{Scheme: "file", Path: filepath.Clean(src)}
		data, err = readCatalogFile(base.Path)
	case hasScheme(src, "file"):
		base, err = url.Parse(src)
		if err == nil {
			var p string
			p, err = fileURLPath(base)
			if err == nil {
				data, err = readCatalogFile(p)
			}
		}
	case hasScheme(src, "http"), hasScheme(src, "https"):
		data, base, err = getCatalog(ctx, src, hc)
	default:
		return nil, fmt.Errorf("catalog: source %q must be an absolute path, a file:// or an http(s):// URL", src)
	}
	if err != nil {
		return nil, fmt.Errorf("load catalog %s: %w", src, err)
	}
	c, err := parse(data, base)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return c, nil
}

func hasScheme(s, scheme string) bool {
	return len(s) > len(scheme)+3 && strings.EqualFold(s[:len(scheme)+3], scheme+"://")
}

func readCatalogFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f)
}

func readLimited(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxCatalogSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxCatalogSize {
		return nil, fmt.Errorf("larger than %d bytes", maxCatalogSize)
	}
	return data, nil
}

func getCatalog(ctx context.Context, src string, hc *http.Client) ([]byte, *url.URL, error) {
	c := &fetch.Client{}
	if hc != nil {
		c.HTTP = hc
	}
	// Relative URLs are relative to where the catalog was finally found.
	return c.Bytes(ctx, src, maxCatalogSize)
}

// fileURLPath returns the local path of a file:// URL.
func fileURLPath(u *url.URL) (string, error) { return fetch.FileURLPath(u) }

// parse decodes and validates a catalog, resolving relative URLs against
// base (nil: relative URLs are invalid).
func parse(data []byte, base *url.URL) (*Catalog, error) {
	var c Catalog
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if dec.More() {
		return nil, errors.New("catalog: trailing data after the JSON document")
	}
	for i := range c.Kernels {
		c.Kernels[i].URL = resolveURL(base, c.Kernels[i].URL)
	}
	for i := range c.Images {
		c.Images[i].URL = resolveURL(base, c.Images[i].URL)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// resolveURL resolves a relative reference against base; anything that
// cannot be resolved is returned unchanged for Validate to judge.
func resolveURL(base *url.URL, ref string) string {
	if base == nil || ref == "" {
		return ref
	}
	u, err := url.Parse(ref)
	if err != nil || u.IsAbs() {
		return ref
	}
	return base.ResolveReference(u).String()
}

// Validate checks every entry (see KernelEntry.Validate and
// ImageEntry.Validate) and that names are unique among kernels and among
// images.
func (c *Catalog) Validate() error {
	seen := make(map[string]bool)
	for _, k := range c.Kernels {
		if err := k.Validate(); err != nil {
			return err
		}
		if seen[k.Name] {
			return fmt.Errorf("catalog: kernel %q: duplicate name", k.Name)
		}
		seen[k.Name] = true
	}
	clear(seen)
	for _, im := range c.Images {
		if err := im.Validate(); err != nil {
			return err
		}
		if seen[im.Name] {
			return fmt.Errorf("catalog: image %q: duplicate name", im.Name)
		}
		seen[im.Name] = true
	}
	return nil
}

// Validate checks a kernel entry's name, URL, SHA-256, size and format.
func (k KernelEntry) Validate() error {
	err := validateCommon(k.Name, k.URL, k.SHA256, k.Size)
	if err == nil && k.Format != FormatDeb && k.Format != FormatTarZst {
		err = fmt.Errorf("unknown format %q (want %q or %q)", k.Format, FormatDeb, FormatTarZst)
	}
	if err != nil {
		return fmt.Errorf("catalog: kernel %q: %w", k.Name, err)
	}
	return nil
}

// Validate checks an image entry's name, URL, SHA-256, size and kernel.
func (im ImageEntry) Validate() error {
	err := validateCommon(im.Name, im.URL, im.SHA256, im.Size)
	if err == nil && im.Kernel == "" {
		err = errors.New("kernel must be set")
	}
	if err != nil {
		return fmt.Errorf("catalog: image %q: %w", im.Name, err)
	}
	return nil
}

func validateCommon(name, rawURL, sum string, size int64) error {
	// Entries become kernels and images under the same names.
	if err := model.ValidateName(name); err != nil {
		return fmt.Errorf("bad name: %w", err)
	}
	if !validSHA256(sum) {
		return errors.New("sha256 must be 64 hex characters")
	}
	if size < 0 {
		return errors.New("size must not be negative")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("bad url: %w", err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Errorf("url %q has no host", rawURL)
		}
	case "file":
		if _, err := fileURLPath(u); err != nil {
			return err
		}
	default:
		return fmt.Errorf("url %q must be http, https or file", rawURL)
	}
	return nil
}

// Kernel returns the kernel entry called name.
func (c *Catalog) Kernel(name string) (KernelEntry, bool) {
	for _, k := range c.Kernels {
		if k.Name == name {
			return k, true
		}
	}
	return KernelEntry{}, false
}

// Image returns the image entry called name.
func (c *Catalog) Image(name string) (ImageEntry, bool) {
	for _, im := range c.Images {
		if im.Name == name {
			return im, true
		}
	}
	return ImageEntry{}, false
}
