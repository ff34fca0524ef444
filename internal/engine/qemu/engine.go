package qemu

import (
	"context"
	"fmt"
	"net"
	"path/filepath"

	"banger/internal/engine"
	"banger/internal/hosttools"
)

// DiskMethod is how PrepareRootDisk makes a root disk (recorded per VM).
const DiskMethod = "qcow2-overlay"

// File names in a VM's directories. They are part of the on-disk format: a
// daemon upgraded in place finds existing VMs (and running VMMs) by them.
const (
	rootDiskFile   = "root.qcow2"
	agentSockFile  = "agent.sock"
	serialSockFile = "serial.sock"
	qmpSockFile    = "qmp.sock"
	pidFileName    = "qemu.pid"
)

// Traits: QEMU runs under KVM or TCG and has user-mode networking.
func (d *Driver) Traits() engine.Traits {
	return engine.Traits{NeedsKVM: false, UserNetworking: true}
}

// Layout puts the root disk (a qcow2 overlay) in dirs.State and the QMP
// socket, pidfile, serial socket and the agent's virtio-serial socket in
// dirs.Run.
func (d *Driver) Layout(spec engine.Spec, dirs engine.Dirs) engine.Spec {
	spec.RootDisk = filepath.Join(dirs.State, rootDiskFile)
	spec.AgentSocket = filepath.Join(dirs.Run, agentSockFile)
	spec.AgentPortName = engine.DefaultAgentPort
	spec.SerialSocket = filepath.Join(dirs.Run, serialSockFile)
	spec.QMPSocket = filepath.Join(dirs.Run, qmpSockFile)
	spec.PIDFile = filepath.Join(dirs.Run, pidFileName)
	spec.VsockSocket = ""
	return spec
}

// PrepareRootDisk makes a qcow2 overlay backed by the raw image: instant,
// and the image is never written.
func (d *Driver) PrepareRootDisk(ctx context.Context, image string, dirs engine.Dirs) (string, error) {
	root := filepath.Join(dirs.State, rootDiskFile)
	if _, err := hosttools.Run(ctx, hosttools.QEMUImg, "create", "-q", "-f", "qcow2",
		"-b", image, "-F", "raw", root); err != nil {
		return "", fmt.Errorf("create root overlay: %w", err)
	}
	return DiskMethod, nil
}

// DialAgent connects to the host end of the agent's virtio-serial port.
func (d *Driver) DialAgent(ctx context.Context, spec engine.Spec) (net.Conn, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", spec.AgentSocket)
	if err != nil {
		return nil, fmt.Errorf("dial agent socket: %w", err)
	}
	return conn, nil
}
