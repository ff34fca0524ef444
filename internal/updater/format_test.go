package updater

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const sampleManifest = `{
  "schema": 1,
  "latest_stable": "v0.3.0",
  "releases": [
    {"version": "v0.4.0-rc.1", "date": "2025-02-01", "archive": "v0.4.0-rc.1/banger-v0.4.0-rc.1-linux-amd64.tar.gz",
     "sha256sums": "v0.4.0-rc.1/SHA256SUMS", "signature": "v0.4.0-rc.1/SHA256SUMS.sig"},
    {"version": "v0.3.0", "date": "2025-01-31", "archive": "v0.3.0/banger-v0.3.0-linux-amd64.tar.gz",
     "sha256sums": "/mirror/v0.3.0/SHA256SUMS", "signature": "https://cdn.example.com/v0.3.0/SHA256SUMS.sig",
     "notes": "first", "future_field": true},
    {"version": "v0.2.0", "archive": "v0.2.0/a.tar.gz", "sha256sums": "v0.2.0/SHA256SUMS", "signature": "v0.2.0/SHA256SUMS.sig"}
  ]
}`

func TestParseManifest(t *testing.T) {
	m, err := ParseManifest([]byte(sampleManifest), "https://releases.example.com/banger/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	if m.LatestStable != "v0.3.0" || len(m.Releases) != 3 || m.Releases[1].Notes != "first" {
		t.Fatalf("parsed %+v", m)
	}
	r := m.Releases[1]
	for _, c := range []struct{ ref, want string }{
		{r.Archive, "https://releases.example.com/banger/v0.3.0/banger-v0.3.0-linux-amd64.tar.gz"},
		{r.SHA256Sums, "https://releases.example.com/mirror/v0.3.0/SHA256SUMS"},
		{r.Signature, "https://cdn.example.com/v0.3.0/SHA256SUMS.sig"},
	} {
		got, err := m.ResolveURL(c.ref)
		if err != nil || got != c.want {
			t.Errorf("ResolveURL(%q) = %q, %v; want %q", c.ref, got, err, c.want)
		}
	}
}

func TestParseManifestRejects(t *testing.T) {
	rel := `{"version": "v0.3.0", "archive": "a.tgz", "sha256sums": "S", "signature": "S.sig"}`
	for _, c := range []struct{ name, doc, want string }{
		{"schema", `{"schema": 2, "latest_stable": "v0.3.0", "releases": [` + rel + `]}`, "schema 2 is not supported"},
		{"no latest", `{"schema": 1, "releases": [` + rel + `]}`, "latest_stable is missing"},
		{"latest unlisted", `{"schema": 1, "latest_stable": "v0.4.0", "releases": [` + rel + `]}`, "latest_stable v0.4.0 is not among"},
		{"twice", `{"schema": 1, "latest_stable": "v0.3.0", "releases": [` + rel + `,` + rel + `]}`, "listed twice"},
		{"bad version", `{"schema": 1, "latest_stable": "0.3", "releases": [{"version": "0.3", "archive": "a", "sha256sums": "b", "signature": "c"}]}`, "does not start with"},
		{"missing archive", `{"schema": 1, "latest_stable": "v0.3.0", "releases": [{"version": "v0.3.0", "sha256sums": "b", "signature": "c"}]}`, "archive is missing"},
		{"file url", `{"schema": 1, "latest_stable": "v0.3.0", "releases": [{"version": "v0.3.0", "archive": "file:///etc/passwd", "sha256sums": "b", "signature": "c"}]}`, "http(s)"},
		{"not json", `<html>`, "decode"},
		{"trailing", `{"schema": 1, "latest_stable": "v0.3.0", "releases": [` + rel + `]} {}`, "trailing data"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(c.doc), "https://example.com/manifest.json")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestFind(t *testing.T) {
	m, err := ParseManifest([]byte(sampleManifest), "https://example.com/manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ ask, want string }{
		{"", "v0.3.0"}, {"latest", "v0.3.0"}, {"v0.2.0", "v0.2.0"}, {"0.2.0", "v0.2.0"}, {"v0.4.0-rc.1", "v0.4.0-rc.1"},
	} {
		r, err := m.Find(c.ask)
		if err != nil || r.Version != c.want {
			t.Errorf("Find(%q) = %q, %v; want %q", c.ask, r.Version, err, c.want)
		}
	}
	_, err = m.Find("v9.9.9")
	if err == nil || err.Error() != "release v9.9.9 not found in manifest (latest is v0.3.0)" {
		t.Fatalf("Find(v9.9.9) err = %v", err)
	}
	var nf *NotFoundError
	if !errors.As(err, &nf) || nf.Version != "v9.9.9" {
		t.Fatalf("err %T is not a *NotFoundError", err)
	}
}

func TestFetchManifestLimitsAndStatus(t *testing.T) {
	big := `{"schema": 1, "pad": "` + strings.Repeat("x", MaxManifestSize) + `"}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big.json":
			w.Write([]byte(big))
		case "/chunked.json":
			// No Content-Length: the limit applies while reading.
			w.(http.Flusher).Flush()
			w.Write([]byte(big))
		default:
			http.Error(w, "gone", http.StatusGone)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	for _, p := range []string{"/big.json", "/chunked.json"} {
		_, err := FetchManifest(ctx, srv.Client(), srv.URL+p)
		if err == nil || !strings.Contains(err.Error(), "limit") {
			t.Errorf("%s: err = %v, want a size limit error", p, err)
		}
	}
	_, err := FetchManifest(ctx, srv.Client(), srv.URL+"/missing.json")
	if err == nil || !strings.Contains(err.Error(), "410 Gone") {
		t.Errorf("err = %v, want the status", err)
	}
}

func TestVersionOrder(t *testing.T) {
	// Ascending; each is older than every later one.
	order := []string{
		"", "27736fe-dirty", "dev",
		"v0.0.1-alpha", "v0.0.1",
		"v0.1.0",
		"v1.0.0-alpha", "v1.0.0-alpha.1", "v1.0.0-alpha.beta", "v1.0.0-beta",
		"v1.0.0-beta.2", "v1.0.0-beta.11", "v1.0.0-rc.1", "v1.0.0",
		"v1.0.1", "v1.2.0", "v1.10.0", "v2.0.0", "v10.0.0",
	}
	for i, a := range order {
		for j, b := range order {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			if got := CompareVersions(a, b); got != want {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", a, b, got, want)
			}
		}
	}
}

// TestVersionBuildMetadataRefused: semver ignores build metadata in
// precedence, so two different builds would compare equal; banger refuses
// it, which makes such a string "not a release", older than every release.
func TestVersionBuildMetadataRefused(t *testing.T) {
	if got := CompareVersions("v2.0.0+build.7", "v0.0.1-alpha"); got != -1 {
		t.Errorf("CompareVersions(v2.0.0+build.7, v0.0.1-alpha) = %d, want -1", got)
	}
	if got := CompareVersions("v2.0.0+a", "v2.0.0+b"); got != -1 {
		t.Errorf("CompareVersions(v2.0.0+a, v2.0.0+b) = %d, want -1 (bytewise, not equal)", got)
	}
	if _, err := ParseVersion("v2.0.0+build.7"); err == nil || !strings.Contains(err.Error(), "build metadata") {
		t.Errorf("ParseVersion(v2.0.0+build.7): err = %v, want a build metadata error", err)
	}
}

func TestParseVersion(t *testing.T) {
	v, err := ParseVersion("v1.22.333-rc.1.x-y")
	if err != nil {
		t.Fatal(err)
	}
	if v.Major != 1 || v.Minor != 22 || v.Patch != 333 || strings.Join(v.Pre, "|") != "rc|1|x-y" || v.String() != "v1.22.333-rc.1.x-y" {
		t.Fatalf("parsed %+v", v)
	}
	for _, bad := range []string{
		"", "dev", "1.2.3", "v1.2", "v1.2.3.4", "v01.2.3", "v1.02.3", "v1.2.3-", "v1.2.3-01",
		"v1.2.3-a..b", "v1.2.3+build", "v1.2.3-a_b", "v-1.2.3", "v1.2.x", "27736fe-dirty",
		"v1", "v1.2.3-rc.1+build", "v1.2.3+", "V1.2.3", " v1.2.3", "v1.2.3\n", "v18446744073709551616.0.0",
	} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
}

func TestChecksumFor(t *testing.T) {
	h1 := strings.Repeat("ab", 32)
	h2 := strings.Repeat("CD", 32)
	sums := h1 + "  banger-v0.3.0-linux-amd64.tar.gz\n" + h2 + " *other.tar.gz\r\n\n"
	if got, err := ChecksumFor([]byte(sums), "banger-v0.3.0-linux-amd64.tar.gz"); err != nil || got != h1 {
		t.Errorf("text mode: %q, %v", got, err)
	}
	if got, err := ChecksumFor([]byte(sums), "other.tar.gz"); err != nil || got != strings.ToLower(h2) {
		t.Errorf("binary mode: %q, %v", got, err)
	}
	for _, c := range []struct{ sums, want string }{
		{sums, "no line for missing.tar.gz"},
		{"abc  missing.tar.gz\n", "line 1"},
		{h1 + "missing.tar.gz\n", "line 1"},
		{h1 + "  missing.tar.gz\n" + h2 + "  missing.tar.gz\n", "twice"},
		{strings.Repeat("zz", 32) + "  missing.tar.gz\n", "line 1"},
	} {
		if _, err := ChecksumFor([]byte(c.sums), "missing.tar.gz"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ChecksumFor(%q) err = %v, want %q", c.sums, err, c.want)
		}
	}
}

func TestVerifySignature(t *testing.T) {
	key := newTestKey(t)
	other := newTestKey(t)
	data := []byte("0000  banger.tar.gz\n")
	sig := key.sign(t, data)
	if err := VerifySignature([]byte(key.pubPEM), data, sig); err != nil {
		t.Errorf("DER: %v", err)
	}
	b64 := base64.StdEncoding.EncodeToString(sig)
	if err := VerifySignature([]byte(key.pubPEM), data, []byte(b64+"\n")); err != nil {
		t.Errorf("base64: %v", err)
	}
	wrapped := b64[:20] + "\n" + b64[20:] + "\n"
	if err := VerifySignature([]byte(key.pubPEM), data, []byte(wrapped)); err != nil {
		t.Errorf("wrapped base64: %v", err)
	}
	for name, c := range map[string]struct {
		pub       string
		data, sig []byte
	}{
		"other key":   {other.pubPEM, data, sig},
		"tampered":    {key.pubPEM, append([]byte("x"), data...), sig},
		"empty":       {key.pubPEM, data, nil},
		"garbage":     {key.pubPEM, data, []byte("not a signature")},
		"truncated":   {key.pubPEM, data, sig[:len(sig)-1]},
		"no pem":      {"nonsense", data, sig},
		"private pem": {"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", data, sig},
	} {
		if err := VerifySignature([]byte(c.pub), c.data, c.sig); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParsePublicKeyRejectsOtherCurves(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	p := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if _, err := ParsePublicKey(p); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Fatalf("P-384 key: err = %v", err)
	}
}

func TestReleasePublicKeyParses(t *testing.T) {
	if _, err := ParsePublicKey([]byte(ReleasePublicKey)); err != nil {
		t.Fatal(err)
	}
}

func TestVersionIn(t *testing.T) {
	for out, want := range map[string]string{
		"banger version v0.3.0\n": "v0.3.0",
		"bangerd v0.3.0\n":        "v0.3.0",
		"v0.3.0\n":                "v0.3.0",
		"27736fe-dirty\n":         "27736fe-dirty",
		"":                        "",
	} {
		if got := versionIn(out); got != want {
			t.Errorf("versionIn(%q) = %q, want %q", out, got, want)
		}
	}
}
