//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"

	"banger/internal/oci/ocitest"
)

// TestHostileImages: a registry offers images built to attack the host
// through `image pull`. Each is refused with a clear error (or, for
// device nodes, contained in the guest's disk); afterwards the host is
// unchanged (no marker file, no file written through a link, no bytes
// beyond the cap), no image row exists and nothing is left under the
// state directory.
func TestHostileImages(t *testing.T) {
	ctx := ctxFor(t, 15*time.Minute)
	l := listenInDaemonNS(t)
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	reg := l.Addr().String()

	rnd := make([]byte, 6)
	rand.Read(rnd)
	tag := hex.EncodeToString(rnd)
	marker := "/tmp/pwned-" + tag
	outside := t.TempDir() // a host directory a layer tries to write into
	t.Cleanup(func() { os.Remove(marker) })

	state := filepath.Join(e.root, "state", "banger")
	cases := []struct {
		name   string // image name (and repository)
		layer  func(t *testing.T) v1.Layer
		errHas string // "" when the pull must succeed
	}{
		{"xattr-injection", func(t *testing.T) v1.Layer {
			return tarLayer(t, func(tw *tar.Writer) {
				tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX,
					PAXRecords: map[string]string{"SCHILY.xattr.user.x\n!touch " + marker + " #": "v"}})
			})
		}, "control character"},
		{"sparse-bomb", func(t *testing.T) v1.Layer {
			return rawLayer(t, gnuSparseTar("bomb", 1<<33-1)) // 8 GiB of holes in 2 KiB
		}, "image too large"},
		{"zstd-bomb", func(t *testing.T) v1.Layer {
			return bomb(t, 3<<30, func(w io.Writer) (io.WriteCloser, error) { return zstd.NewWriter(w) })
		}, "image too large"},
		{"gzip-bomb", func(t *testing.T) v1.Layer {
			return bomb(t, 5<<29, func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriterLevel(w, gzip.BestSpeed) })
		}, "image too large"},
		{"dotdot", func(t *testing.T) v1.Layer {
			return tarLayer(t, func(tw *tar.Writer) { file(tw, "../../../../../../"+outside[1:]+"/pwned", 0o644, 0, "x") })
		}, "leaves the root"},
		{"symlink-write", func(t *testing.T) v1.Layer {
			return tarLayer(t, func(tw *tar.Writer) {
				entry(tw, tar.Header{Name: "escape", Typeflag: tar.TypeSymlink, Linkname: outside})
				file(tw, "escape/pwned", 0o644, 0, "x")
			})
		}, "symbolic link"},
		{"hardlink-out", func(t *testing.T) v1.Layer {
			return tarLayer(t, func(tw *tar.Writer) {
				entry(tw, tar.Header{Name: "shadow", Typeflag: tar.TypeLink, Linkname: "../../../../../../etc/shadow"})
			})
		}, "leaves the root"},
		{"devices", func(t *testing.T) v1.Layer {
			return tarLayer(t, func(tw *tar.Writer) {
				entry(tw, tar.Header{Name: "hostdisk", Typeflag: tar.TypeBlock, Mode: 0o666, Devmajor: 8, Devminor: 0})
				entry(tw, tar.Header{Name: "kmem", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 2})
			})
		}, ""},
	}
	for _, c := range cases {
		img, err := mutate.AppendLayers(empty.Image, c.layer(t))
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(reg+"/hostile/"+c.name+":v1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := pushInNS(ctx, ref, img); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
	}
	t.Cleanup(func() {
		for _, c := range cases {
			e.cli(ctxFor(t, time.Minute), "", "image", "rm", "hostile-"+c.name)
		}
	})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := "hostile-" + c.name
			before := allocated(t, state)
			r := e.cli(ctx, "", "image", "pull", reg+"/hostile/"+c.name+":v1", "--kernel", "debian", "--name", img)
			grown := allocated(t, state) - before
			t.Logf("pull %s: exit %d: %s", img, r.code, strings.TrimSpace(r.stderr))
			if c.errHas == "" {
				if r.code != 0 {
					t.Fatalf("pull: %s", r)
				}
			} else if r.code == 0 || !strings.Contains(r.stderr, c.errHas) {
				t.Fatalf("pull: want a refusal with %q, got %s", c.errHas, r)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("%s exists: a layer ran a command on the host", marker)
			}
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Fatalf("a layer wrote into %s: %v", outside, ents)
			}
			if grown > 64<<20 {
				t.Errorf("the state directory grew by %d MiB", grown>>20)
			}
			assertNoPullLeftovers(t, state)
			listed := strings.Contains(must(t, e.cli(ctx, "", "image", "list")).stdout, img)
			if c.errHas != "" {
				if listed {
					t.Errorf("refused image %s is listed", img)
				}
				if _, err := os.Stat(filepath.Join(state, "images", img)); err == nil {
					t.Errorf("refused image %s left its directory", img)
				}
				return
			}
			// Devices are contained: nodes in the guest's disk, never on the host.
			if !listed {
				t.Fatalf("image %s not listed", img)
			}
			rootfs := filepath.Join(state, "images", img, "rootfs.ext4")
			for p, want := range map[string]string{"/hostdisk": "Type: block", "/kmem": "Type: character"} {
				out, err := exec.CommandContext(ctx, "debugfs", "-R", "stat "+p, rootfs).CombinedOutput()
				if err != nil || !strings.Contains(string(out), want) {
					t.Errorf("%s in the image: %v %s", p, err, out)
				}
			}
		})
	}
	// No device node was ever made under the state directory.
	filepath.Walk(state, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode()&(os.ModeDevice|os.ModeCharDevice) != 0 {
			t.Errorf("device node on the host: %s", p)
		}
		return nil
	})
}

// rawLayer is an uncompressed layer of b.
func rawLayer(t *testing.T, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// bomb is a compressed layer: a one-file tar followed by n zero bytes,
// compressed by the writer compress makes.
func bomb(t *testing.T, n int64, compress func(io.Writer) (io.WriteCloser, error)) v1.Layer {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	file(tw, "f", 0o644, 0, "x")
	tw.Close()
	var buf bytes.Buffer
	z, err := compress(&buf)
	if err != nil {
		t.Fatal(err)
	}
	z.Write(tb.Bytes())
	zero := make([]byte, 1<<20)
	for i := int64(0); i < n/int64(len(zero)); i++ {
		z.Write(zero)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > 16<<20 {
		t.Fatalf("bomb of %d bytes", buf.Len())
	}
	t.Logf("bomb: %d bytes expanding to %d", buf.Len(), n)
	return rawLayer(t, buf.Bytes())
}

// gnuSparseTar is ocitest.GNUSparseTar with this file's mtime.
func gnuSparseTar(name string, realSize int64) []byte {
	return ocitest.GNUSparseTar(name, realSize, 1700000000)
}

// allocated is the bytes allocated on disk under dir.
func allocated(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// assertNoPullLeftovers fails on temporary files or unpack trees left
// under the state directory.
func assertNoPullLeftovers(t *testing.T, state string) {
	t.Helper()
	filepath.Walk(state, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		b := fi.Name()
		if strings.Contains(b, ".tmp") || strings.HasPrefix(b, ".debugfs-") ||
			(b == "tree" && filepath.Base(filepath.Dir(filepath.Dir(p))) == "images") {
			t.Errorf("leftover %s", p)
		}
		return nil
	})
}
