// Package agent defines the protocol between the host and banger-agent, the
// program that runs inside every guest, and the host side of it.
//
// The transport is one byte stream (a virtio-serial port backed by a host
// Unix socket) multiplexed with yamux; the host opens streams, the guest
// accepts them. Every stream starts with one JSON Request line. Simple
// operations answer with one JSON Response line; "exec" switches the stream
// to the framed protocol of frame.go, which the daemon also forwards
// unchanged to the CLI.
package agent

import "banger/internal/api"

// PortName is the virtio-serial port name the agent looks for in the guest.
const PortName = "org.banger.agent"

// Operations understood by the agent.
const (
	OpPing     = "ping"
	OpExec     = "exec"
	OpSync     = "sync"
	OpPoweroff = "poweroff"
	// OpUntar extracts a tar stream (sent as stdin frames) under a
	// directory; the result comes back as an exit frame.
	OpUntar = "untar"
	// Session operations: see session.go.
	OpSessionStart  = "session_start"
	OpSessionList   = "session_list"
	OpSessionShow   = "session_show"
	OpSessionLogs   = "session_logs"
	OpSessionAttach = "session_attach"
	OpSessionStop   = "session_stop"
	// OpSSHSetup authorizes AuthorizedKey for root and answers HostKeys.
	OpSSHSetup = "ssh_setup"
	// OpPorts answers the guest's listening sockets in Ports.
	OpPorts = "ports"
	// OpMeminfo answers the guest's /proc/meminfo text (at most
	// memstat.MaxMeminfo bytes) in Meminfo, whether the VM has a virtio
	// balloon in BalloonDevice, and whether its driver is bound in
	// BalloonDriver.
	OpMeminfo = "meminfo"
	// OpReadiness answers how far the guest has booted, in Readiness.
	OpReadiness = "readiness"
	// OpSetClock sets the guest's wall clock (CLOCK_REALTIME) to ClockNS,
	// the host's time in nanoseconds since the Unix epoch: a guest that was
	// paused or restored from a snapshot is behind by the time it spent
	// stopped.
	OpSetClock = "set_clock"
)

// Readiness says which milestones of its boot a guest has reached.
type Readiness struct {
	// SSH: a socket listens on TCP port 22 (sshd, or an init system
	// holding it for socket activation).
	SSH bool `json:"ssh"`
	// SSHD: the image has an SSH server at all; without one (and
	// nothing on port 22) waiting for SSH is pointless.
	SSHD bool `json:"sshd"`
	// System: the guest's init system has finished booting (systemd:
	// running or degraded); a guest whose PID 1 is the agent is booted
	// once the agent answers.
	System bool `json:"system"`
	// SystemState is systemd's own word for it (initializing, starting,
	// running, degraded, ...), or "agent" when the agent is PID 1, or the
	// name of another PID 1, which the agent cannot ask.
	SystemState string `json:"system_state,omitempty"`
}

// Request is the first line of every stream.
type Request struct {
	Op   string       `json:"op"`
	Exec *ExecRequest `json:"exec,omitempty"`
	// Untar, for OpUntar.
	Untar *UntarRequest `json:"untar,omitempty"`
	// Session, for the session operations.
	Session *SessionRequest `json:"session,omitempty"`
	// File, for the file operations (files.go).
	File *FileRequest `json:"file,omitempty"`
	// AuthorizedKey, for OpSSHSetup: an authorized_keys line.
	AuthorizedKey string `json:"authorized_key,omitempty"`
	// Force, for poweroff, skips the init system's orderly shutdown: the
	// agent syncs and powers the machine off itself.
	Force bool `json:"force,omitempty"`
	// ClockNS, for OpSetClock: nanoseconds since the Unix epoch.
	ClockNS int64 `json:"clock_ns,omitempty"`
}

// Response answers a simple operation.
type Response struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Ping fields.
	Version string `json:"version,omitempty"`
	BootID  string `json:"boot_id,omitempty"`
	PID1    string `json:"pid1,omitempty"` // comm of the guest's PID 1
	// Session operations.
	Session  *SessionInfo  `json:"session_info,omitempty"`
	Sessions []SessionInfo `json:"sessions,omitempty"`
	// OpSSHSetup: the guest's SSH host public keys (none without sshd).
	HostKeys []string `json:"host_keys,omitempty"`
	// OpPorts.
	Ports []PortInfo `json:"ports,omitempty"`
	// OpMeminfo: /proc/meminfo as the guest reads it (hostile text:
	// parse it with memstat.ParseMeminfo), and whether the guest kernel
	// drives a virtio balloon.
	Meminfo       string `json:"meminfo,omitempty"`
	BalloonDevice bool   `json:"balloon_device,omitempty"`
	BalloonDriver bool   `json:"balloon_driver,omitempty"`
	// OpReadiness.
	Readiness *Readiness `json:"readiness,omitempty"`
	// File operations (files.go): the error's class, the file, the
	// result of an extraction.
	Code      string             `json:"code,omitempty"`
	File      *api.FileInfo      `json:"file_info,omitempty"`
	Extracted *api.ArchiveResult `json:"extracted,omitempty"`
}

// PortInfo is one listening socket in the guest.
type PortInfo struct {
	Proto   string `json:"proto"` // tcp or udp (Addr shows the family)
	Addr    string `json:"addr"`
	Port    int    `json:"port"`
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
	// Endpoint is filled in by the daemon: where the host reaches it.
	Endpoint string `json:"endpoint,omitempty"`
}

// UntarRequest extracts a tar stream into Dir.
type UntarRequest struct {
	Dir string `json:"dir"`
	// Clean removes Dir's previous contents first, so files deleted on
	// the host do not linger in the guest.
	Clean bool `json:"clean,omitempty"`
	// Workspace marks a workspace stream (workspace.WriteTar): Dir is
	// emptied first and HEAD's blobs are laid out into a pack from the
	// files its blob plan names, so they cross the wire only once.
	Workspace bool `json:"workspace,omitempty"`
}

// ExecRequest starts a process in the guest.
type ExecRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"` // KEY=VALUE added to the default environment
	Cwd  string   `json:"cwd,omitempty"` // default /root
	TTY  bool     `json:"tty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
	Term string   `json:"term,omitempty"`
}

// ExitStatus is the payload of an exit frame.
type ExitStatus struct {
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
	// Error is set when the process could not be started at all (the code
	// is then 127 for a missing command, 126 otherwise, as shells do).
	Error string `json:"error,omitempty"`
	// Workspace is set by an agent that extracted an untar stream as a
	// workspace (UntarRequest.Workspace): an older agent, in a VM booted
	// before an upgrade, would have left HEAD's blobs out.
	Workspace bool `json:"workspace,omitempty"`
}
