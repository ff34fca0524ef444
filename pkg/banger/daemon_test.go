package banger_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/apitest"
	"banger/internal/apitest/apidaemon"
	"banger/internal/testenv"
	"banger/pkg/banger"
)

func TestMain(m *testing.M) {
	apidaemon.RunDaemonIfChild()
	testenv.Main(m)
}

// collector gathers the mismatches a validating transport reports.
type collector struct {
	mu   sync.Mutex
	errs []error
}

func (c *collector) report(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs = append(c.errs, err)
}

func (c *collector) take() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.errs
	c.errs = nil
	return e
}

func loadDoc(t *testing.T) *apitest.Doc {
	t.Helper()
	doc, err := apitest.Load(context.Background(), apitest.DocPath())
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// validated returns an SDK client whose every request and answer is
// checked against api/openapi.yaml; a mismatch fails t.
func validated(t *testing.T, doc *apitest.Doc, opts ...banger.Option) *banger.Client {
	t.Helper()
	opts = append(opts, banger.WithTransport(func(rt http.RoundTripper) http.RoundTripper {
		return doc.Transport(rt, func(err error) { t.Errorf("openapi: %v", err) })
	}))
	c, err := banger.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// raw is an http.Client on the daemon's socket through a validating
// transport reporting to col.
func raw(sock string, doc *apitest.Doc, col *collector) *http.Client {
	return &http.Client{Transport: doc.Transport(&http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}, col.report)}
}

// The daemon of these tests has no catalog to pull from: a missing image
// fails at once instead of reaching the network.
const offlineConfig = "catalog_url = \"/nonexistent/banger-catalog.json\"\n"

// TestRealDaemonAnswersMatchDocument drives a real bangerd through the
// SDK over a validating transport: every call that needs no VM, and the
// errors of the calls that do.
func TestRealDaemonAnswersMatchDocument(t *testing.T) {
	doc := loadDoc(t)
	d := apidaemon.StartDaemon(t, offlineConfig)
	c := validated(t, doc, banger.WithSocket(d.Socket()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	p, err := c.Ping(ctx)
	if err != nil || p.PID <= 0 || p.Socket != d.Socket() {
		t.Fatalf("ping: %+v %v", p, err)
	}
	vms, err := c.List(ctx)
	if err != nil || len(vms) != 0 {
		t.Fatalf("list: %v %v", vms, err)
	}
	if _, err := c.Get(ctx, "nope"); !banger.IsNotFound(err) {
		t.Errorf("get of a missing vm: %v, want not_found", err)
	}
	var ae *banger.Error
	if err := c.Delete(ctx, "nope"); !errors.As(err, &ae) || ae.Code != banger.CodeNotFound || ae.OpID == "" {
		t.Errorf("delete of a missing vm: %#v", err)
	}
	if _, err := c.Exec(ctx, "nope", banger.Cmd{Argv: []string{"true"}}); !banger.IsNotFound(err) {
		t.Errorf("exec in a missing vm: %v, want not_found before the upgrade", err)
	}
	if _, err := c.Sessions(ctx, "nope"); !banger.IsNotFound(err) {
		t.Errorf("sessions of a missing vm: %v", err)
	}
	if err := c.ExportWorkspace(ctx, "nope", io.Discard, ""); !banger.IsNotFound(err) {
		t.Errorf("export of a missing vm: %v", err)
	}
	if _, err := c.Wait(ctx, "nope", banger.WaitAgent, 0); !banger.IsNotFound(err) {
		t.Errorf("wait of a missing vm: %v", err)
	}
	// A long call that fails: the error arrives as the last ndjson event.
	if _, err := c.Create(ctx, banger.CreateParams{Name: "x", Image: "no-such-image"}); err == nil {
		t.Errorf("create from a missing image succeeded")
	} else if banger.ErrorCode(err) == "" {
		t.Errorf("create from a missing image: %v, want a coded error", err)
	}
	if vms, _ := c.List(ctx); len(vms) != 0 {
		t.Errorf("a failed create left %v", vms)
	}

	// The calls the SDK has no method for, and the error routes, through
	// a raw validating client.
	col := &collector{}
	hc := raw(d.Socket(), doc, col)
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := hc.Get("http://bangerd" + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, path := range []string{"/v1/kernels", "/v1/images", "/v1/catalog?catalog=" + writeCatalog(t), "/v1/kernels/nope", "/v1/images/nope", "/v1/images/nope/bundle", "/v1/vms/nope/ports", "/v1/vms/nope/readiness", "/v1/vms/nope/logs", "/v1/vms/nope/sessions/s"} {
		resp, b := get(path)
		if resp.StatusCode != 200 && resp.StatusCode != 404 {
			t.Errorf("GET %s: %s %s", path, resp.Status, b)
		}
	}
	for _, e := range col.take() {
		t.Errorf("openapi: %v", e)
	}
	// Not routes: the error answers are still Errors.
	errSchema, err := doc.Schema("Error")
	if err != nil {
		t.Fatal(err)
	}
	for path, code := range map[string]string{"/v1/no-such-call": banger.CodeUnknownMethod, "/v2/ping": banger.CodeBadVersion} {
		resp, b := get(path)
		if resp.StatusCode != 404 {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
		if err := apitest.CheckJSON(errSchema, b); err != nil {
			t.Errorf("GET %s: %v", path, err)
		}
		var ae banger.Error
		json.Unmarshal(b, &ae)
		if ae.Code != code {
			t.Errorf("GET %s: code %q, want %q", path, ae.Code, code)
		}
		if errs := col.take(); len(errs) == 0 {
			t.Errorf("GET %s: the validator did not notice an undescribed route", path)
		}
	}
	// A described path with a method it does not serve.
	req, _ := http.NewRequest(http.MethodPut, "http://bangerd/v1/ping", nil)
	if resp, err := hc.Do(req); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !bytes.Contains(b, []byte(`"unknown_method"`)) {
			t.Errorf("PUT /v1/ping: %s %s", resp.Status, b)
		}
		col.take() // not described: the validator says so
	}
	// Long calls that fail: the error is the last event of the stream,
	// every line checked against the document.
	for path, body := range map[string]string{
		"/v1/kernels":      `{"name":"k","from":"/nonexistent/linux-image.deb"}`,
		"/v1/kernels/pull": `{"name":"no-such-kernel"}`,
		"/v1/images/pull":  `{"ref":"no-such-image"}`,
		"/v1/images":       `{"name":"img","from_dir":"/nonexistent/rootfs"}`,
	} {
		resp, err := hc.Post("http://bangerd"+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" || !strings.HasPrefix(lines[len(lines)-1], `{"error":`) {
			t.Errorf("POST %s: %s %s", path, resp.Status, b)
		}
	}
	if resp, err := hc.Post("http://bangerd/v1/images/register", "application/json", strings.NewReader(`{"name":"img","rootfs":"/nonexistent.ext4","kernel":"nope"}`)); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
		if resp.StatusCode/100 != 4 {
			t.Errorf("register with a missing kernel: %s", resp.Status)
		}
	}
	for _, e := range col.take() {
		t.Errorf("openapi: %v", e)
	}
	if ks, _ := c.List(ctx); len(ks) != 0 {
		t.Errorf("failed calls left vms %v", ks)
	}
	for _, path := range []string{"/v1/kernels", "/v1/images"} {
		if _, b := get(path); strings.TrimSpace(string(b)) != "[]" {
			t.Errorf("failed calls left %s: %s", path, b)
		}
	}
	// A body the daemon refuses: 400 before any stream starts.
	resp, err := hc.Post("http://bangerd/v1/vms", "application/json", strings.NewReader(`{"bogus": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !bytes.Contains(b, []byte(`"bad_request"`)) {
		t.Errorf("bad body: %s %s", resp.Status, b)
	}
	// The validator flags the request (the document forbids the field)
	// and nothing about the answer.
	errs := col.take()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "request") {
		t.Errorf("bad body: validator said %v, want exactly the request refused", errs)
	}
}

// writeCatalog writes a small valid catalog file and returns its path.
func writeCatalog(t *testing.T) string {
	t.Helper()
	f := t.TempDir() + "/catalog.json"
	sum := strings.Repeat("ab", 32)
	c := fmt.Sprintf(`{"kernels":[{"name":"k","arch":"x86_64","url":"k.deb","sha256":%q,"size":1,"format":"deb"}],"images":[{"name":"i","arch":"x86_64","kernel":"k","url":"i.tar.zst","sha256":%q,"size":2}]}`, sum, sum)
	if err := os.WriteFile(f, []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// freePort returns a loopback port nothing listens on (a moment ago).
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRemoteAPIToken: with api_listen the daemon serves TCP too, where
// every request needs the token; the Unix socket is unchanged.
func TestRemoteAPIToken(t *testing.T) {
	doc := loadDoc(t)
	addr := freePort(t)
	d := apidaemon.StartDaemon(t, offlineConfig+"api_listen = \""+addr+"\"\n")
	tokenFile := d.Layout.APIToken()
	fi, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatalf("token file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	tok, _ := os.ReadFile(tokenFile)
	if len(strings.TrimSpace(string(tok))) != 64 {
		t.Errorf("token %q: want 64 hex characters", tok)
	}
	if !strings.Contains(d.Logs(), tokenFile) {
		t.Errorf("the daemon log does not name the token file:\n%s", d.Logs())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	col := &collector{}
	hc := &http.Client{Transport: doc.Transport(&http.Transport{DisableKeepAlives: true}, col.report)}
	errSchema, _ := doc.Schema("Error")
	for name, header := range map[string]string{
		"no token":     "",
		"wrong token":  "Bearer " + strings.Repeat("0", 64),
		"not bearer":   "Basic " + strings.TrimSpace(string(tok)),
		"token prefix": "Bearer " + strings.TrimSpace(string(tok))[:32],
	} {
		for _, path := range []string{"/v1/ping", "/v1/vms", "/v1/daemon/stop"} {
			method := http.MethodGet
			if path == "/v1/daemon/stop" {
				method = http.MethodPost
			}
			req, _ := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
			if header != "" {
				req.Header.Set("Authorization", header)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", name, path, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var ae banger.Error
			json.Unmarshal(b, &ae)
			if resp.StatusCode != http.StatusUnauthorized || ae.Code != banger.CodeUnauthorized {
				t.Errorf("%s: %s %s answered %s %s, want 401 unauthorized", name, method, path, resp.Status, b)
			}
			if err := apitest.CheckJSON(errSchema, b); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	for _, e := range col.take() {
		t.Errorf("openapi: %v", e)
	}

	// The SDK with the token, through the validator.
	c := validated(t, doc, banger.WithAddress("tcp://"+addr), banger.WithTokenFile(tokenFile))
	if p, err := c.Ping(ctx); err != nil || p.PID <= 0 {
		t.Fatalf("ping over tcp with the token: %+v %v", p, err)
	}
	if _, err := c.Get(ctx, "nope"); !banger.IsNotFound(err) {
		t.Errorf("get over tcp: %v", err)
	}
	// Upgraded calls over TCP: refused before the upgrade here (no VM).
	if _, err := c.Exec(ctx, "nope", banger.Cmd{Argv: []string{"true"}}); !banger.IsNotFound(err) {
		t.Errorf("exec over tcp: %v", err)
	}
	// Without a token the SDK refuses a tcp address itself; with a wrong
	// one the daemon does.
	if _, err := banger.New(banger.WithAddress("tcp://" + addr)); err == nil {
		t.Errorf("a tcp client without a token was accepted")
	}
	bad, _ := banger.New(banger.WithAddress("tcp://"+addr), banger.WithToken(strings.Repeat("1", 64)))
	if _, err := bad.Ping(ctx); banger.ErrorCode(err) != banger.CodeUnauthorized {
		t.Errorf("ping with a wrong token: %v", err)
	}
	// The socket needs no token.
	if _, err := validated(t, doc, banger.WithSocket(d.Socket())).Ping(ctx); err != nil {
		t.Errorf("ping on the socket: %v", err)
	}
}

// TestRemoteAPIOffByDefault: without api_listen no token file is made.
func TestRemoteAPIOffByDefault(t *testing.T) {
	d := apidaemon.StartDaemon(t, offlineConfig)
	if _, err := os.Stat(d.Layout.APIToken()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token file without api_listen: %v", err)
	}
	if strings.Contains(d.Logs(), "tcp") {
		t.Errorf("daemon log mentions tcp without api_listen:\n%s", d.Logs())
	}
}
