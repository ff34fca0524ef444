package guest

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent"
)

func quietServer() *Server { return &Server{Log: log.New(io.Discard, "", 0)} }

// The accept loop serves every connection, concurrently, with the agent
// protocol, and stops with its context.
func TestServeListenerConcurrentSessions(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- quietServer().serveListener(ctx, ln) }()

	var clients []*agent.Client
	for i := 0; i < 2; i++ {
		conn, err := net.Dial("unix", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c, err := agent.NewClient(conn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	// Both sessions are live at once.
	for i, c := range clients {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := c.Ping(pctx)
		pcancel()
		if err != nil || !resp.OK {
			t.Errorf("client %d: %+v, %v", i, resp, err)
		}
	}
	cancel()
	select {
	case err := <-served:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("serveListener: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serveListener did not stop with its context")
	}
}

func TestVsockAvailable(t *testing.T) {
	cid, err := LocalVsockCID()
	got := VsockAvailable()
	t.Logf("local vsock cid %#x, %v; available %v", cid, err, got)
	if _, serr := os.Stat(vsockDevice); serr != nil && got {
		t.Error("available without /dev/vsock")
	}
	if err == nil && (cid == unix.VMADDR_CID_ANY || cid <= unix.VMADDR_CID_HOST) && got {
		t.Errorf("available with cid %#x", cid)
	}
	if err == nil && cid > unix.VMADDR_CID_HOST && cid != unix.VMADDR_CID_ANY && !got {
		t.Errorf("not available with guest cid %d", cid)
	}
}

// ServeVsock on a real AF_VSOCK socket, where this machine has a vsock
// device: it binds the port (a second bind fails), serves a loopback
// connection where the kernel has a loopback transport, and releases the
// port when its context ends.
func TestServeVsock(t *testing.T) {
	if !VsockAvailable() {
		t.Skip("no vsock device here (/dev/vsock missing or no guest CID): AF_VSOCK not testable; the accept loop is tested over a Unix socket")
	}
	port := uint32(40000 + os.Getpid()%20000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	bound := make(chan struct{})
	srv := quietServer()
	srv.bound = func() { close(bound) }
	go func() { served <- srv.ServeVsock(ctx, port) }()

	// Once bound, a second listener on the port must fail. (Probing by
	// binding before the server has would race it for the port.)
	select {
	case <-bound:
	case err := <-served:
		t.Fatalf("ServeVsock: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("ServeVsock never bound its port")
	}
	if ln, err := listenVsock(port); err == nil {
		ln.Close()
		t.Fatal("a second bind of the served port succeeded")
	} else if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("second bind: %v, want EADDRINUSE", err)
	}

	// A session needs a loopback transport (vsock_loopback) to reach our
	// own port; where there is none the subtest says so as a SKIP instead
	// of passing untested.
	t.Run("session over loopback", func(t *testing.T) {
		conn, err := dialVsockLocal(port, 300*time.Millisecond)
		if err != nil {
			t.Skipf("skipping: no loopback vsock transport here (vsock_loopback not loaded: %v): a session over AF_VSOCK is not tested; the same server is tested over a Unix socket", err)
		}
		c, err := agent.NewClient(conn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		if resp, err := c.Ping(pctx); err != nil || !resp.OK {
			t.Errorf("ping over vsock: %+v, %v", resp, err)
		}
	})

	cancel()
	select {
	case err := <-served:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ServeVsock: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeVsock did not stop with its context")
	}
	ln, err := listenVsock(port)
	if err != nil {
		t.Fatalf("port not released: %v", err)
	}
	ln.Close()
}

func TestServeVsockBindError(t *testing.T) {
	if !VsockAvailable() {
		t.Skip("no vsock device here")
	}
	port := uint32(40000 + (os.Getpid()+1)%20000)
	ln, err := listenVsock(port)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = quietServer().ServeVsock(context.Background(), port)
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("ServeVsock on a taken port: %v", err)
	}
}

// dialVsockLocal connects to VMADDR_CID_LOCAL:port, within timeout.
func dialVsockLocal(port uint32, timeout time.Duration) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv)
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: port}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &vsockConn{File: os.NewFile(uintptr(fd), "vsock"), remote: vsockAddr{cid: unix.VMADDR_CID_LOCAL, port: port}}, nil
}
