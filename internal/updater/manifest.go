package updater

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"

	"banger/internal/fetch"
)

// Size limits of the small documents an update downloads.
const (
	MaxManifestSize = 1 << 20  // manifest.json
	MaxSumsSize     = 64 << 10 // SHA256SUMS and SHA256SUMS.sig
)

// ManifestSchema is the manifest schema this package reads.
const ManifestSchema = 1

// Doer sends HTTP requests; *http.Client is one.
type Doer interface {
	Do(req *http.Request) (*http.Response, error)
}

// Manifest lists the published releases. See the package documentation
// for the format.
type Manifest struct {
	Schema       int       `json:"schema"`
	LatestStable string    `json:"latest_stable"`
	Releases     []Release `json:"releases"`

	base *url.URL
}

// Release is one published release. Archive, SHA256Sums and Signature are
// as written in the manifest; Manifest.ResolveURL turns them into URLs.
type Release struct {
	Version    string `json:"version"`
	Date       string `json:"date,omitempty"`
	Archive    string `json:"archive"`
	SHA256Sums string `json:"sha256sums"`
	Signature  string `json:"signature"`
	Notes      string `json:"notes,omitempty"`
}

// NotFoundError reports a version the manifest does not list.
type NotFoundError struct {
	Version string
	Latest  string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("release %s not found in manifest (latest is %s)", e.Version, e.Latest)
}

// FetchManifest downloads and parses the manifest at manifestURL.
func FetchManifest(ctx context.Context, hc Doer, manifestURL string) (*Manifest, error) {
	data, err := getBytes(ctx, hc, manifestURL, MaxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("fetch manifest: %w", err)
	}
	m, err := ParseManifest(data, manifestURL)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", manifestURL, err)
	}
	return m, nil
}

// ParseManifest decodes and validates a manifest; relative URLs in it
// resolve against manifestURL.
func ParseManifest(data []byte, manifestURL string) (*Manifest, error) {
	base, err := url.Parse(manifestURL)
	if err != nil {
		return nil, fmt.Errorf("parse manifest url: %w", err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode: trailing data after the JSON object")
	}
	m.base = base
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Manifest) validate() error {
	if m.Schema != ManifestSchema {
		return fmt.Errorf("schema %d is not supported (want %d)", m.Schema, ManifestSchema)
	}
	seen := make(map[string]bool, len(m.Releases))
	for i, r := range m.Releases {
		if _, err := ParseVersion(r.Version); err != nil {
			return fmt.Errorf("release %d: %w", i, err)
		}
		if seen[r.Version] {
			return fmt.Errorf("release %s is listed twice", r.Version)
		}
		seen[r.Version] = true
		for _, f := range []struct{ name, ref string }{
			{"archive", r.Archive}, {"sha256sums", r.SHA256Sums}, {"signature", r.Signature},
		} {
			if f.ref == "" {
				return fmt.Errorf("release %s: %s is missing", r.Version, f.name)
			}
			if _, err := m.ResolveURL(f.ref); err != nil {
				return fmt.Errorf("release %s: %s: %w", r.Version, f.name, err)
			}
		}
	}
	if m.LatestStable == "" {
		return errors.New("latest_stable is missing")
	}
	if !seen[m.LatestStable] {
		return fmt.Errorf("latest_stable %s is not among the releases", m.LatestStable)
	}
	return nil
}

// Find returns the release with the given version; "" and "latest" mean
// latest_stable, and a version without its leading "v" is accepted.
func (m *Manifest) Find(version string) (Release, error) {
	if version == "" || version == "latest" {
		version = m.LatestStable
	}
	if !strings.HasPrefix(version, "v") {
		if _, err := ParseVersion("v" + version); err == nil {
			version = "v" + version
		}
	}
	for _, r := range m.Releases {
		if r.Version == version {
			return r, nil
		}
	}
	return Release{}, &NotFoundError{Version: version, Latest: m.LatestStable}
}

// ResolveURL resolves a URL from the manifest against the manifest's own
// URL. The result must be http or https.
func (m *Manifest) ResolveURL(ref string) (string, error) {
	u, err := url.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("parse %q: %w", ref, err)
	}
	if m.base != nil {
		u = m.base.ResolveReference(u)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q does not resolve to an http(s) url", ref)
	}
	return u.String(), nil
}

// fileName is the last path element of a URL: the name SHA256SUMS lists.
func fileName(rawURL string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("parse %q: %w", rawURL, err)
	}
	name := path.Base(u.Path)
	if name == "" || name == "." || name == "/" {
		return "", fmt.Errorf("%q has no file name", rawURL)
	}
	return name, nil
}

// getBytes downloads a small document of at most limit bytes over
// http(s).
func getBytes(ctx context.Context, hc Doer, rawURL string, limit int64) ([]byte, error) {
	data, _, err := (&fetch.Client{HTTP: hc}).Bytes(ctx, rawURL, limit)
	return data, err
}
