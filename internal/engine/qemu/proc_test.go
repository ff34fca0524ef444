package qemu

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/engine"
)

func TestIsVMMFor(t *testing.T) {
	const sock = "/run/vm/qmp.sock"
	cases := []struct {
		name string
		argv []string
		want bool
	}{
		{"chardev", []string{"/usr/bin/qemu-system-x86_64", "-chardev", "socket,id=qmp,path=/run/vm/qmp.sock,server=on,wait=off"}, true},
		{"path at end", []string{"qemu-system-x86_64", "-chardev", "socket,id=qmp,path=/run/vm/qmp.sock"}, true},
		{"legacy -qmp", []string{"qemu-system-x86_64", "-qmp", "unix:/run/vm/qmp.sock,server=on,wait=off"}, true},
		{"other vm", []string{"qemu-system-x86_64", "-chardev", "socket,id=qmp,path=/run/vm2/qmp.sock,server=on"}, false},
		{"prefix of a longer path", []string{"qemu-system-x86_64", "-chardev", "socket,id=qmp,path=/run/vm/qmp.sock.old,server=on"}, false},
		{"escaped comma continues the path", []string{"qemu-system-x86_64", "-chardev", "socket,id=qmp,path=/run/vm/qmp.sock,,x,server=on"}, false},
		{"not qemu", []string{"/bin/sleep", "path=/run/vm/qmp.sock"}, false},
		{"key inside another value", []string{"qemu-system-x86_64", "-name", "guest=xpath=/run/vm/qmp.sock"}, false},
		{"zombie", nil, false},
	}
	for _, c := range cases {
		if got := isVMMFor(c.argv, sock); got != c.want {
			t.Errorf("%s: isVMMFor = %v, want %v", c.name, got, c.want)
		}
	}
	if !isVMMFor([]string{"qemu", "-chardev", "socket,id=qmp,path=/a,,b/q.sock,server=on"}, "/a,b/q.sock") {
		t.Error("escaped comma in the socket path not matched")
	}
}

func TestParseTSCKHz(t *testing.T) {
	info := "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu MHz\t\t: 2600.000\nflags\t\t: fpu tsc\n\nprocessor\t: 1\ncpu MHz\t\t: 1200.000\n"
	got, err := parseTSCKHz(strings.NewReader(info))
	if err != nil || got != 2600000 {
		t.Errorf("parseTSCKHz = %d, %v; want 2600000", got, err)
	}
	if got, err := parseTSCKHz(strings.NewReader("cpu MHz : 2899.9996\n")); err != nil || got != 2900000 {
		t.Errorf("rounding: %d, %v", got, err)
	}
	if _, err := parseTSCKHz(strings.NewReader("processor : 0\n")); err == nil {
		t.Error("no cpu MHz line: no error")
	}
	if _, err := parseTSCKHz(strings.NewReader("cpu MHz : fast\n")); err == nil {
		t.Error("garbage cpu MHz: no error")
	}
}

func TestParseVersion(t *testing.T) {
	out := "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n"
	if v, err := parseVersion(out); err != nil || v != "7.2.22" {
		t.Errorf("parseVersion = %q, %v", v, err)
	}
	if v, err := parseVersion("QEMU emulator version 8.2.0\n"); err != nil || v != "8.2.0" {
		t.Errorf("parseVersion = %q, %v", v, err)
	}
	if _, err := parseVersion("bash: qemu: command not found"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestHasMachine(t *testing.T) {
	list := "Supported machines are:\nmicrovm              microvm (i386)\npc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\nnone                 empty machine\n"
	if !hasMachine(list, "microvm") {
		t.Error("microvm not found")
	}
	if hasMachine(list, "micro") || hasMachine(list, "i386") {
		t.Error("partial match")
	}
}

func TestReadPIDFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pid")
	os.WriteFile(p, []byte("1234\n"), 0o644)
	if pid, err := readPIDFile(p); err != nil || pid != 1234 {
		t.Errorf("readPIDFile = %d, %v", pid, err)
	}
	os.WriteFile(p, []byte("x"), 0o644)
	if _, err := readPIDFile(p); err == nil {
		t.Error("bad content accepted")
	}
	if _, err := readPIDFile(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// proc must see a process exit and refuse to signal anything afterwards.
func TestProcWaitAndSignal(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep binary: %v", err)
	}
	reaped := make(chan struct{})
	go func() { cmd.Wait(); close(reaped) }()
	p, err := openProc(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Exited() {
		t.Fatal("live process reported exited")
	}
	waited := make(chan bool, 1)
	go func() { waited <- p.Wait() }()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-waited:
		if !ok {
			t.Fatal("wait returned false for an exit")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("exit not seen")
	}
	<-reaped
	if !p.Exited() {
		t.Error("exited = false after exit")
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Errorf("signal after exit: %v, want nil", err)
	}
}

func TestProcCloseWakesWait(t *testing.T) {
	p, err := openProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan bool, 1)
	go func() { waited <- p.Wait() }()
	time.Sleep(20 * time.Millisecond)
	p.Close()
	select {
	case ok := <-waited:
		if ok {
			t.Error("wait reported an exit of the test process")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close did not wake wait")
	}
	if err := p.Signal(syscall.Signal(0)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("signal after close: %v", err)
	}
}

func TestOpenProcMissing(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip(err)
	}
	// The pid of a reaped child is free (until reused, which is unlikely
	// within the test).
	if _, err := openProc(cmd.Process.Pid); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("openProc(dead pid) = %v, want ErrNotRunning", err)
	}
}
