package portfwd

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"banger/internal/model"
)

func TestParse(t *testing.T) {
	good := map[string]model.PortMap{
		"8080:80":           {HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80},
		"0.0.0.0:3000:3000": {HostIP: "0.0.0.0", HostPort: 3000, GuestPort: 3000},
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v", in, got, err)
		}
	}
	for _, bad := range []string{"80", "a:80", "80:0", "1.2.3:80:80", "::1:80:80", "70000:80", "1:2:3:4"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestForwardAndCheckFree(t *testing.T) {
	// A "guest" server on loopback.
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	guestPort := srv.Addr().(*net.TCPAddr).Port
	hostPort, _ := FreePort("127.0.0.1")
	m := model.PortMap{HostIP: "127.0.0.1", HostPort: hostPort, GuestPort: guestPort}
	f, err := Start(netip.MustParseAddr("127.0.0.1"), []model.PortMap{m})
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckFree(m); err == nil || !strings.Contains(err.Error(), "not available") {
		t.Errorf("taken port reported free: %v", err)
	}
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", itoa(hostPort)))
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	b, _ := io.ReadAll(c)
	if string(b) != "ping" {
		t.Errorf("echo through forwarder: %q", b)
	}
	f.Close()
	if err := CheckFree(m); err != nil {
		t.Errorf("port still taken after Close: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
