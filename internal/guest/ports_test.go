package guest

import (
	"encoding/binary"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Fixtures as a little-endian kernel writes them.
const (
	fixtureTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0200000A:0016 0100000A:D431 01 00000000:00000000 02:000A7B5C 00000000     0        0 1003 4 0000000000000000 20 4 31 10 -1
   3: garbage line
`
	fixtureTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2002 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2003 1 0000000000000000 100 0 0 10 0
   3: 000000FD000000000000000002000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2004 1 0000000000000000 100 0 0 10 0
`
	fixtureUDP = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3001 2 0000000000000000 0
  124: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 3002 2 0000000000000000 0
  125: 0F02000A:A1B2 08080808:0035 01 00000000:00000000 00:00000000 00000000     0        0 3003 2 0000000000000000 0
  126: 0F02000A:0000 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3004 2 0000000000000000 0
`
	fixtureUDP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
   10: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   104        0 4001 2 0000000000000000 0
`
)

func TestParseProcNet(t *testing.T) {
	got := parseProcNet([]byte(fixtureTCP6), binary.LittleEndian)
	want := []procSocket{
		{Port: 3000, State: tcpListen, Inode: 2001},
		{Port: 8080, State: tcpListen, Inode: 2002},
		{Port: 9000, State: tcpListen, Inode: 2003},
		{Port: 80, State: tcpListen, Inode: 2004},
	}
	addrs := []string{"::", "::1", "127.0.0.1", "fd00::2"}
	if len(got) != len(want) {
		t.Fatalf("got %d sockets: %+v", len(got), got)
	}
	for i := range want {
		if got[i].Port != want[i].Port || got[i].State != want[i].State || got[i].Inode != want[i].Inode || got[i].Addr.String() != addrs[i] {
			t.Errorf("socket %d: got %+v (%s), want %+v (%s)", i, got[i], got[i].Addr, want[i], addrs[i])
		}
	}

	tcp := parseProcNet([]byte(fixtureTCP), binary.LittleEndian)
	if len(tcp) != 3 || tcp[0].Addr.String() != "0.0.0.0" || tcp[1].Addr.String() != "127.0.0.1" || tcp[1].Port != 3306 ||
		tcp[2].Addr.String() != "10.0.0.2" || tcp[2].State != 0x01 {
		t.Errorf("tcp: %+v", tcp)
	}
	if got := parseProcNet(nil, binary.LittleEndian); len(got) != 0 {
		t.Errorf("empty: %+v", got)
	}
}

func TestParseProcAddr(t *testing.T) {
	for _, c := range []struct {
		in    string
		order binary.ByteOrder
		want  string
	}{
		{"0100007F", binary.LittleEndian, "127.0.0.1"},
		{"7F000001", binary.BigEndian, "127.0.0.1"},
		{"00000000000000000000000001000000", binary.LittleEndian, "::1"},
		{"00000000000000000000000000000001", binary.BigEndian, "::1"},
		{"0000000000000000FFFF00000100007F", binary.LittleEndian, "127.0.0.1"},
		{"B80D0120000000000000000001000000", binary.LittleEndian, "2001:db8::1"},
		{"0100007", binary.LittleEndian, ""},
		{"0100007G", binary.LittleEndian, ""},
	} {
		a, ok := parseProcAddr(c.in, c.order)
		if (c.want == "") == ok || (ok && a.String() != c.want) {
			t.Errorf("%s: %v %v, want %q", c.in, a, ok, c.want)
		}
	}
}

// fakeProc builds a procfs-like tree: the four tables and processes with
// fd links.
func fakeProc(t *testing.T) string {
	t.Helper()
	proc := t.TempDir()
	os.MkdirAll(filepath.Join(proc, "net"), 0o755)
	for name, data := range map[string]string{"tcp": fixtureTCP, "tcp6": fixtureTCP6, "udp": fixtureUDP, "udp6": fixtureUDP6} {
		os.WriteFile(filepath.Join(proc, "net", name), []byte(data), 0o644)
	}
	procs := []struct {
		pid, comm string
		fds       []string
	}{
		{"1", "systemd", []string{"/dev/null", "socket:[9999]"}},
		{"50", "sshd", []string{"socket:[1001]", "pipe:[77]"}},
		{"612", "sshd", []string{"socket:[1001]"}}, // forked child: same socket
		{"77", "node", []string{"/dev/null", "socket:[2002]", "socket:[2003]", "socket:[2004]"}},
		{"99", "systemd-resolve", []string{"socket:[3002]"}},
		{"120", "dhclient", []string{"socket:[3001]", "socket:[3003]"}},
		{"130", "avahi-daemon", []string{"socket:[4001]"}},
	}
	for _, p := range procs {
		fd := filepath.Join(proc, p.pid, "fd")
		os.MkdirAll(fd, 0o755)
		os.WriteFile(filepath.Join(proc, p.pid, "comm"), []byte(p.comm+"\n"), 0o644)
		for i, target := range p.fds {
			if err := os.Symlink(target, filepath.Join(fd, string(rune('0'+i)))); err != nil {
				t.Fatal(err)
			}
		}
	}
	os.MkdirAll(filepath.Join(proc, "555"), 0o755) // no fd dir: not inspectable
	os.MkdirAll(filepath.Join(proc, "sys"), 0o755)
	return proc
}

func TestListeningPortsFakeProc(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("fixtures are little-endian")
	}
	got, err := listeningPorts(fakeProc(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []PortInfo{
		{Proto: "tcp", Addr: "0.0.0.0", Port: 22, PID: 50, Process: "sshd"},
		{Proto: "tcp", Addr: "fd00::2", Port: 80, PID: 77, Process: "node"},
		{Proto: "tcp", Addr: "::", Port: 3000},
		{Proto: "tcp", Addr: "127.0.0.1", Port: 3306},
		{Proto: "tcp", Addr: "::1", Port: 8080, PID: 77, Process: "node"},
		{Proto: "tcp", Addr: "127.0.0.1", Port: 9000, PID: 77, Process: "node"},
		{Proto: "udp", Addr: "127.0.0.53", Port: 53, PID: 99, Process: "systemd-resolve"},
		{Proto: "udp", Addr: "0.0.0.0", Port: 68, PID: 120, Process: "dhclient"},
		{Proto: "udp", Addr: "::", Port: 5353, PID: 130, Process: "avahi-daemon"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got:\n%+v\nwant:\n%+v", got, want)
	}

	// Without IPv6 tables (ipv6.disable=1) the rest still works.
	proc := fakeProc(t)
	os.Remove(filepath.Join(proc, "net", "tcp6"))
	os.Remove(filepath.Join(proc, "net", "udp6"))
	if got, err := listeningPorts(proc); err != nil || len(got) != 4 {
		t.Errorf("without IPv6: %+v, %v", got, err)
	}
}

func TestPortInfoJSON(t *testing.T) {
	b, _ := json.Marshal([]PortInfo{
		{Proto: "tcp", Addr: "0.0.0.0", Port: 22, PID: 50, Process: "sshd"},
		{Proto: "udp", Addr: "::", Port: 5353},
	})
	want := `[{"proto":"tcp","addr":"0.0.0.0","port":22,"pid":50,"process":"sshd"},{"proto":"udp","addr":"::","port":5353}]`
	if string(b) != want {
		t.Errorf("got %s\nwant %s", b, want)
	}
}

// TestListeningPortsHost finds this test's own sockets on the host.
func TestListeningPortsHost(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	want := []PortInfo{
		{Proto: "tcp", Addr: "127.0.0.1", Port: l.Addr().(*net.TCPAddr).Port},
		{Proto: "udp", Addr: "127.0.0.1", Port: pc.LocalAddr().(*net.UDPAddr).Port},
	}
	if l6, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		defer l6.Close()
		want = append(want, PortInfo{Proto: "tcp", Addr: "::1", Port: l6.Addr().(*net.TCPAddr).Port})
	}
	// A connected UDP socket is a client, not a bound service.
	conn, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	connPort := conn.LocalAddr().(*net.UDPAddr).Port

	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Skip("no /proc")
	}
	ports, err := ListeningPorts()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		w.PID, w.Process = os.Getpid(), strings.TrimSpace(string(comm))
		if !slices.Contains(ports, w) {
			t.Errorf("%+v not found in %+v", w, ports)
		}
	}
	for _, p := range ports {
		if p.Proto == "udp" && p.Port == connPort {
			t.Errorf("connected udp socket listed: %+v", p)
		}
	}
}
