package updater

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testKey is a signing key made for one test.
type testKey struct {
	priv   *ecdsa.PrivateKey
	pubPEM string
}

func newTestKey(t *testing.T) testKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{priv: priv, pubPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
}

func (k testKey) sign(t *testing.T, data []byte) []byte {
	t.Helper()
	digest := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// writePrivatePEM writes the private key as PKCS#8 PEM, which openssl reads.
func (k testKey) writePrivatePEM(t *testing.T, path string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fakeBinary is a shell script standing in for one of the binaries: it
// prints its version for --version the way the real one does.
func fakeBinary(name, version string) []byte {
	out := version
	switch name {
	case BinCLI:
		out = "banger version " + version
	case BinDaemon:
		out = "bangerd " + version
	}
	return fmt.Appendf(nil, "#!/bin/sh\n# fake %s %s\nif [ \"$1\" = --version ]; then echo '%s'; fi\n", name, version, out)
}

func fakeBinaries(version string) map[string][]byte {
	m := map[string][]byte{}
	for _, b := range Binaries() {
		m[b] = fakeBinary(b, version)
	}
	return m
}

// tarMember is one entry of a test archive.
type tarMember struct {
	name     string
	body     []byte
	typeflag byte
	linkname string
}

func releaseMembers(version string) []tarMember {
	var ms []tarMember
	for _, b := range Binaries() {
		ms = append(ms, tarMember{name: b, body: fakeBinary(b, version)})
	}
	return ms
}

func makeArchive(t *testing.T, members []tarMember) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, m := range members {
		tf := m.typeflag
		if tf == 0 {
			tf = tar.TypeReg
		}
		hdr := &tar.Header{Name: m.name, Typeflag: tf, Linkname: m.linkname, Mode: 0o755}
		if tf == tar.TypeReg {
			hdr.Size = int64(len(m.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if tf == tar.TypeReg {
			if _, err := tw.Write(m.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fakeHost serves release files and a manifest over loopback HTTP.
type fakeHost struct {
	mu       sync.Mutex
	files    map[string][]byte
	manifest Manifest
	srv      *httptest.Server
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	h := &fakeHost{files: map[string][]byte{}, manifest: Manifest{Schema: 1}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *fakeHost) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := strings.TrimPrefix(r.URL.Path, "/")
	if p == "manifest.json" {
		if data, ok := h.files[p]; ok {
			w.Write(data)
			return
		}
		json.NewEncoder(w).Encode(h.manifest)
		return
	}
	data, ok := h.files[p]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(data)
}

func (h *fakeHost) manifestURL() string { return h.srv.URL + "/manifest.json" }

func (h *fakeHost) set(path string, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.files[path] = data
}

// publish adds a signed release with the given archive and makes it the
// latest stable one.
func (h *fakeHost) publish(t *testing.T, key testKey, version string, archive []byte) Release {
	t.Helper()
	name := "banger-" + version + "-linux-amd64.tar.gz"
	sums := []byte(sha256Hex(archive) + "  " + name + "\n")
	rel := Release{
		Version:    version,
		Date:       "2025-01-31T12:00:00Z",
		Archive:    version + "/" + name,
		SHA256Sums: version + "/SHA256SUMS",
		Signature:  version + "/SHA256SUMS.sig",
	}
	h.set(rel.Archive, archive)
	h.set(rel.SHA256Sums, sums)
	h.set(rel.Signature, key.sign(t, sums))
	h.mu.Lock()
	h.manifest.Releases = append(h.manifest.Releases, rel)
	h.manifest.LatestStable = version
	h.mu.Unlock()
	return rel
}

// installDir makes a BinDir holding fake binaries of version.
func installDir(t *testing.T, version string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range fakeBinaries(version) {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// snapshot records every entry of dir (name, type, mode, content).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		entry := info.Mode().String()
		if info.Mode().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			entry += " " + string(data)
		}
		snap[rel] = entry
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func assertSameSnapshot(t *testing.T, want, got map[string]string) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s disappeared", k)
		} else if g != v {
			t.Errorf("%s changed:\n  was %q\n  now %q", k, v, g)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s was left behind", k)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// services fakes Restart and Health: Health asks the bangerd in binDir
// for its version, as the real check asks the restarted daemon.
type services struct {
	binDir      string
	mu          sync.Mutex
	restarts    int
	healthCalls []string
	restartErr  func(n int) error
	healthErr   func(version string) error
}

func (s *services) restart(ctx context.Context) error {
	s.mu.Lock()
	s.restarts++
	n := s.restarts
	s.mu.Unlock()
	if s.restartErr != nil {
		return s.restartErr(n)
	}
	return nil
}

func (s *services) health(ctx context.Context, version string) error {
	s.mu.Lock()
	s.healthCalls = append(s.healthCalls, version)
	s.mu.Unlock()
	if s.healthErr != nil {
		if err := s.healthErr(version); err != nil {
			return err
		}
	}
	out, err := RunVersion(ctx, filepath.Join(s.binDir, BinDaemon))
	if err != nil {
		return err
	}
	if !strings.Contains(out, version) {
		return errors.New("daemon reports " + strings.TrimSpace(out))
	}
	return nil
}
