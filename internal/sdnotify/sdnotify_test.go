package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	if ok, err := notify("", "READY=1"); ok || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v %v", ok, err)
	}
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@banger-sdnotify-test-" + time.Now().Format("150405.000000000")} {
		addr := name
		if addr[0] == '@' {
			addr = "\x00" + addr[1:]
		}
		l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		ok, err := notify(name, "READY=1")
		if !ok || err != nil {
			t.Fatalf("%s: %v %v", name, ok, err)
		}
		buf := make([]byte, 64)
		l.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := l.ReadFromUnix(buf)
		if err != nil || string(buf[:n]) != "READY=1" {
			t.Errorf("%s: got %q %v", name, buf[:n], err)
		}
		l.Close()
	}
	if _, err := notify(filepath.Join(t.TempDir(), "absent"), "READY=1"); err == nil {
		t.Error("a missing socket should be an error")
	}
}
