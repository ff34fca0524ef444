package privhelper

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/network"
)

// TestAllowList: only the six operations exist; anything else, including
// the Host's own Teardown, is refused before reaching the Host.
func TestAllowList(t *testing.T) {
	ts, fake := fakeServer(t)
	for _, op := range []string{"teardown", "Teardown", "run", "exec", "shell", "ensure_bridge ", "ENSURE_BRIDGE", "", strings.Repeat("x", 300)} {
		resp := rawCall(t, ts.socket, `{"v":1,"op":"`+op+`"}`)
		wantCode(t, "op "+op, resp, CodeUnknownOp)
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Fatalf("refused ops reached the host: %v", calls)
	}
	if !slices.Equal(Ops(), []string{"ensure_bridge", "acquire_tap", "release_tap", "set_nat", "set_egress", "state", "dns_sockets"}) {
		t.Fatalf("Ops() = %v", Ops())
	}
	for _, op := range Ops() {
		if !knownOp(op) {
			t.Errorf("knownOp(%q) = false", op)
		}
	}
	// The client has no way to reach Teardown either.
	if err := ts.client.Teardown(context.Background()); !errors.Is(err, ErrNotOffered) || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("Client.Teardown = %v, want ErrNotOffered", err)
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Fatalf("Teardown reached the host: %v", calls)
	}
}

// TestMalformedRequests: version, JSON, unknown and misplaced fields.
func TestMalformedRequests(t *testing.T) {
	ts, fake := fakeServer(t)
	for _, tc := range []struct{ line, code string }{
		{`{"op":"state"}`, CodeBadVersion},
		{`{"v":2,"op":"state"}`, CodeBadVersion},
		{`not json`, CodeBadRequest},
		{`{"v":1,"op":"state","cmd":"rm -rf /"}`, CodeBadRequest},
		{`{"v":1,"op":"ensure_bridge","tap":"bgtap0"}`, CodeBadRequest},
		{`{"v":1,"op":"acquire_tap","guests":[]}`, CodeBadRequest},
		{`{"v":1,"op":"acquire_tap"}`, CodeBadRequest},
		{`{"v":1,"op":"acquire_tap","binding":{"mac":"01:00:5e:00:00:01","ip":"172.16.0.2"}}`, CodeBadRequest},
		{`{"v":1,"op":"acquire_tap","binding":{"mac":"02:00:00:00:00:01","ip":"172.16.0.1"}}`, CodeBadRequest},
		{`{"v":1,"op":"acquire_tap","binding":{"mac":"02:00:00:00:00:01","ip":"10.0.0.2"}}`, CodeBadRequest},
		{`{"v":1,"op":"acquire_tap","binding":{"mac":"not a mac","ip":"172.16.0.2"}}`, CodeBadRequest},
		{`{"v":1,"op":"release_tap","tap":"bgtap0","binding":{"mac":"02:00:00:00:00:01","ip":"172.16.0.2"}}`, CodeBadRequest},
		{`{"v":1,"op":"release_tap","tap":"bgtap0","guests":["172.16.0.2"]}`, CodeBadRequest},
		{`{"v":1,"op":"set_nat"}`, CodeBadRequest},
		{`{"v":1,"op":"set_nat","guests":null}`, CodeBadRequest},
		{`{"v":1,"op":"set_nat","guests":["not-an-ip"]}`, CodeBadRequest},
		{`{"v":1,"op":"set_nat","guests":"172.16.0.2"}`, CodeBadRequest},
	} {
		wantCode(t, tc.line, rawCall(t, ts.socket, tc.line), tc.code)
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Fatalf("malformed requests reached the host: %v", calls)
	}
	if err := contains(ts.log.String(), "bad request"); err != nil {
		t.Error(err)
	}
}

// TestValidation: tap names outside the pool pattern and NAT guests outside
// the bridge subnet are refused by the server, not by the host.
func TestValidation(t *testing.T) {
	ts, fake := fakeServer(t)
	ctx := context.Background()
	for _, name := range []string{"", "eth0", "lo", "banger0", "bgtap", "bgtap01", "bgtap-1", "bgtap1x", "xbgtap1", "bgtap 1", "bgtap12345678901", "../bgtap1"} {
		err := ts.client.ReleaseTap(ctx, name)
		if !errors.Is(err, network.ErrNotTap) {
			t.Errorf("ReleaseTap(%q) = %v, want ErrNotTap", name, err)
		}
	}
	for _, g := range []string{"10.0.0.2", "172.16.0.1", "172.16.0.0", "172.16.0.255", "172.16.1.2", "0.0.0.0", "255.255.255.255", "fe80::1", "::ffff:10.0.0.2"} {
		err := ts.client.SetNAT(ctx, []netip.Addr{netip.MustParseAddr("172.16.0.2"), netip.MustParseAddr(g)})
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("SetNAT(%s) = %v, want ErrBadRequest", g, err)
		}
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Fatalf("invalid requests reached the host: %v", calls)
	}
	// Valid ones get through, including a 4-in-6 spelling of a guest.
	if err := ts.client.ReleaseTap(ctx, "bgtap10"); err != nil {
		t.Fatal(err)
	}
	if err := ts.client.SetNAT(ctx, []netip.Addr{netip.MustParseAddr("::ffff:172.16.0.254")}); err != nil {
		t.Fatal(err)
	}
	want := []string{"ReleaseTap bgtap10", "SetNAT [172.16.0.254]"}
	if calls := fake.Calls(); !reflect.DeepEqual(calls, want) {
		t.Fatalf("calls = %v, want %v", calls, want)
	}
}

func TestValidTapAndGuest(t *testing.T) {
	for name, want := range map[string]bool{
		"bgtap0": true, "bgtap9": true, "bgtap10": true, "bgtap1048576": true,
		"bgtap": false, "bgtap00": false, "bgtap01": false, "bgtap+1": false, "bgtapé": false, "bgtap12345678901": false,
	} {
		if got := validTap("bgtap", name); got != want {
			t.Errorf("validTap(%q) = %v", name, got)
		}
	}
	cidr := netip.MustParsePrefix("10.9.8.1/30") // 10.9.8.0/30: only .2 is a guest
	for a, want := range map[string]bool{"10.9.8.0": false, "10.9.8.1": false, "10.9.8.2": true, "10.9.8.3": false, "10.9.8.4": false} {
		if got := validGuest(cidr, netip.MustParseAddr(a)); got != want {
			t.Errorf("validGuest(%s, %s) = %v", cidr, a, got)
		}
	}
}

// TestPeerCredRefusesOtherUID: a server allowing another uid refuses this
// process (when it is not root, whom the server always allows) and logs the
// refusal; as root, root is let through whatever the allowed uid.
func TestPeerCredRefusesOtherUID(t *testing.T) {
	cfg := network.Config{}
	fake := network.NewFake(cfg)
	other := os.Getuid() + 1
	if os.Getuid() == 0 {
		other = otherUID
	}
	ts := startServer(t, "", Options{Host: fake, Config: cfg, AllowUID: other})
	err := ts.client.EnsureBridge(context.Background())
	if os.Getuid() == 0 {
		if err != nil {
			t.Fatalf("root refused: %v", err)
		}
		return
	}
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("EnsureBridge as uid %d with uid %d allowed: %v, want ErrForbidden", os.Getuid(), other, err)
	}
	if calls := fake.Calls(); len(calls) != 0 {
		t.Fatalf("a refused caller reached the host: %v", calls)
	}
	if err := contains(ts.log.String(), "refused caller", "uid="); err != nil {
		t.Error(err)
	}
}

// TestPeerCredOtherProcess runs the client in a child process as uid 65534:
// refused by a server allowing another uid (even with the socket's file
// permissions opened up, so the credential check is what refuses),
// accepted by one allowing 65534.
func TestPeerCredOtherProcess(t *testing.T) {
	requireRoot(t)
	dir := publicDir(t)
	bin := childBinary(t, dir)

	t.Run("refused", func(t *testing.T) {
		cfg := network.Config{}
		fake := network.NewFake(cfg)
		sub := publicSubdir(t, dir, "refused")
		ts := startServer(t, sub, Options{Host: fake, Config: cfg, AllowUID: otherUID - 1})
		if err := os.Chmod(ts.socket, 0o666); err != nil {
			t.Fatal(err)
		}
		res := runChild(t, bin, ts.socket)
		if res.Code != CodeForbidden || res.Tap != "" {
			t.Fatalf("child as uid %d: %+v, want forbidden", otherUID, res)
		}
		if calls := fake.Calls(); len(calls) != 0 {
			t.Fatalf("a refused caller reached the host: %v", calls)
		}
		if err := contains(ts.log.String(), "refused caller", "uid=65534", "allowed_uid=65533"); err != nil {
			t.Error(err)
		}
	})

	t.Run("accepted", func(t *testing.T) {
		cfg := network.Config{}
		fake := network.NewFake(cfg)
		if err := fake.EnsureBridge(context.Background()); err != nil {
			t.Fatal(err)
		}
		sub := publicSubdir(t, dir, "accepted")
		ts := startServer(t, sub, Options{Host: fake, Config: cfg, AllowUID: otherUID})
		// Listen gave the socket to the allowed uid, mode 0600.
		fi, err := os.Stat(ts.socket)
		if err != nil {
			t.Fatal(err)
		}
		if uid := ownerOf(t, fi); uid != otherUID || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket owned by %d mode %v, want %d 0600", uid, fi.Mode().Perm(), otherUID)
		}
		res := runChild(t, bin, ts.socket)
		if res.Err != "" || res.Tap != "bgtap0" {
			t.Fatalf("child as uid %d: %+v, want bgtap0", otherUID, res)
		}
		// The request is logged once answered.
		waitFor(t, "the request's log line", func() bool {
			return contains(ts.log.String(), "op=acquire_tap uid=65534") == nil
		})
	})
}

// blockingHost is a Fake whose AcquireTap waits for release (or for its
// context), then returns a tap anyway: a tap created just as the client
// gave up.
type blockingHost struct {
	*network.Fake
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	ctxErr  chan error
}

func newBlockingHost() *blockingHost {
	f := network.NewFake(network.Config{})
	f.EnsureBridge(context.Background())
	return &blockingHost{Fake: f, entered: make(chan struct{}), release: make(chan struct{}), ctxErr: make(chan error, 1)}
}

func (h *blockingHost) AcquireTap(ctx context.Context, b network.Binding) (string, error) {
	h.once.Do(func() { close(h.entered) })
	select {
	case <-ctx.Done():
	case <-h.release:
	}
	h.ctxErr <- ctx.Err()
	return h.Fake.AcquireTap(context.Background(), b)
}

// TestClientGoneCancelsAndReleases: a client that cancels cancels the
// operation; the tap acquired just as it gave up still reaches it (it reads
// the late answer) and it releases the tap.
func TestClientGoneCancelsAndReleases(t *testing.T) {
	h := newBlockingHost()
	ts := startServer(t, "", Options{Host: h, Config: network.Config{}, AllowUID: os.Getuid()})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := ts.client.AcquireTap(ctx, tb())
		errc <- err
	}()
	<-h.entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("AcquireTap after cancel: %v", err)
	}
	select {
	case err := <-h.ctxErr:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("host's context: %v, want canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the operation was not cancelled when the client went away")
	}
	// The client released it before AcquireTap returned.
	if !slices.Contains(h.Calls(), "ReleaseTap bgtap0") {
		t.Fatalf("the late tap was not released: %v", h.Calls())
	}
	st, _ := h.Fake.State(context.Background())
	if len(st.InUse) != 0 {
		t.Fatalf("taps in use after the client left: %v", st.InUse)
	}
	if strings.Contains(ts.log.String(), "departed client") {
		t.Fatalf("the server could not deliver the answer:\n%s", ts.log.String())
	}
}

// TestClientVanishedReleases: a client that disappears without reading its
// answer (closed, not half-closed) cancels the operation, and the server
// releases the tap it could not deliver.
func TestClientVanishedReleases(t *testing.T) {
	h := newBlockingHost()
	ts := startServer(t, "", Options{Host: h, Config: network.Config{}, AllowUID: os.Getuid()})
	conn, err := net.Dial("unix", ts.socket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte(`{"v":1,"op":"acquire_tap","binding":{"mac":"02:00:00:00:00:01","ip":"172.16.0.2"}}` + "\n")); err != nil {
		t.Fatal(err)
	}
	<-h.entered
	conn.Close()
	if err := <-h.ctxErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("host's context: %v, want canceled", err)
	}
	waitFor(t, "the server's release of the undelivered tap", func() bool {
		return slices.Contains(h.Calls(), "ReleaseTap bgtap0") && strings.Contains(ts.log.String(), "released tap of a departed client")
	})
}

// TestShutdownWaitsForRequests: Serve returns only after the request in
// flight completed (it is not cancelled by the shutdown), and the socket
// file is gone.
func TestShutdownWaitsForRequests(t *testing.T) {
	h := newBlockingHost()
	ts := startServer(t, "", Options{Host: h, Config: network.Config{}, AllowUID: os.Getuid()})
	type result struct {
		tap string
		err error
	}
	res := make(chan result, 1)
	go func() {
		tap, err := ts.client.AcquireTap(context.Background(), tb())
		res <- result{tap, err}
	}()
	<-h.entered
	stopped := make(chan struct{})
	go func() {
		ts.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("Serve returned with a request in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(h.release)
	r := <-res
	if r.err != nil || r.tap != "bgtap0" {
		t.Fatalf("AcquireTap during shutdown = %q, %v", r.tap, r.err)
	}
	<-stopped
	if err := <-h.ctxErr; err != nil {
		t.Fatalf("the shutdown cancelled the operation: %v", err)
	}
	if _, err := os.Stat(ts.socket); !os.IsNotExist(err) {
		t.Fatalf("socket still there after shutdown: %v", err)
	}
	if err := ts.client.EnsureBridge(context.Background()); err == nil {
		t.Fatal("helper still answering after shutdown")
	}
}

// TestStalledClient: a client that connects and sends nothing does not
// keep other clients from being served.
func TestStalledClient(t *testing.T) {
	ts, _ := fakeServer(t)
	conn, err := net.Dial("unix", ts.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := ts.client.State(context.Background()); err != nil {
		t.Fatalf("State while another client stalls: %v", err)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
