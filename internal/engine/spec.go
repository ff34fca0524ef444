package engine

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strings"
)

// MaxSocketPath is the longest Unix socket path the kernel accepts: sun_path
// is 108 bytes including the terminating NUL.
const MaxSocketPath = 107

// DefaultAgentPort is the virtio-serial port name used when
// Spec.AgentPortName is empty.
const DefaultAgentPort = "org.banger.agent"

// DefaultVsockCID is the guest vsock context id used when Spec.VsockCID is
// 0: the lowest guest CID (0-2 are reserved for the hypervisor, local
// loopback and the host).
const DefaultVsockCID = 3

// Spec is everything needed to boot one VM. Every path must be absolute: the
// VMM runs detached, with "/" as its working directory.
type Spec struct {
	ID   string
	Name string // shown as the VMM's process/guest name

	VCPU      int
	MemoryMiB int

	// Kernel is an uncompressed ELF vmlinux (with a PVH note). When empty
	// the VM boots firmware only, which halts; Initramfs and Cmdline must
	// then be empty too. That is only useful for tests.
	Kernel    string
	Initramfs string // optional
	// Cmdline is the kernel command line. The driver appends what its
	// machine needs unless the caller set that parameter already; for QEMU
	// that is console=ttyS0, panic=-1 and, under TCG, tsc_early_khz= (see
	// qemu.KernelCmdline).
	Cmdline string

	RootDisk string // qcow2 overlay, first virtio disk (/dev/vda); optional
	WorkDisk string // raw ext4 image, next virtio disk (/dev/vdb); optional

	// AgentSocket is the host Unix socket backing the guest agent's
	// virtio-serial port; the VMM listens on it. Optional.
	AgentSocket   string
	AgentPortName string // DefaultAgentPort when empty

	// VsockSocket is the host Unix socket of a hybrid vsock device (the
	// Firecracker model): the VMM listens on it and forwards a connection
	// that starts with "CONNECT <port>\n" to that vsock port in the guest
	// (see agent.DialHybridVsock). Optional; drivers without vsock
	// support (QEMU) ignore it.
	VsockSocket string
	// VsockCID is the guest's vsock context id; 0 means DefaultVsockCID.
	// A hybrid vsock device is private to its VMM, so every VM may use
	// the same CID. Only meaningful with VsockSocket.
	VsockCID uint32

	QMPSocket string // VMM control socket; the VMM listens on it. Required.
	SerialLog string // guest serial console (ttyS0) is written here; optional
	// SerialSocket, when set, replaces SerialLog for drivers that can
	// serve the console on a Unix socket (QEMU): the VMM listens and the
	// daemon reads it into a size-capped log (see internal/seriallog).
	SerialSocket string
	PIDFile      string // written by the VMM, removed by it on a clean exit. Required.
	// VMMLog receives the VMM's own messages (errors after start-up, such
	// as an emulation failure). Optional; truncated on every start.
	VMMLog string

	Accel string // AccelKVM or AccelTCG, already resolved (see ResolveAccel)

	// Balloon adds a virtio balloon device with free page reporting (the
	// guest hands pages it frees back to the host, so an idle VM holds
	// about what its guest uses) and deflate-on-OOM (a guest under
	// memory pressure takes back what a balloon target took from it).
	// The balloon starts empty. The guest needs the virtio_balloon
	// driver (banger's initramfs loads it); without it the device idles.
	Balloon bool

	NICs []NIC // in guest order: eth0, eth1, ...
}

// NIC is one virtio-net interface. Exactly one of Tap and User is set.
type NIC struct {
	// Tap is the name of an existing host tap device, created and owned by
	// the network layer; the VMM only attaches to it.
	Tap string
	// MAC is the guest-side address, e.g. "52:54:00:12:34:56". Required for
	// a tap NIC (guests sharing a bridge must not collide), optional for a
	// user NIC.
	MAC string

	// User selects user-mode networking (QEMU's slirp): the VMM itself
	// NATs guest traffic through host sockets; no root and no tap needed.
	// The guest sits on 10.0.2.0/24, as 10.0.2.15 (from the built-in DHCP
	// server), gateway 10.0.2.2, DNS 10.0.2.3.
	User bool
	// Restrict cuts a user NIC off from the host and the outside world:
	// only the HostFwds reach the guest.
	Restrict bool
	// HostFwds forward host ports into the guest (user NICs only).
	HostFwds []HostFwd
}

// HostFwd forwards connections to a host address and port to a guest port.
type HostFwd struct {
	Proto     string // "tcp" (default) or "udp"
	HostAddr  string // IP to listen on; "127.0.0.1" when empty
	HostPort  int
	GuestAddr string // guest IP; the DHCP address (10.0.2.15) when empty
	GuestPort int
}

// Validate checks the spec for the mistakes that would otherwise surface as
// obscure VMM errors: missing required fields, relative paths, socket paths
// that are too long, bad NICs. It does not touch the filesystem.
func (s Spec) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if s.Name == "" && s.ID == "" {
		add("name or id is required")
	}
	for _, v := range []struct{ field, val string }{{"name", s.Name}, {"id", s.ID}} {
		if strings.ContainsFunc(v.val, isControl) {
			add("%s %q contains control characters", v.field, v.val)
		}
	}
	if s.VCPU < 1 || s.VCPU > 255 {
		add("vcpu count %d out of range 1..255", s.VCPU)
	}
	if s.MemoryMiB < 64 {
		add("memory %d MiB is below the 64 MiB minimum", s.MemoryMiB)
	}
	if s.Kernel == "" && (s.Initramfs != "" || s.Cmdline != "") {
		add("initramfs and cmdline need a kernel")
	}
	if strings.ContainsFunc(s.Cmdline, isControl) {
		add("kernel command line contains control characters")
	}
	paths := []struct {
		field, val string
		required   bool
	}{
		{"kernel", s.Kernel, false},
		{"initramfs", s.Initramfs, false},
		{"root disk", s.RootDisk, false},
		{"work disk", s.WorkDisk, false},
		{"agent socket", s.AgentSocket, false},
		{"vsock socket", s.VsockSocket, false},
		{"qmp socket", s.QMPSocket, true},
		{"serial log", s.SerialLog, false},
		{"serial socket", s.SerialSocket, false},
		{"pid file", s.PIDFile, true},
		{"vmm log", s.VMMLog, false},
	}
	for _, p := range paths {
		switch {
		case p.val == "":
			if p.required {
				add("%s path is required", p.field)
			}
		case !filepath.IsAbs(p.val):
			add("%s path %q is not absolute", p.field, p.val)
		case strings.ContainsFunc(p.val, isControl):
			add("%s path %q contains control characters", p.field, p.val)
		}
	}
	for _, p := range []struct{ field, val string }{{"agent socket", s.AgentSocket}, {"vsock socket", s.VsockSocket}, {"qmp socket", s.QMPSocket}, {"serial socket", s.SerialSocket}} {
		if len(p.val) > MaxSocketPath {
			add("%s path %q is %d bytes long; unix sockets allow at most %d", p.field, p.val, len(p.val), MaxSocketPath)
		}
	}
	switch {
	case s.VsockCID == 0:
	case s.VsockSocket == "":
		add("vsock cid %d needs a vsock socket", s.VsockCID)
	case s.VsockCID < DefaultVsockCID || s.VsockCID == math.MaxUint32:
		add("vsock cid %d out of range %d..%d", s.VsockCID, DefaultVsockCID, uint32(math.MaxUint32-1))
	}
	if s.AgentPortName != "" && !validPortName(s.AgentPortName) {
		add("agent port name %q: use letters, digits, '.', '-' and '_'", s.AgentPortName)
	}
	switch s.Accel {
	case AccelKVM, AccelTCG:
	default:
		add("accelerator %q: want %q or %q", s.Accel, AccelKVM, AccelTCG)
	}
	for i, n := range s.NICs {
		if err := n.validate(); err != nil {
			add("nic %d: %w", i, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid vm spec: %w", errors.Join(errs...))
	}
	return nil
}

func (n NIC) validate() error {
	switch {
	case n.Tap != "" && n.User:
		return errors.New("tap and user networking are exclusive")
	case n.Tap == "" && !n.User:
		return errors.New("set either a tap device or user networking")
	}
	if n.MAC != "" || n.Tap != "" {
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 {
			return fmt.Errorf("mac %q is not a 6-byte MAC address", n.MAC)
		}
		if hw[0]&1 != 0 {
			return fmt.Errorf("mac %q is a multicast address", n.MAC)
		}
	}
	if n.Tap != "" {
		// IFNAMSIZ is 16 including the NUL.
		if len(n.Tap) > 15 || strings.ContainsAny(n.Tap, "/,:= \t\n") {
			return fmt.Errorf("tap name %q is not a valid interface name", n.Tap)
		}
		if n.Restrict || len(n.HostFwds) > 0 {
			return errors.New("restrict and host forwards only apply to user networking")
		}
	}
	for i, f := range n.HostFwds {
		if err := f.validate(); err != nil {
			return fmt.Errorf("host forward %d: %w", i, err)
		}
	}
	return nil
}

func (f HostFwd) validate() error {
	switch f.Proto {
	case "", "tcp", "udp":
	default:
		return fmt.Errorf("protocol %q: want tcp or udp", f.Proto)
	}
	for _, a := range []struct{ field, val string }{{"host", f.HostAddr}, {"guest", f.GuestAddr}} {
		if a.val == "" {
			continue
		}
		if ip := net.ParseIP(a.val); ip == nil || ip.To4() == nil {
			return fmt.Errorf("%s address %q is not an IPv4 address", a.field, a.val)
		}
	}
	if f.HostPort < 1 || f.HostPort > 65535 {
		return fmt.Errorf("host port %d out of range 1..65535", f.HostPort)
	}
	if f.GuestPort < 1 || f.GuestPort > 65535 {
		return fmt.Errorf("guest port %d out of range 1..65535", f.GuestPort)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func validPortName(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '.', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}
