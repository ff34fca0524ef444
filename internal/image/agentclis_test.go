package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The golden image's agent CLIs are staged by scripts/agent-clis/fetch.sh
// from npm tarballs pinned by sha512 in scripts/agent-clis/manifest.txt.
const fetchScript = "../../scripts/agent-clis/fetch.sh"

type tarEntry struct {
	name, body, link string
	mode             int64
}

func tgz(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.body)), Typeflag: tar.TypeReg}
		if e.link != "" {
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.link, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func integrity(b []byte) string {
	s := sha512.Sum512(b)
	return "sha512-" + base64.StdEncoding.EncodeToString(s[:])
}

// runFetch serves tarballs as an npm registry and runs fetch.sh with
// manifest; it returns the output directory, the script's output and
// whether it succeeded.
func runFetch(t *testing.T, tarballs map[string][]byte, manifest string) (string, string, bool) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := tarballs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	defer srv.Close()
	dir := t.TempDir()
	mf := filepath.Join(dir, "manifest.txt")
	if err := os.WriteFile(mf, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	cmd := exec.Command("bash", fetchScript, out)
	cmd.Env = append(os.Environ(), "BANGER_NPM_REGISTRY="+srv.URL, "BANGER_NPM_CACHE="+filepath.Join(dir, "cache"),
		"BANGER_AGENT_MANIFEST="+mf)
	b, err := cmd.CombinedOutput()
	return out, string(b), err == nil
}

func TestAgentFetchChecksAndStages(t *testing.T) {
	good := tgz(t, []tarEntry{{name: "package/package.json", body: "{}", mode: 0o644},
		{name: "package/bin/tool", body: "#!/bin/sh\n", mode: 0o755}})
	scoped := tgz(t, []tarEntry{{name: "package/cli.js", body: "x", mode: 0o755}})
	tarballs := map[string][]byte{
		"/tool-linux-x64/-/tool-linux-x64-1.2.3.tgz": good,
		"/@acme/cli/-/cli-0.1.0-linux-x64.tgz":       scoped,
	}
	manifest := "# comment\n" +
		"tool-linux-x64 tool-linux-x64@1.2.3 " + integrity(good) + "\n" +
		"@acme/cli-linux-x64 @acme/cli@0.1.0-linux-x64 " + integrity(scoped) + "\n" +
		"link tool tool-linux-x64/bin/tool\n" +
		"link acme @acme/cli-linux-x64/cli.js\n"
	out, log, ok := runFetch(t, tarballs, manifest)
	if !ok {
		t.Fatalf("fetch failed: %s", log)
	}
	if b, err := os.ReadFile(filepath.Join(out, "bin/tool")); err != nil || string(b) != "#!/bin/sh\n" {
		t.Errorf("bin/tool: %q %v", b, err)
	}
	if target, _ := os.Readlink(filepath.Join(out, "bin/acme")); target != "../node_modules/@acme/cli-linux-x64/cli.js" {
		t.Errorf("bin/acme -> %q", target)
	}
}

func TestAgentFetchRefusesHostileInput(t *testing.T) {
	good := tgz(t, []tarEntry{{name: "package/bin/tool", body: "ok", mode: 0o755}})
	escape := tgz(t, []tarEntry{{name: "package/../../../escaped", body: "pwned", mode: 0o644}})
	outLink := tgz(t, []tarEntry{{name: "package/bin/tool", link: "/etc/passwd"}})
	const path = "/tool/-/tool-1.0.0.tgz"
	cases := map[string]struct {
		tarball  []byte
		manifest string
		want     string
	}{
		"wrong hash":     {good, "tool tool@1.0.0 " + integrity([]byte("other")) + "\n", "sha512 mismatch"},
		"not sha512":     {good, "tool tool@1.0.0 sha1-abc\n", "integrity must be sha512"},
		"dir escapes":    {good, "../x tool@1.0.0 " + integrity(good) + "\n", "bad directory"},
		"member escapes": {escape, "tool tool@1.0.0 " + integrity(escape) + "\n", "contains '..'"},
		"link out of node_modules": {outLink, "tool tool@1.0.0 " + integrity(outLink) + "\nlink tool tool/bin/tool\n",
			"leads out of node_modules"},
		"link to nothing":        {good, "tool tool@1.0.0 " + integrity(good) + "\nlink x tool/bin/none\n", "missing"},
		"link name with a slash": {good, "tool tool@1.0.0 " + integrity(good) + "\nlink a/b tool/bin/tool\n", "bad link name"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			out, log, ok := runFetch(t, map[string][]byte{path: c.tarball}, c.manifest)
			if ok {
				t.Fatalf("accepted: %s", log)
			}
			if c.want != "" && !strings.Contains(log, c.want) {
				t.Errorf("output %q lacks %q", log, c.want)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(out), "escaped")); err == nil {
				t.Errorf("a tar member escaped the staging directory")
			}
			if name == "wrong hash" {
				if entries, _ := os.ReadDir(filepath.Join(filepath.Dir(out), "cache")); len(entries) != 0 {
					t.Errorf("a tarball with a wrong hash was kept: %v", entries)
				}
				if entries, _ := os.ReadDir(filepath.Join(out, "node_modules")); len(entries) != 0 {
					t.Errorf("a tarball with a wrong hash was unpacked: %v", entries)
				}
			}
		})
	}
}
