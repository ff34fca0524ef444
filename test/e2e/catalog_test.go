//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// listenInDaemonNS opens a loopback TCP listener inside the daemon's
// network namespace (where the daemon, and so its downloads, live). The
// socket keeps its namespace, so it is served from any goroutine.
func listenInDaemonNS(t *testing.T) net.Listener {
	t.Helper()
	return listenInNS(t, e.netns, e.daemonPID)
}

// listenInNS opens a loopback TCP listener inside the network namespace of
// process pid (in this one when inNS is false).
func listenInNS(t *testing.T, inNS bool, pid int) net.Listener {
	t.Helper()
	if !inNS {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	type res struct {
		l   net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// This thread changes namespace and is never unlocked: Go
		// discards it when the goroutine ends.
		runtime.LockOSThread()
		target, err := netns.GetFromPid(pid)
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			ch <- res{err: err}
			return
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		ch <- res{l, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen in the daemon's namespace: %v", r.err)
	}
	return r.l
}

// nsTransport is an HTTP transport whose connections are made inside the
// daemon's network namespace: a socket keeps the namespace of the thread
// that created it, so dials run on a thread pinned there.
func nsTransport(ctx context.Context) http.RoundTripper {
	return nsTransportOf(ctx, e.netns, e.daemonPID)
}

// nsTransportOf is nsTransport for the network namespace of process pid
// (this one when inNS is false).
func nsTransportOf(ctx context.Context, inNS bool, pid int) http.RoundTripper {
	if !inNS {
		return http.DefaultTransport
	}
	type dial struct {
		network, addr string
		reply         chan net.Conn
		errc          chan error
	}
	reqs := make(chan dial)
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		target, err := netns.GetFromPid(pid)
		if err == nil {
			err = netns.Set(target)
			target.Close()
		}
		ready <- err
		if err != nil {
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case d := <-reqs:
				c, err := net.DialTimeout(d.network, d.addr, 10*time.Second)
				if err != nil {
					d.errc <- err
				} else {
					d.reply <- c
				}
			}
		}
	}()
	if err := <-ready; err != nil {
		panic(fmt.Sprintf("enter the namespace of pid %d: %v", pid, err))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := dial{network, addr, make(chan net.Conn, 1), make(chan error, 1)}
		select {
		case reqs <- d:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case c := <-d.reply:
			return c, nil
		case err := <-d.errc:
			return nil, err
		}
	}
	return tr
}

// served is one file of a fileServer.
type served struct {
	path     string
	truncate bool // send a Content-Length for the whole file, then half of it
}

// fileServer serves files inside the daemon's namespace and counts the
// requests for each.
type fileServer struct {
	URL   string
	mu    sync.Mutex
	files map[string]served
	hits  map[string]int
}

func newFileServer(t *testing.T) *fileServer {
	fs := &fileServer{files: map[string]served{}, hits: map[string]int{}}
	l := listenInDaemonNS(t)
	srv := &http.Server{Handler: fs}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	fs.URL = "http://" + l.Addr().String()
	return fs
}

func (fs *fileServer) add(name string, f served) {
	fs.mu.Lock()
	fs.files[name] = f
	fs.mu.Unlock()
}

func (fs *fileServer) count(name string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.hits[name]
}

func (fs *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	fs.mu.Lock()
	f, ok := fs.files[name]
	fs.hits[name]++
	fs.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	file, err := os.Open(f.path)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	defer file.Close()
	fi, _ := file.Stat()
	w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
	if f.truncate {
		io.CopyN(w, file, fi.Size()/2)
		panic(http.ErrAbortHandler) // cut the connection mid-body
	}
	io.Copy(w, file)
}

func sha256File(t *testing.T, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// writeCatalog makes the configured catalog file (config catalog_url).
func writeCatalog(t *testing.T, c map[string]any) {
	t.Helper()
	b, _ := json.MarshalIndent(c, "", "  ")
	path := filepath.Join(e.root, "catalog.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path) })
}

// exportedBundle exports the suite's debian image once as a bundle.
var exported struct {
	once sync.Once
	path string
	err  error
}

func debianBundle(t *testing.T) string {
	t.Helper()
	exported.once.Do(func() {
		ctx := ctxFor(t, 10*time.Minute)
		exported.path = filepath.Join(e.root, "debian.tar.zst")
		if r := e.cli(ctx, "", "image", "export", "debian", "-o", exported.path); r.code != 0 {
			exported.err = fmt.Errorf("image export: %s", r)
		}
	})
	if exported.err != nil {
		t.Fatal(exported.err)
	}
	return exported.path
}

func imageNames(t *testing.T) map[string]string {
	t.Helper()
	var imgs []struct{ Name, Kernel string }
	jsonUnmarshal(t, must(t, e.cli(ctxFor(t, time.Minute), "", "image", "list", "--json")).stdout, &imgs)
	out := map[string]string{}
	for _, i := range imgs {
		out[i.Name] = i.Kernel
	}
	return out
}

// assertNothingInstalled: a failed pull leaves no row, no image directory
// and no download behind.
func assertNothingInstalled(t *testing.T, name string) {
	t.Helper()
	if _, ok := imageNames(t)[name]; ok {
		t.Errorf("image %q was registered by a failed pull", name)
	}
	if _, err := os.Stat(filepath.Join(e.root, "state/banger/images", name)); err == nil {
		t.Errorf("image directory of %q left behind", name)
	}
	ents, _ := os.ReadDir(filepath.Join(e.root, "state/banger/downloads"))
	for _, en := range ents {
		if !en.IsDir() {
			t.Errorf("download left behind: %s", en.Name())
		}
	}
}

// TestImageExport: an image exports as a bundle (.tar.zst holding
// manifest.json and rootfs.ext4).
func TestImageExport(t *testing.T) {
	path := debianBundle(t)
	b := make([]byte, 4)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Read(b)
	f.Close()
	if hex.EncodeToString(b) != "28b52ffd" {
		t.Errorf("bundle is not zstd: magic %x", b)
	}
	ctx := ctxFor(t, time.Minute)
	r := e.cli(ctx, "", "image", "export", "no-such-image", "-o", filepath.Join(t.TempDir(), "x.tar.zst"))
	if r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("export of a missing image: %s", r)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) == 0 {
		t.Error("bundle vanished")
	}
}

// TestCatalogPull: kernels and images pulled from a catalog served by a
// local HTTP server: verified, installed once, usable; bad downloads
// install nothing; parallel creates of a missing image download it once.
func TestCatalogPull(t *testing.T) {
	ctx := ctxFor(t, 15*time.Minute)
	bundle := debianBundle(t)
	deb := filepath.Join(os.Getenv("BANGER_FIXTURES"), "kernel/linux-image.deb")
	bsum, bsize := sha256File(t, bundle)
	ksum, ksize := sha256File(t, deb)

	fs := newFileServer(t)
	fs.add("kernel.deb", served{path: deb})
	fs.add("img.tar.zst", served{path: bundle})
	fs.add("par.tar.zst", served{path: bundle})
	fs.add("cut.tar.zst", served{path: bundle, truncate: true})
	img := func(name, url, sum, kernel string) map[string]any {
		return map[string]any{"name": name, "arch": "x86_64", "distro": "debian", "kernel": kernel, "url": url, "sha256": sum, "size": bsize}
	}
	writeCatalog(t, map[string]any{
		"kernels": []any{map[string]any{"name": "cat-kernel", "arch": "x86_64", "format": "deb", "url": fs.URL + "/kernel.deb", "sha256": ksum, "size": ksize}},
		"images": []any{
			img("cat-img", fs.URL+"/img.tar.zst", bsum, "cat-kernel"),
			img("par-img", fs.URL+"/par.tar.zst", bsum, "debian"),
			img("bad-sha", fs.URL+"/img.tar.zst", strings.Repeat("ab", 32), "debian"),
			img("cut", fs.URL+"/cut.tar.zst", bsum, "debian"),
			img("gone", fs.URL+"/gone.tar.zst", bsum, "debian"),
		},
	})
	t.Cleanup(func() {
		c := ctxFor(t, time.Minute)
		e.cli(c, "", "image", "rm", "cat-img")
		e.cli(c, "", "image", "rm", "par-img")
		e.cli(c, "", "kernel", "rm", "cat-kernel")
	})

	r := must(t, e.cli(ctx, "", "catalog", "--json"))
	if !strings.Contains(r.stdout, `"cat-img"`) || !strings.Contains(r.stdout, `"cat-kernel"`) {
		t.Errorf("catalog listing: %s", r.stdout)
	}

	// The image pulls its kernel too; both are verified and installed.
	must(t, e.cli(ctx, "", "image", "pull", "cat-img"))
	if k := imageNames(t)["cat-img"]; k != "cat-kernel" {
		t.Fatalf("cat-img kernel = %q", k)
	}
	if fs.count("kernel.deb") != 1 || fs.count("img.tar.zst") != 1 {
		t.Errorf("downloads: kernel %d, image %d", fs.count("kernel.deb"), fs.count("img.tar.zst"))
	}
	// A second pull of the same name is a no-op success.
	r = must(t, e.cli(ctx, "", "image", "pull", "cat-img"))
	if !strings.Contains(r.stdout+r.stderr, "already") {
		t.Errorf("second pull should say it was already there: %s", r)
	}
	must(t, e.cli(ctx, "", "kernel", "pull", "cat-kernel"))
	if fs.count("kernel.deb") != 1 || fs.count("img.tar.zst") != 1 {
		t.Errorf("a second pull downloaded again: kernel %d, image %d", fs.count("kernel.deb"), fs.count("img.tar.zst"))
	}
	// The pulled image boots with the pulled kernel.
	r = must(t, e.cli(ctx, "", "vm", "run", "--rm", "--image", "cat-img", "--", "cat", "/etc/debian_version"))
	if !strings.HasPrefix(r.stdout, "12") {
		t.Errorf("guest of cat-img: %q", r.stdout)
	}

	// Bad downloads: a clear error and nothing installed.
	for _, c := range []struct{ name, want string }{
		{"bad-sha", "sha256 mismatch"},
		{"cut", "truncated"},
		{"gone", "404"},
	} {
		r := e.cli(ctx, "", "image", "pull", c.name)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("pull %s: want an error with %q, got %s", c.name, c.want, r)
		}
		assertNothingInstalled(t, c.name)
	}
	r = e.cli(ctx, "", "image", "pull", "not-in-catalog")
	if r.code == 0 || !strings.Contains(r.stderr, "not in the catalog") {
		t.Errorf("pull of an unknown name: %s", r)
	}

	// Eight parallel creates of one missing image: one download, eight VMs.
	var wg sync.WaitGroup
	results := make([]result, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = e.cli(ctx, "", "vm", "create", "--no-start", "--image", "par-img", "--name", fmt.Sprintf("par-%d", i))
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for i := range results {
			e.cli(ctxFor(t, time.Minute), "", "vm", "delete", fmt.Sprintf("par-%d", i))
		}
	})
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("create par-%d: %s", i, r)
		}
	}
	if n := fs.count("par.tar.zst"); n != 1 {
		t.Errorf("parallel creates downloaded the image %d times, want 1", n)
	}
}

// TestImageBuildFromImage: --copy and --run customise a base image into a
// new one; a failing --run registers nothing and leaves no VM behind.
func TestImageBuildFromImage(t *testing.T) {
	ctx := ctxFor(t, 10*time.Minute)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "copied.txt"), []byte("copied\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "tree/b"), 0o755)
	os.WriteFile(filepath.Join(dir, "tree/a"), []byte("a\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "tree/b/c"), []byte("c\n"), 0o755)
	before := len(vmNames(t, ctx))

	r := must(t, e.cli(ctx, "", "image", "build", "marked", "--from-image", "debian",
		"--copy", filepath.Join(dir, "copied.txt")+":/etc/copied.txt",
		"--copy", filepath.Join(dir, "tree")+":/opt/tree",
		"--run", "echo hi > /etc/marker",
		"--run", "echo kept > /root/rootfile; echo build-says-hello"))
	// The commands and their output are shown as they run.
	if !strings.Contains(r.stderr, "+ echo hi > /etc/marker\n") || !strings.Contains(r.stderr, "build-says-hello\n") {
		t.Errorf("build output: %s", r)
	}
	t.Cleanup(func() { e.cli(ctxFor(t, time.Minute), "", "image", "rm", "marked") })
	if k := imageNames(t)["marked"]; k != "debian" {
		t.Errorf("marked should keep the base image's kernel, got %q", k)
	}
	r = must(t, e.cli(ctx, "", "vm", "run", "--rm", "--image", "marked", "--",
		"sh", "-c", "cat /etc/marker /etc/copied.txt /opt/tree/a /opt/tree/b/c /root/rootfile; stat -c %a /opt/tree/b/c"))
	if r.stdout != "hi\ncopied\na\nc\nkept\n755\n" {
		t.Errorf("guest of marked: %q", r.stdout)
	}

	r = e.cli(ctx, "", "image", "build", "broken", "--from-image", "debian", "--run", "echo before", "--run", "echo oops >&2; exit 7")
	if r.code == 0 || !strings.Contains(r.stderr, "exited with status 7") || !strings.Contains(r.stderr, "oops") {
		t.Errorf("failing --run: %s", r)
	}
	assertNothingInstalled(t, "broken")
	if n := len(vmNames(t, ctx)); n != before {
		t.Errorf("build left %d VMs behind", n-before)
	}
	r = e.cli(ctx, "", "image", "build", "nobase", "--from-dir", dir, "--run", "true")
	if r.code == 0 || !strings.Contains(r.stderr, "--from-image") {
		t.Errorf("--run without --from-image: %s", r)
	}
	assertNothingInstalled(t, "nobase")
}
