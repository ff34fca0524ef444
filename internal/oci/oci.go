// Package oci turns OCI / Docker registry images into ext4 root
// filesystem images.
//
// It works in three steps: Resolve fetches an image's manifest (picking
// the wanted platform out of a multi-platform index), Unpack applies the
// image's layers in order into a directory (whiteouts, opaque directories
// and hard links included) and returns a Tree recording what the
// filesystem should contain, and BuildExt4 makes the ext4 file with
// mkfs.ext4 -d and then fixes up with debugfs what the unpacking user could
// not create on the host: ownership, exact modes, device nodes and
// extended attributes. Nothing needs root.
//
// Layers are hostile input. Unpack confines every entry to its
// directory, refuses control characters in names, link targets and
// extended attribute names, allows only the user., security. and
// trusted. xattr namespaces and caps what an image may expand to
// (UnpackOptions.MaxBytes). The debugfs script is written by a generator
// (script.go) with one checked method per command, so nothing a layer
// holds can become a debugfs command (a '!' line runs a shell).
package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"banger/internal/model"
)

// DefaultPlatform is the platform Resolve picks when none is given.
const DefaultPlatform = "linux/amd64"

// Image is a resolved image, as Resolve returns it; an alias so that
// callers need not import go-containerregistry.
type Image = v1.Image

// ErrNotFound is wrapped by Resolve's error when the registry does not
// know the repository, tag or digest.
var ErrNotFound = errors.New("image not found")

// PullOptions tune Resolve.
type PullOptions struct {
	// Platform is the os/arch[/variant] to pick; default "linux/amd64".
	Platform string
	// Keychain supplies registry credentials; default
	// authn.DefaultKeychain (the user's docker config; DOCKER_CONFIG is
	// honoured).
	Keychain authn.Keychain
	// Insecure allows plain HTTP. It is implied for localhost,
	// 127.0.0.1 and [::1] registries.
	Insecure bool
	// Transport is the HTTP transport to use; optional.
	Transport http.RoundTripper
	// Progress, when set, is called as layer bytes (compressed, as sent
	// by the registry) are fetched through the returned image, with the
	// total compressed size of all its layers.
	Progress func(current, total int64)
}

// ImageConfig is the part of the image configuration a VM can use.
type ImageConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
}

// Info describes a resolved image.
type Info struct {
	// Ref is the fully qualified reference that was asked for, e.g.
	// "index.docker.io/library/alpine:3.20".
	Ref string
	// Digest is the digest of the platform-specific image manifest.
	Digest string
	// Pinned is the repository with Digest: pulling it again gives the
	// very same image.
	Pinned string
	// Platform is the image's os/arch[/variant] from its configuration.
	Platform string
	Config   ImageConfig
	// Layers is the number of layers and CompressedSize their total
	// size as stored in the registry.
	Layers         int
	CompressedSize int64
}

// Resolve parses ref (REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...,
// with the docker.io defaults for short names), fetches the manifest or
// index, picks the image for o.Platform and returns it with its Info.
// Layers are fetched lazily, when the image is unpacked; ctx must stay
// live until then, as the registry client keeps it for those requests.
func Resolve(ctx context.Context, ref string, o PullOptions) (v1.Image, Info, error) {
	r, err := parseRef(ref, o.Insecure)
	if err != nil {
		return nil, Info{}, err
	}
	plat := o.Platform
	if plat == "" {
		plat = DefaultPlatform
	}
	want, err := v1.ParsePlatform(plat)
	if err != nil {
		return nil, Info{}, fmt.Errorf("platform %q: %w", plat, err)
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithPlatform(*want),
		remote.WithUserAgent("banger"),
	}
	if o.Transport != nil {
		opts = append(opts, remote.WithTransport(o.Transport))
	}

	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, Info{}, pullError(ref, err)
	}
	img, err := desc.Image()
	if err != nil {
		if desc.MediaType.IsIndex() {
			if avail := indexPlatforms(desc); len(avail) > 0 {
				return nil, Info{}, fmt.Errorf("pull %s: no %s image in the index (it has %s)", ref, want, strings.Join(avail, ", "))
			}
		}
		return nil, Info{}, pullError(ref, err)
	}
	info, err := describe(r, img)
	if err != nil {
		return nil, Info{}, pullError(ref, err)
	}
	if !desc.MediaType.IsIndex() {
		// A single-platform image: make sure it is what was asked for
		// rather than failing later inside the VM.
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, Info{}, pullError(ref, err)
		}
		if cf.OS != "" && cf.Architecture != "" && !configPlatform(cf).Satisfies(*want) {
			return nil, Info{}, fmt.Errorf("pull %s: image is for %s, not %s", ref, info.Platform, want)
		}
	}
	if o.Progress != nil {
		img = &progressImage{Image: img, total: info.CompressedSize, progress: o.Progress}
	}
	return img, info, nil
}

// parseRef parses ref, marking loopback registries insecure (plain
// HTTP) as well as all registries when insecure is set.
func parseRef(ref string, insecure bool) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("parse reference %q: %w", ref, err)
	}
	if !insecure && isLoopback(r.Context().RegistryStr()) {
		insecure = true
	}
	if insecure {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, fmt.Errorf("parse reference %q: %w", ref, err)
		}
	}
	return r, nil
}

func isLoopback(registry string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// pullError wraps a registry error, adding ErrNotFound when the
// registry says the name, tag or digest does not exist.
func pullError(ref string, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) {
		notFound := terr.StatusCode == http.StatusNotFound
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode:
				notFound = true
			}
		}
		if notFound {
			return fmt.Errorf("pull %s: %w: %w", ref, ErrNotFound, err)
		}
		if terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden {
			return fmt.Errorf("pull %s: access denied (the image may not exist, or needs a docker login): %w", ref, err)
		}
	}
	return fmt.Errorf("pull %s: %w", ref, err)
}

// indexPlatforms lists the platforms of an index's images, for an error
// message.
func indexPlatforms(desc *remote.Descriptor) []string {
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range im.Manifests {
		if m.Platform == nil || m.Platform.OS == "unknown" {
			continue // attestations and the like
		}
		out = append(out, m.Platform.String())
	}
	return out
}

func configPlatform(cf *v1.ConfigFile) v1.Platform {
	return v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
}

func describe(r name.Reference, img v1.Image) (Info, error) {
	d, err := img.Digest()
	if err != nil {
		return Info{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return Info{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Info{}, err
	}
	info := Info{
		Ref:      r.Name(),
		Digest:   d.String(),
		Pinned:   r.Context().Digest(d.String()).Name(),
		Platform: configPlatform(cf).String(),
		Config: ImageConfig{
			Entrypoint: cf.Config.Entrypoint,
			Cmd:        cf.Config.Cmd,
			Env:        cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir,
			User:       cf.Config.User,
		},
		Layers: len(m.Layers),
	}
	for _, l := range m.Layers {
		info.CompressedSize += l.Size
	}
	return info, nil
}

// progressImage reports the compressed bytes read from its layers.
type progressImage struct {
	v1.Image
	total    int64
	progress func(current, total int64)

	mu      sync.Mutex
	current int64
}

func (p *progressImage) add(n int64) {
	p.mu.Lock()
	p.current += n
	cur := p.current
	p.mu.Unlock()
	p.progress(cur, p.total)
}

func (p *progressImage) Layers() ([]v1.Layer, error) {
	ls, err := p.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = &countingLayer{Layer: l, count: p.add}
	}
	return out, nil
}

// countingLayer calls count with the number of compressed bytes read
// through Compressed or Uncompressed.
type countingLayer struct {
	v1.Layer
	count func(n int64)
}

func (c *countingLayer) Compressed() (io.ReadCloser, error) {
	rc, err := c.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	return &countingReader{ReadCloser: rc, count: c.count}, nil
}

// Uncompressed decompresses what Compressed returns (gzip, zstd or
// nothing), so that the bytes are counted.
func (c *countingLayer) Uncompressed() (io.ReadCloser, error) {
	l, err := partial.CompressedToLayer(c)
	if err != nil {
		return nil, err
	}
	return l.Uncompressed()
}

type countingReader struct {
	io.ReadCloser
	count func(n int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	if n > 0 {
		c.count(int64(n))
	}
	return n, err
}

// DefaultName derives a banger image name from an image reference: the
// last repository component and the tag, or the first 12 hex digits of
// the digest: docker.io/library/alpine:3.20 gives "alpine-3-20",
// ghcr.io/org/tool@sha256:abcd... gives "tool-abcd...", and
// localhost:5000/a/b gives "b-latest". The result is a valid banger name
// (model.ValidateName).
func DefaultName(ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("parse reference %q: %w", ref, err)
	}
	base := sanitizeName(path.Base(r.Context().RepositoryStr()))
	var suffix string
	switch v := r.(type) {
	case name.Digest:
		hex := v.DigestStr()
		if i := strings.IndexByte(hex, ':'); i >= 0 {
			hex = hex[i+1:]
		}
		suffix = hex[:min(12, len(hex))]
	case name.Tag:
		suffix = v.TagStr()
	}
	suffix = sanitizeName(suffix)
	const maxLen = 63
	if suffix != "" {
		if len(suffix) > maxLen/2 {
			suffix = suffix[:maxLen/2]
		}
		if room := maxLen - 1 - len(suffix); len(base) > room {
			base = base[:room]
		}
		base += "-" + suffix
	}
	n := base
	for strings.Contains(n, "--") {
		n = strings.ReplaceAll(n, "--", "-")
	}
	n = strings.Trim(n, "-")
	if len(n) > maxLen {
		n = strings.TrimRight(n[:maxLen], "-")
	}
	if model.ValidateName(n) != nil {
		return "", fmt.Errorf("cannot derive an image name from %q", ref)
	}
	return n, nil
}

// sanitizeName lowercases s and turns anything but [a-z0-9-] into '-'.
func sanitizeName(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}
