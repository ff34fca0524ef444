//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// tarLayer makes a layer from entries written by f.
func tarLayer(t *testing.T, f func(tw *tar.Writer)) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	f(tw)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func file(tw *tar.Writer, name string, mode int64, uid int, body string) {
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Uid: uid, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0)})
	tw.Write([]byte(body))
}

func entry(tw *tar.Writer, h tar.Header) {
	h.ModTime = time.Unix(1700000000, 0)
	tw.WriteHeader(&h)
}

// TestOCIPull: an image pushed to an in-process registry (served inside
// the daemon's namespace) is pulled, flattened with whiteouts, opaque
// directories, symlinks, hardlinks and a setuid file, and boots; an image
// without an init system boots with the agent as PID 1 and its sshd
// started.
func TestOCIPull(t *testing.T) {
	ctx := ctxFor(t, 15*time.Minute)

	l := listenInDaemonNS(t)
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	reg := l.Addr().String()

	baseLayer := fixtureLayer(t, ctx)
	lower := tarLayer(t, func(tw *tar.Writer) {
		entry(tw, tar.Header{Name: "etc/ocitest/", Typeflag: tar.TypeDir, Mode: 0o755})
		file(tw, "etc/ocitest/keep", 0o644, 0, "keep\n")
		file(tw, "etc/ocitest/gone", 0o644, 0, "gone\n")
		entry(tw, tar.Header{Name: "opt/opaque/", Typeflag: tar.TypeDir, Mode: 0o755})
		file(tw, "opt/opaque/lower", 0o644, 0, "lower\n")
	})
	upper := tarLayer(t, func(tw *tar.Writer) {
		file(tw, "etc/ocitest/.wh.gone", 0o644, 0, "")
		entry(tw, tar.Header{Name: "opt/opaque/", Typeflag: tar.TypeDir, Mode: 0o755})
		file(tw, "opt/opaque/.wh..wh..opq", 0o644, 0, "")
		file(tw, "opt/opaque/upper", 0o644, 0, "upper\n")
		entry(tw, tar.Header{Name: "etc/ocitest/link", Typeflag: tar.TypeSymlink, Linkname: "keep"})
		entry(tw, tar.Header{Name: "etc/ocitest/hard", Typeflag: tar.TypeLink, Linkname: "etc/ocitest/keep"})
		file(tw, "usr/local/bin/suid", 0o4755, 0, "#!/bin/sh\necho suid\n")
		file(tw, "etc/ocitest/owned", 0o640, 1234, "owned\n")
	})
	img, err := mutate.AppendLayers(empty.Image, baseLayer, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Env: []string{"PATH=/usr/bin:/bin"}, Cmd: []string{"/bin/bash"}})
	if err != nil {
		t.Fatal(err)
	}
	// The second image has no init system: the upper layer removes it.
	noInit, err := mutate.AppendLayers(img, tarLayer(t, func(tw *tar.Writer) {
		file(tw, "usr/sbin/.wh.init", 0o644, 0, "")
		file(tw, "usr/lib/systemd/.wh.systemd", 0o644, 0, "")
	}))
	if err != nil {
		t.Fatal(err)
	}
	for ref, im := range map[string]v1.Image{reg + "/e2e/debian:v1": img, reg + "/e2e/noinit:v1": noInit} {
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		// The registry listens in the daemon's namespace: push from there.
		if err := pushInNS(ctx, r, im); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
	}
	t.Cleanup(func() {
		c := ctxFor(t, time.Minute)
		e.cli(c, "", "vm", "delete", "ocinoinit")
		e.cli(c, "", "image", "rm", "debian-v1")
		e.cli(c, "", "image", "rm", "noinit-oci")
	})

	r := must(t, e.cli(ctx, "", "image", "pull", reg+"/e2e/debian:v1", "--kernel", "debian"))
	if !strings.Contains(r.stdout, "debian-v1") {
		t.Errorf("pull should register the derived name debian-v1: %s", r)
	}
	r = must(t, e.cli(ctx, "", "image", "pull", reg+"/e2e/debian:v1", "--kernel", "debian"))
	if !strings.Contains(r.stdout, "already") {
		t.Errorf("second pull: %s", r)
	}
	script := strings.Join([]string{
		"cat /proc/1/comm",
		"test -e /etc/ocitest/gone && echo gone-present",
		"test -e /opt/opaque/lower && echo lower-present",
		"cat /opt/opaque/upper",
		"readlink /etc/ocitest/link",
		"[ $(stat -c %i /etc/ocitest/hard) = $(stat -c %i /etc/ocitest/keep) ] && echo same-inode",
		"stat -c '%a %u' /usr/local/bin/suid /etc/ocitest/owned",
		"stat -c '%F %t:%T' /dev/null",
		"true",
	}, "; ")
	r = must(t, e.cli(ctx, "", "vm", "run", "--rm", "--image", "debian-v1", "--", "sh", "-c", script))
	want := "systemd\nupper\nkeep\nsame-inode\n4755 0\n640 1234\ncharacter special file 1:3\n"
	if r.stdout != want {
		t.Errorf("guest of the pulled image:\n got %q\nwant %q", r.stdout, want)
	}

	must(t, e.cli(ctx, "", "image", "pull", reg+"/e2e/noinit:v1", "--kernel", "debian", "--name", "noinit-oci"))
	must(t, e.cli(ctx, "", "vm", "create", "--name", "ocinoinit", "--image", "noinit-oci", "--network", "none"))
	r = must(t, e.cli(ctx, "", "vm", "exec", "ocinoinit", "--", "sh", "-c", "cat /proc/1/comm; sleep 0.1 & wait; echo ok"))
	if r.stdout != "banger-agent\nok\n" {
		t.Errorf("init-less image: PID 1 should be the agent: %q", r.stdout)
	}
	// sshd is started by the agent (it may take a moment).
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r = e.cli(ctx, "", "vm", "exec", "ocinoinit", "--", "sh", "-c", "cat /proc/[0-9]*/comm | grep -x sshd")
		if r.code == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if r.code != 0 {
		t.Errorf("sshd is not running in the init-less guest: %s", r)
	}
}

// fixtureLayer is the fixture's debootstrap tree as one image layer,
// tarred by GNU tar (device nodes, hardlinks, ownership as they are).
func fixtureLayer(t *testing.T, ctx context.Context) v1.Layer {
	t.Helper()
	base := filepath.Join(t.TempDir(), "base.tar")
	if out, err := exec.CommandContext(ctx, "tar", "-C", filepath.Join(os.Getenv("BANGER_FIXTURES"), "rootfs"),
		"--numeric-owner", "-cf", base, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar fixture: %v %s", err, out)
	}
	l, err := tarball.LayerFromFile(base, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pushInNS pushes an image from inside the daemon's network namespace,
// where the test registry listens.
func pushInNS(ctx context.Context, ref name.Reference, img v1.Image) error {
	return remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(nsTransport(ctx)))
}
