package qemu

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"banger/internal/engine"
)

func testSpec() engine.Spec {
	return engine.Spec{
		ID:            "0123abcd",
		Name:          "dev",
		VCPU:          2,
		MemoryMiB:     1024,
		Kernel:        "/k/vmlinux",
		Initramfs:     "/k/initramfs.img",
		Cmdline:       "banger.name=dev quiet",
		RootDisk:      "/vm/root.qcow2",
		WorkDisk:      "/vm/work.ext4",
		AgentSocket:   "/run/vm/agent.sock",
		AgentPortName: "org.banger.agent",
		QMPSocket:     "/run/vm/qmp.sock",
		SerialLog:     "/vm/serial.log",
		PIDFile:       "/run/vm/qemu.pid",
		Accel:         engine.AccelTCG,
		Balloon:       true,
	}
}

func TestBuildArgsTCGFull(t *testing.T) {
	got, err := BuildArgs(testSpec(), ArgOptions{Daemonize: true, GuestTSCKHz: 2600000})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"-name", "guest=dev,debug-threads=on",
		"-machine", "microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on",
		"-accel", "tcg,thread=multi",
		"-smp", "2",
		"-m", "1024M",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-no-reboot",
		"-kernel", "/k/vmlinux",
		"-initrd", "/k/initramfs.img",
		"-append", "banger.name=dev quiet console=ttyS0 panic=-1 tsc_early_khz=2600000",
		"-drive", "id=root,file=/vm/root.qcow2,format=qcow2,if=none,cache=writeback,aio=threads,discard=unmap",
		"-device", "virtio-blk-device,drive=root",
		"-drive", "id=work,file=/vm/work.ext4,format=raw,if=none,cache=writeback,aio=threads,discard=unmap",
		"-device", "virtio-blk-device,drive=work",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=/run/vm/agent.sock,server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=org.banger.agent",
		"-device", "virtio-balloon-device,id=balloon0,free-page-reporting=on,deflate-on-oom=on",
		"-chardev", "file,id=serial0,path=/vm/serial.log",
		"-serial", "chardev:serial0",
		"-chardev", "socket,id=qmp,path=/run/vm/qmp.sock,server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-pidfile", "/run/vm/qemu.pid",
		"-daemonize",
	}
	if !slices.Equal(got, want) {
		t.Errorf("argv mismatch\n got: %q\nwant: %q", got, want)
	}
}

func TestBuildArgsKVM(t *testing.T) {
	s := testSpec()
	s.Accel = engine.AccelKVM
	got, err := BuildArgs(s, ArgOptions{GuestTSCKHz: 2600000})
	if err != nil {
		t.Fatal(err)
	}
	assertPair(t, got, "-machine", MachineKVM)
	assertPair(t, got, "-accel", "kvm")
	assertPair(t, got, "-cpu", "host")
	// The TSC hint is a TCG workaround only.
	assertPair(t, got, "-append", "banger.name=dev quiet console=ttyS0 panic=-1")
	if slices.Contains(got, "-daemonize") {
		t.Error("-daemonize without ArgOptions.Daemonize")
	}
}

func TestBuildArgsTCGUsesDefaultCPU(t *testing.T) {
	got, err := BuildArgs(testSpec(), ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got, "-cpu") {
		t.Errorf("TCG argv names a CPU model (-cpu max hangs the guest): %q", got)
	}
	// No host TSC rate known: no hint.
	assertPair(t, got, "-append", "banger.name=dev quiet console=ttyS0 panic=-1")
}

func TestBuildArgsWithoutWorkDisk(t *testing.T) {
	s := testSpec()
	s.WorkDisk = ""
	got, err := BuildArgs(s, ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	drives := values(got, "-drive")
	if len(drives) != 1 || !strings.HasPrefix(drives[0], "id=root,file=/vm/root.qcow2,format=qcow2,") {
		t.Errorf("drives = %q, want the root disk only", drives)
	}
	if devs := values(got, "-device"); slices.Contains(devs, "virtio-blk-device,drive=work") {
		t.Errorf("work disk device present: %q", devs)
	}
}

func TestBuildArgsDiskOrder(t *testing.T) {
	got, err := BuildArgs(testSpec(), ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var blk []string
	for _, d := range values(got, "-device") {
		if strings.HasPrefix(d, "virtio-blk-device") {
			blk = append(blk, d)
		}
	}
	want := []string{"virtio-blk-device,drive=root", "virtio-blk-device,drive=work"}
	if !slices.Equal(blk, want) {
		t.Errorf("disk devices = %q, want root first (/dev/vda) then work (/dev/vdb)", blk)
	}
}

func TestBuildArgsTapNIC(t *testing.T) {
	s := testSpec()
	s.NICs = []engine.NIC{{Tap: "bng-dev0", MAC: "52:54:00:AB:CD:EF"}}
	got, err := BuildArgs(s, ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	assertPair(t, got, "-netdev", "tap,id=net0,ifname=bng-dev0,script=no,downscript=no,vhost=off")
	if !slices.Contains(values(got, "-device"), "virtio-net-device,netdev=net0,mac=52:54:00:ab:cd:ef") {
		t.Errorf("no virtio-net device for the tap: %q", values(got, "-device"))
	}
}

func TestBuildArgsUserNIC(t *testing.T) {
	s := testSpec()
	s.NICs = []engine.NIC{
		{User: true, Restrict: true, HostFwds: []engine.HostFwd{
			{HostPort: 2222, GuestPort: 22},
			{Proto: "udp", HostAddr: "127.0.0.2", HostPort: 5353, GuestAddr: "10.0.2.15", GuestPort: 53},
		}},
		{Tap: "bng-dev1", MAC: "52:54:00:00:00:02"},
		{User: true},
	}
	got, err := BuildArgs(s, ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantNetdevs := []string{
		"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:127.0.0.2:5353-10.0.2.15:53",
		"tap,id=net1,ifname=bng-dev1,script=no,downscript=no,vhost=off",
		"user,id=net2",
	}
	if nd := values(got, "-netdev"); !slices.Equal(nd, wantNetdevs) {
		t.Errorf("netdevs\n got: %q\nwant: %q", nd, wantNetdevs)
	}
	var nics []string
	for _, d := range values(got, "-device") {
		if strings.HasPrefix(d, "virtio-net-device") {
			nics = append(nics, d)
		}
	}
	wantNICs := []string{
		"virtio-net-device,netdev=net0",
		"virtio-net-device,netdev=net1,mac=52:54:00:00:00:02",
		"virtio-net-device,netdev=net2",
	}
	if !slices.Equal(nics, wantNICs) {
		t.Errorf("nic devices\n got: %q\nwant: %q", nics, wantNICs)
	}
}

func TestBuildArgsNoNICsMeansNoNetwork(t *testing.T) {
	got, err := BuildArgs(testSpec(), ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(got, "-netdev") || slices.Contains(got, "-nic") || slices.Contains(got, "-net") {
		t.Errorf("network configured without NICs: %q", got)
	}
	// -nodefaults is what keeps QEMU from adding a default NIC.
	if !slices.Contains(got, "-nodefaults") {
		t.Error("missing -nodefaults")
	}
}

func TestBuildArgsEscapesCommas(t *testing.T) {
	s := testSpec()
	s.Name = "a,b"
	s.RootDisk = "/vm,x/root.qcow2"
	s.QMPSocket = "/run/v,m/qmp.sock"
	s.AgentSocket = "/run/v,m/agent.sock"
	s.SerialLog = "/v,m/serial.log"
	got, err := BuildArgs(s, ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	assertPair(t, got, "-name", "guest=a,,b,debug-threads=on")
	if d := values(got, "-drive")[0]; !strings.HasPrefix(d, "id=root,file=/vm,,x/root.qcow2,format=qcow2") {
		t.Errorf("drive = %q", d)
	}
	ch := values(got, "-chardev")
	for _, want := range []string{
		"socket,id=agent,path=/run/v,,m/agent.sock,server=on,wait=off",
		"file,id=serial0,path=/v,,m/serial.log",
		"socket,id=qmp,path=/run/v,,m/qmp.sock,server=on,wait=off",
	} {
		if !slices.Contains(ch, want) {
			t.Errorf("chardevs %q lack %q", ch, want)
		}
	}
}

func TestBuildArgsOptionalParts(t *testing.T) {
	s := engine.Spec{Name: "fw", VCPU: 1, MemoryMiB: 64, QMPSocket: "/r/q.sock", PIDFile: "/r/q.pid", Accel: engine.AccelTCG}
	got, err := BuildArgs(s, ArgOptions{GuestTSCKHz: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, absent := range []string{"-kernel", "-initrd", "-append", "-drive", "-netdev", "-D", "-daemonize"} {
		if slices.Contains(got, absent) {
			t.Errorf("%s present in a minimal argv: %q", absent, got)
		}
	}
	assertPair(t, got, "-serial", "null")
	for _, d := range values(got, "-device") {
		if strings.HasPrefix(d, "virtio-serial") || strings.HasPrefix(d, "virtserialport") {
			t.Errorf("agent port without an agent socket: %q", d)
		}
	}
	s.AgentSocket, s.VMMLog = "/r/a.sock", "/r/qemu.log"
	got, err = BuildArgs(s, ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The default port name.
	if !slices.Contains(values(got, "-device"), "virtserialport,chardev=agent,name="+engine.DefaultAgentPort) {
		t.Errorf("devices %q lack the default agent port", values(got, "-device"))
	}
	assertPair(t, got, "-D", "/r/qemu.log")
}

// The balloon is there only when the spec asks for it, with free page
// reporting and deflate-on-oom on.
func TestBuildArgsBalloon(t *testing.T) {
	s := testSpec()
	got, err := BuildArgs(s, ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var balloons []string
	for _, d := range values(got, "-device") {
		if strings.HasPrefix(d, "virtio-balloon") {
			balloons = append(balloons, d)
		}
	}
	if len(balloons) != 1 {
		t.Fatalf("balloon devices %q, want one", balloons)
	}
	opts := strings.Split(balloons[0], ",")
	if opts[0] != "virtio-balloon-device" {
		t.Errorf("balloon %q is not the virtio-mmio variant microvm needs", balloons[0])
	}
	for _, want := range []string{"free-page-reporting=on", "deflate-on-oom=on", "id=balloon0"} {
		if !slices.Contains(opts, want) {
			t.Errorf("balloon %q lacks %s", balloons[0], want)
		}
	}
	s.Balloon = false
	got, err = BuildArgs(s, ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range values(got, "-device") {
		if strings.Contains(d, "balloon") {
			t.Errorf("balloon %q without Spec.Balloon", d)
		}
	}
}

func TestKernelCmdline(t *testing.T) {
	cases := []struct {
		cmdline, accel string
		tsc            int
		want           string
	}{
		{"", engine.AccelTCG, 0, "console=ttyS0 panic=-1"},
		{"  root=/dev/vda   rw ", engine.AccelKVM, 0, "root=/dev/vda rw console=ttyS0 panic=-1"},
		{"console=hvc0", engine.AccelKVM, 0, "console=hvc0 panic=-1"},
		{"panic=5 quiet", engine.AccelKVM, 0, "panic=5 quiet console=ttyS0"},
		{"", engine.AccelTCG, 2600000, "console=ttyS0 panic=-1 tsc_early_khz=2600000"},
		{"tsc_early_khz=1", engine.AccelTCG, 2600000, "tsc_early_khz=1 console=ttyS0 panic=-1"},
		{"", engine.AccelKVM, 2600000, "console=ttyS0 panic=-1"},
		// A parameter merely starting with the key is not the key.
		{"consoleblank=0 panicky", engine.AccelKVM, 0, "consoleblank=0 panicky console=ttyS0 panic=-1"},
	}
	for _, c := range cases {
		s := engine.Spec{Cmdline: c.cmdline, Accel: c.accel}
		if got := KernelCmdline(s, ArgOptions{GuestTSCKHz: c.tsc}); got != c.want {
			t.Errorf("KernelCmdline(%q, %s, %d) = %q, want %q", c.cmdline, c.accel, c.tsc, got, c.want)
		}
	}
}

func TestBuildArgsRejects(t *testing.T) {
	s := testSpec()
	s.Cmdline = strings.Repeat("x", 2040)
	if _, err := BuildArgs(s, ArgOptions{}); err == nil || !strings.Contains(err.Error(), "command line is") {
		t.Errorf("over-long cmdline: err = %v", err)
	}
	s = testSpec()
	s.QMPSocket = "/" + strings.Repeat("q", 120)
	if _, err := BuildArgs(s, ArgOptions{}); err == nil || !strings.Contains(err.Error(), "unix sockets allow at most 107") {
		t.Errorf("long socket path: err = %v", err)
	}
	s = testSpec()
	s.Accel = "auto"
	if _, err := BuildArgs(s, ArgOptions{}); err == nil {
		t.Error("unresolved accelerator accepted")
	}
}

// values returns the arguments following each occurrence of flag.
func values(argv []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == flag {
			out = append(out, argv[i+1])
		}
	}
	return out
}

func assertPair(t *testing.T, argv []string, flag, want string) {
	t.Helper()
	v := values(argv, flag)
	if len(v) != 1 || v[0] != want {
		t.Errorf("%s = %q, want exactly [%q]", flag, v, want)
	}
}

// The sandbox: every VMM under seccomp with fork/exec, obsolete calls and
// resource changes denied (set*id allowed: see SandboxArg); -runas under a
// root daemon.
func TestBuildArgsSandbox(t *testing.T) {
	spec := engine.Spec{ID: "vm-1", Accel: engine.AccelTCG, VCPU: 1, MemoryMiB: 128, QMPSocket: "/run/q.sock", PIDFile: "/run/q.pid"}
	args, err := BuildArgs(spec, ArgOptions{Sandbox: true})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, " ")
	if !strings.Contains(joined, "-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny") ||
		strings.Contains(joined, "-runas") || strings.Contains(joined, "-daemonize") {
		t.Errorf("sandboxed argv: %s", joined)
	}
	args, err = BuildArgs(spec, ArgOptions{Sandbox: true, RunAs: VMMUser("vm-1")})
	if err != nil {
		t.Fatal(err)
	}
	joined = strings.Join(args, " ")
	if !strings.Contains(joined, "-sandbox on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny -runas "+VMMUser("vm-1")) {
		t.Errorf("sandboxed argv with runas: %s", joined)
	}
	u := VMMUser("vm-1")
	if u != VMMUser("vm-1") || u == VMMUser("vm-2") {
		t.Errorf("VMMUser not a stable per-vm id: %s %s", u, VMMUser("vm-2"))
	}
	var uid, gid int
	if _, err := fmt.Sscanf(u, "%d:%d", &uid, &gid); err != nil || uid != gid || uid < VMMIDBase || uid >= VMMIDBase+VMMIDRange {
		t.Errorf("VMMUser = %s, want uid=gid in [%d, %d)", u, VMMIDBase, VMMIDBase+VMMIDRange)
	}
}

// A serial socket replaces the unbounded file chardev: QEMU listens and
// never waits for the reader.
func TestBuildArgsSerialSocket(t *testing.T) {
	s := testSpec()
	s.SerialSocket = "/run/v,m/serial.sock"
	got, err := BuildArgs(s, ArgOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ch := values(got, "-chardev")
	if !slices.Contains(ch, "socket,id=serial0,path=/run/v,,m/serial.sock,server=on,wait=off") {
		t.Errorf("chardevs %q lack the serial socket", ch)
	}
	for _, c := range ch {
		if strings.HasPrefix(c, "file,") {
			t.Errorf("file chardev %q next to the serial socket", c)
		}
	}
	assertPair(t, got, "-serial", "chardev:serial0")
	s.SerialSocket = "/" + strings.Repeat("x", 120)
	if _, err := BuildArgs(s, ArgOptions{}); err == nil {
		t.Error("over-long serial socket path accepted")
	}
}

// TestBuildArgsDiskFDs: with DiskFDs the disks come from fdsets whose
// descriptors follow DiskFDFiles' order from fd 3.
func TestBuildArgsDiskFDs(t *testing.T) {
	spec := testSpec()
	args, err := BuildArgs(spec, ArgOptions{DiskFDs: true})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"-add-fd fd=3,set=1 -add-fd fd=4,set=1 -drive id=root,file=/dev/fdset/1,file.locking=off,format=qcow2",
		"-add-fd fd=5,set=2 -add-fd fd=6,set=2 -drive id=work,file=/dev/fdset/2,file.locking=off,format=raw",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("args lack %q:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, spec.RootDisk) || strings.Contains(joined, spec.WorkDisk) {
		t.Errorf("disk paths still on the command line:\n%s", joined)
	}
	files := DiskFDFiles(spec)
	want := []DiskFD{{spec.RootDisk, false}, {spec.RootDisk, true}, {spec.WorkDisk, false}, {spec.WorkDisk, true}}
	if !slices.Equal(files, want) {
		t.Errorf("DiskFDFiles = %v, want %v", files, want)
	}
	spec.WorkDisk = ""
	if files := DiskFDFiles(spec); len(files) != 2 {
		t.Errorf("without a work disk: %v", files)
	}
}
