package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"banger/internal/agent"
	"banger/internal/engine"
	"banger/internal/hosttools"
)

// File names in a VM's directories. They are part of the on-disk format: a
// daemon upgraded in place finds existing VMs (and running VMMs) by them.
const (
	rootDiskFile  = "root.raw"
	vsockFile     = "vsock.sock"
	apiSockFile   = "api.sock"
	pidFileName   = "firecracker.pid"
	agentCmdParam = "banger.agent="
)

// The driver's optional capabilities (see engine.Registry).
var (
	_ engine.Cleaner      = (*Driver)(nil)
	_ engine.CtrlAltDeler = (*Driver)(nil)
	_ engine.Checker      = (*Driver)(nil)
)

// Traits: Firecracker needs KVM and has no user-mode networking.
func (d *Driver) Traits() engine.Traits {
	return engine.Traits{NeedsKVM: true, UserNetworking: false}
}

// Layout puts the root disk (a raw clone) in dirs.State and the API
// socket, the pidfile and the hybrid vsock socket in dirs.Run; the guest
// agent listens on vsock (banger.agent=vsock on the kernel command line),
// since Firecracker has no virtio-serial ports, and the serial console
// goes to the serial log file. Under the jailer the sockets move into the
// VM's jail (see JailSpec).
func (d *Driver) Layout(spec engine.Spec, dirs engine.Dirs) engine.Spec {
	spec.RootDisk = filepath.Join(dirs.State, rootDiskFile)
	spec.AgentSocket, spec.AgentPortName = "", ""
	// Firecracker writes its serial output to a file itself (no size
	// cap there yet).
	spec.SerialSocket = ""
	spec.VsockSocket = filepath.Join(dirs.Run, vsockFile)
	spec.QMPSocket = filepath.Join(dirs.Run, apiSockFile)
	spec.PIDFile = filepath.Join(dirs.Run, pidFileName)
	if !strings.Contains(spec.Cmdline, agentCmdParam) {
		spec.Cmdline = strings.TrimSpace(spec.Cmdline + " " + agentCmdParam + "vsock")
	}
	return d.JailSpec(spec)
}

// PrepareRootDisk clones the raw image (Firecracker takes raw files only):
// a reflink where the file system has them, else a sparse copy (see
// CloneDisk).
func (d *Driver) PrepareRootDisk(ctx context.Context, image string, dirs engine.Dirs) (string, error) {
	method, err := CloneDisk(image, filepath.Join(dirs.State, rootDiskFile))
	if err != nil {
		return "", fmt.Errorf("clone root disk: %w", err)
	}
	return method, nil
}

// DialAgent connects to the agent's vsock port through the hybrid vsock
// socket.
func (d *Driver) DialAgent(ctx context.Context, spec engine.Spec) (net.Conn, error) {
	return agent.DialHybridVsock(ctx, spec.VsockSocket, agent.VsockPort)
}

// Available reports whether the firecracker binary is installed (Check
// also runs it).
func (d *Driver) Available() error {
	if _, err := hosttools.Path(d.binary()); err != nil {
		return fmt.Errorf("%w; set firecracker_bin if it is installed elsewhere", err)
	}
	return nil
}

// SendCtrlAltDel presses Ctrl+Alt+Del on inst's guest (see
// Instance.SendCtrlAltDel).
func (d *Driver) SendCtrlAltDel(ctx context.Context, inst engine.Instance) error {
	fi, ok := inst.(*Instance)
	if !ok {
		return errors.New("send ctrl-alt-del: not a firecracker instance")
	}
	return fi.SendCtrlAltDel(ctx)
}
