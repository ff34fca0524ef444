//go:build e2e

package e2e

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// staticBusybox is Debian's busybox-static (installed by quickstart.sh).
const staticBusybox = "/bin/busybox"

// TestScratchImage: an image shaped like `FROM scratch` + a static
// busybox (only /bin/busybox and a /bin/sh link: no /etc, /tmp, /root,
// /run, /dev, /proc or /sys) is pulled from a registry and boots with the
// agent as PID 1 on a bridge network (so resolv.conf and hosts must be
// made); the image itself is not changed by booting it.
func TestScratchImage(t *testing.T) {
	ctx := ctxFor(t, 10*time.Minute)
	bb, err := os.ReadFile(staticBusybox)
	if err != nil {
		t.Fatalf("this scenario needs Debian's busybox-static (apt-get install busybox-static): %v", err)
	}
	if out, _ := exec.Command("file", "-b", staticBusybox).Output(); len(out) > 0 && !strings.Contains(string(out), "statically linked") {
		t.Fatalf("%s is not statically linked (%s): install busybox-static", staticBusybox, strings.TrimSpace(string(out)))
	}

	l := listenInDaemonNS(t)
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	ref := l.Addr().String() + "/e2e/scratch:v1"

	layer := tarLayer(t, func(tw *tar.Writer) {
		entry(tw, tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
		file(tw, "bin/busybox", 0o755, 0, string(bb))
		entry(tw, tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox"})
	})
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Cmd: []string{"/bin/sh"}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := pushInNS(ctx, r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	t.Cleanup(func() { e.cli(ctxFor(t, time.Minute), "", "image", "rm", "scratch-e2e") })
	must(t, e.cli(ctx, "", "image", "pull", ref, "--kernel", "debian", "--name", "scratch-e2e"))
	var im struct{ Rootfs string }
	jsonUnmarshal(t, must(t, e.cli(ctx, "", "image", "show", "--json", "scratch-e2e")).stdout, &im)
	before := fileSum(t, im.Rootfs)

	res := e.cli(ctx, "", "vm", "run", "--rm", "--image", "scratch-e2e", "--", "/bin/busybox", "echo", "hi")
	if res.code != 0 || res.stdout != "hi\n" {
		t.Fatalf("vm run on a scratch image: %s\ndaemon log tail:\n%s", res, tail(e.daemonLog(), 30))
	}
	// The shell's exit code comes back; HOME, the working directory, /tmp
	// and the files name lookups need are there.
	script := `echo "$HOME $(pwd) $(cat /proc/1/comm)"; ` +
		`test -d /tmp -a -k /tmp -a -f /etc/hosts -a -f /etc/resolv.conf -a -f /etc/passwd && echo files-ok; ` +
		`echo tmp > /tmp/x && cat /tmp/x; exit 3`
	res = e.cli(ctx, "", "vm", "run", "--rm", "--image", "scratch-e2e", "--", "/bin/sh", "-c", script)
	if res.code != 3 {
		t.Errorf("exit code: %s", res)
	}
	if want := "/root /root banger-agent\nfiles-ok\ntmp\n"; res.stdout != want {
		t.Errorf("guest of a scratch image:\n got %q\nwant %q\n%s", res.stdout, want, res)
	}
	if after := fileSum(t, im.Rootfs); after != before {
		t.Errorf("booting changed the image file %s", im.Rootfs)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
