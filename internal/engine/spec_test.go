package engine

import (
	"strings"
	"testing"
)

func validSpec() Spec {
	return Spec{
		ID:          "0123abcd",
		Name:        "dev",
		VCPU:        2,
		MemoryMiB:   1024,
		Kernel:      "/var/lib/banger/kernels/k/vmlinux",
		Initramfs:   "/var/lib/banger/kernels/k/initramfs.img",
		Cmdline:     "banger.name=dev",
		RootDisk:    "/var/lib/banger/vms/dev/root.qcow2",
		WorkDisk:    "/var/lib/banger/vms/dev/work.ext4",
		AgentSocket: "/run/banger/vms/dev/agent.sock",
		QMPSocket:   "/run/banger/vms/dev/qmp.sock",
		SerialLog:   "/var/lib/banger/vms/dev/serial.log",
		PIDFile:     "/run/banger/vms/dev/qemu.pid",
		Accel:       AccelTCG,
	}
}

func TestValidateAcceptsFullSpec(t *testing.T) {
	s := validSpec()
	s.NICs = []NIC{
		{Tap: "bng-dev0", MAC: "52:54:00:12:34:56"},
		{User: true, Restrict: true, HostFwds: []HostFwd{{HostPort: 2222, GuestPort: 22}, {Proto: "udp", HostAddr: "127.0.0.2", HostPort: 53, GuestAddr: "10.0.2.15", GuestPort: 53}}},
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestValidateMinimalSpec(t *testing.T) {
	s := Spec{Name: "x", VCPU: 1, MemoryMiB: 64, QMPSocket: "/tmp/q.sock", PIDFile: "/tmp/q.pid", Accel: AccelKVM}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestValidateRejects(t *testing.T) {
	long := "/" + strings.Repeat("a", MaxSocketPath) // 108 bytes
	exact := "/" + strings.Repeat("a", MaxSocketPath-1)
	cases := []struct {
		name string
		mut  func(*Spec)
		want string // substring of the error; "" means valid
	}{
		{"no name or id", func(s *Spec) { s.Name, s.ID = "", "" }, "name or id is required"},
		{"id only is fine", func(s *Spec) { s.Name = "" }, ""},
		{"zero vcpu", func(s *Spec) { s.VCPU = 0 }, "vcpu count 0"},
		{"too many vcpus", func(s *Spec) { s.VCPU = 256 }, "vcpu count 256"},
		{"tiny memory", func(s *Spec) { s.MemoryMiB = 16 }, "below the 64 MiB"},
		{"relative kernel", func(s *Spec) { s.Kernel = "vmlinux" }, `kernel path "vmlinux" is not absolute`},
		{"initramfs without kernel", func(s *Spec) { s.Kernel = "" }, "need a kernel"},
		{"cmdline newline", func(s *Spec) { s.Cmdline = "a\nb" }, "control characters"},
		{"missing qmp", func(s *Spec) { s.QMPSocket = "" }, "qmp socket path is required"},
		{"missing pidfile", func(s *Spec) { s.PIDFile = "" }, "pid file path is required"},
		{"qmp socket too long", func(s *Spec) { s.QMPSocket = long }, "unix sockets allow at most 107"},
		{"agent socket too long", func(s *Spec) { s.AgentSocket = long }, "agent socket path"},
		{"socket at the limit", func(s *Spec) { s.AgentSocket, s.QMPSocket = exact, exact }, ""},
		{"bad port name", func(s *Spec) { s.AgentPortName = "a,b" }, "agent port name"},
		{"auto accel", func(s *Spec) { s.Accel = AccelAuto }, `accelerator "auto"`},
		{"empty accel", func(s *Spec) { s.Accel = "" }, `accelerator ""`},
		{"nic both", func(s *Spec) { s.NICs = []NIC{{Tap: "t0", MAC: "52:54:00:00:00:01", User: true}} }, "exclusive"},
		{"nic neither", func(s *Spec) { s.NICs = []NIC{{MAC: "52:54:00:00:00:01"}} }, "either a tap"},
		{"tap without mac", func(s *Spec) { s.NICs = []NIC{{Tap: "t0"}} }, "not a 6-byte MAC"},
		{"multicast mac", func(s *Spec) { s.NICs = []NIC{{Tap: "t0", MAC: "01:00:5e:00:00:01"}} }, "multicast"},
		{"long tap name", func(s *Spec) { s.NICs = []NIC{{Tap: "a-very-long-tapname", MAC: "52:54:00:00:00:01"}} }, "not a valid interface name"},
		{"tap with comma", func(s *Spec) { s.NICs = []NIC{{Tap: "t,0", MAC: "52:54:00:00:00:01"}} }, "not a valid interface name"},
		{"tap with hostfwd", func(s *Spec) {
			s.NICs = []NIC{{Tap: "t0", MAC: "52:54:00:00:00:01", HostFwds: []HostFwd{{HostPort: 1, GuestPort: 1}}}}
		}, "only apply to user"},
		{"user without mac", func(s *Spec) { s.NICs = []NIC{{User: true}} }, ""},
		{"hostfwd bad proto", func(s *Spec) {
			s.NICs = []NIC{{User: true, HostFwds: []HostFwd{{Proto: "sctp", HostPort: 1, GuestPort: 1}}}}
		}, "protocol"},
		{"hostfwd port 0", func(s *Spec) { s.NICs = []NIC{{User: true, HostFwds: []HostFwd{{HostPort: 0, GuestPort: 22}}}} }, "host port 0"},
		{"hostfwd bad guest port", func(s *Spec) { s.NICs = []NIC{{User: true, HostFwds: []HostFwd{{HostPort: 2, GuestPort: 70000}}}} }, "guest port 70000"},
		{"hostfwd ipv6", func(s *Spec) {
			s.NICs = []NIC{{User: true, HostFwds: []HostFwd{{HostAddr: "::1", HostPort: 2, GuestPort: 2}}}}
		}, "not an IPv4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := validSpec()
			c.mut(&s)
			err := s.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	err := Spec{}.Validate()
	if err == nil {
		t.Fatal("empty spec validated")
	}
	for _, want := range []string{"name or id", "vcpu", "memory", "qmp socket", "pid file", "accelerator"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
