// Package api holds the wire types shared by bangerd and its clients: the
// versioned HTTP+JSON API served on the daemon's Unix socket.
//
// Simple calls answer with a JSON body. Long calls (create, start, image
// build...) answer with newline-delimited JSON Events: progress events,
// then one result or error event. exec and run upgrade the connection to
// the framed stream protocol of internal/agent.
package api

import (
	"fmt"

	"banger/internal/egress/policy"
	"banger/internal/model"
)

// Version is the API version prefix.
const Version = "v1"

// Error codes.
const (
	CodeNotFound        = "not_found"
	CodeAlreadyExists   = "already_exists"
	CodeBadRequest      = "bad_request"
	CodeConflict        = "conflict" // e.g. the VM is not in a state that allows the operation
	CodeNotRunning      = "not_running"
	CodeOperationFailed = "operation_failed"
	CodeUnknownMethod   = "unknown_method"
	CodeBadVersion      = "bad_version"
	// CodeUnauthorized: a request on the TCP listener (api_listen)
	// without the right bearer token.
	CodeUnauthorized = "unauthorized"
)

// Error is every failed call's answer. OpID also appears in the daemon's
// log line for the failure.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	OpID    string `json:"op_id,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// Errorf makes an Error with a code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Event is one line of a streamed answer.
type Event struct {
	Progress *Progress `json:"progress,omitempty"`
	Result   any       `json:"result,omitempty"`
	Error    *Error    `json:"error,omitempty"`
}

// Progress reports one named stage of a long operation.
type Progress struct {
	Stage      string `json:"stage"`
	DurationMS int64  `json:"duration_ms"`
	Detail     string `json:"detail,omitempty"`
	// Current and Total report a transfer in bytes (Total 0 = unknown);
	// a stream may send many such events for one stage, the last with
	// DurationMS set when the stage ends.
	Current int64 `json:"current,omitempty"`
	Total   int64 `json:"total,omitempty"`
}

// StageOutput is a progress event carrying output of a command run for
// the operation (e.g. an image build's --run) in Detail.
const StageOutput = "output"

// Ping is the daemon's identity.
type Ping struct {
	Version string `json:"version"`
	PID     int    `json:"pid"`
	Socket  string `json:"socket"`
}

// VMCreateParams creates (and unless NoStart, boots) a VM.
type VMCreateParams struct {
	Name       string `json:"name,omitempty"`
	Image      string `json:"image,omitempty"`
	VCPU       int    `json:"vcpu,omitempty"`
	MemoryMiB  int    `json:"memory_mib,omitempty"`
	DiskSize   string `json:"disk_size,omitempty"` // e.g. "8G"
	NoStart    bool   `json:"no_start,omitempty"`
	AutoRemove bool   `json:"auto_remove,omitempty"`
	// Network is bridge, user or none (default: the config's network).
	Network string `json:"network,omitempty"`
	// NAT lets the guest reach beyond the host: the same as an Egress
	// of mode "all" (kept for older clients).
	NAT bool `json:"nat,omitempty"`
	// Egress is the VM's egress policy (--egress, --allow, --policy,
	// --secret): see package internal/egress/policy. Nil: mode none
	// (unless NAT).
	Egress *policy.Spec `json:"egress,omitempty"`
	// Publish forwards host ports: "[HOSTIP:]HOSTPORT:GUESTPORT".
	Publish []string `json:"publish,omitempty"`
	// Engine is auto, qemu or firecracker (default: the config's engine).
	Engine string `json:"engine,omitempty"`
	// Wait is what "ready" means before the call returns: WaitAgent
	// (default: the guest agent answers), WaitSSH (something listens on
	// the guest's port 22) or WaitSystem (the guest's init system has
	// finished booting).
	Wait string `json:"wait,omitempty"`
	// NoWorkDisk keeps /root on the root disk (image builds; not part of
	// the wire API).
	NoWorkDisk bool `json:"-"`
}

// Readiness levels, in the order a guest reaches them (ssh and system in
// either order).
const (
	WaitAgent  = "agent"
	WaitSSH    = "ssh"
	WaitSystem = "system"
)

// ValidWait checks a readiness level ("" means WaitAgent).
func ValidWait(level string) error {
	switch level {
	case "", WaitAgent, WaitSSH, WaitSystem:
		return nil
	}
	return fmt.Errorf("unknown readiness %q: want %s, %s or %s", level, WaitAgent, WaitSSH, WaitSystem)
}

// Readiness says which milestones of its boot a VM's guest has reached.
type Readiness struct {
	// Agent: the VM runs and its guest agent answers.
	Agent bool `json:"agent"`
	// SSH: something listens on the guest's TCP port 22.
	SSH bool `json:"ssh"`
	// SSHD: the image has an SSH server (OpenSSH or dropbear) at all.
	SSHD bool `json:"sshd"`
	// System: the guest's init system has finished booting.
	System bool `json:"system"`
	// SystemState is the init system's word for its state (systemd's
	// is-system-running; "agent" when the agent is PID 1).
	SystemState string `json:"system_state,omitempty"`
}

// Reached reports whether r has reached level.
func (r Readiness) Reached(level string) bool {
	switch level {
	case "", WaitAgent:
		return r.Agent
	case WaitSSH:
		return r.Agent && r.SSH
	case WaitSystem:
		return r.Agent && r.System
	}
	return false
}

// VMWaitParams waits for a running VM's guest to reach a readiness level.
type VMWaitParams struct {
	For string `json:"for"` // WaitAgent, WaitSSH or WaitSystem
	// TimeoutMS bounds the wait (default: the daemon's boot_timeout).
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// VMSetParams changes a stopped VM's resources, or any VM's egress
// policy (running VMs included: it takes effect at once).
type VMSetParams struct {
	VCPU      int `json:"vcpu,omitempty"`
	MemoryMiB int `json:"memory_mib,omitempty"`
	// Egress, when set, replaces the VM's whole egress policy.
	Egress *policy.Spec `json:"egress,omitempty"`
}

// SecretSetParams stores a secret's value (PUT /secrets/{secret}).
type SecretSetParams struct {
	Value []byte `json:"value"`
}

// SecretList lists the stored secrets' names (never values).
type SecretList struct {
	Names []string `json:"names"`
}

// MaxSecretBytes caps a secret's value.
const MaxSecretBytes = 64 << 10

// VMKillParams sends a signal to the VMM.
type VMKillParams struct {
	Signal string `json:"signal,omitempty"` // name (KILL, TERM) or number; default KILL
}

// SnapshotCreateParams takes a snapshot of VM.
type SnapshotCreateParams struct {
	VM   string `json:"vm"`
	Name string `json:"name,omitempty"` // default: VM-<random>
	// KeepPaused leaves the VM paused afterwards; otherwise a VM that was
	// running runs on (a paused one stays paused).
	KeepPaused bool `json:"keep_paused,omitempty"`
}

// VMPruneResult lists the VMs a prune deleted.
type VMPruneResult struct {
	Deleted []string `json:"deleted"`
}

// ExecParams starts a command in a running VM (the body of the upgrade
// request).
type ExecParams struct {
	VM   string   `json:"vm"`
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Cwd  string   `json:"cwd,omitempty"`
	TTY  bool     `json:"tty,omitempty"`
	Rows uint16   `json:"rows,omitempty"`
	Cols uint16   `json:"cols,omitempty"`
	Term string   `json:"term,omitempty"`
}

// WorkspaceParams describes a workspace the client is about to send (as a
// tar stream of stdin frames) to /root/repo in the guest.
type WorkspaceParams struct {
	Path string `json:"path"` // host repository root
	Mode string `json:"mode"` // copy or full_copy
	// IncludeUntracked: untracked (not ignored) files were sent too.
	IncludeUntracked bool   `json:"include_untracked,omitempty"`
	Head             string `json:"head,omitempty"`
	Files            int    `json:"files"`
	Bytes            int64  `json:"bytes"`
}

// ExportParams asks for the guest's changes as a patch.
type ExportParams struct {
	BaseCommit string `json:"base_commit,omitempty"`
}

// RunParams creates a VM, boots it and runs a command in it, over one
// upgraded connection. With Create.AutoRemove the daemon deletes the VM
// when the command ends or the client goes away, whatever happens.
type RunParams struct {
	Create VMCreateParams `json:"create"`
	Exec   ExecParams     `json:"exec"`
	// Workspace, when set, is uploaded after boot and before the command,
	// which then starts in /root/repo: the daemon sends a progress frame
	// with stage StageSendWorkspace, the client answers with the tar
	// stream as stdin frames ended by an empty one.
	Workspace *WorkspaceParams `json:"workspace,omitempty"`
}

// StageSendWorkspace asks a run's client to send the workspace now.
const StageSendWorkspace = "send_workspace"

// RunStarted is the payload of the progress frame that tells the client
// which VM a run created.
type RunStarted struct {
	VM *model.VM `json:"vm"`
}

// KernelImportParams imports a kernel.
type KernelImportParams struct {
	Name string `json:"name"`
	From string `json:"from"`
}

// ImageBuildParams builds an ext4 image.
type ImageBuildParams struct {
	Name        string   `json:"name"`
	FromDir     string   `json:"from_dir,omitempty"`
	Debootstrap string   `json:"debootstrap,omitempty"` // suite
	Mirror      string   `json:"mirror,omitempty"`
	Packages    []string `json:"packages,omitempty"`
	Kernel      string   `json:"kernel,omitempty"`
	Size        string   `json:"size,omitempty"`
	// FromImage boots this image, applies Copy then Run in order, and
	// saves the VM's root disk as the new image.
	FromImage string      `json:"from_image,omitempty"`
	Run       []string    `json:"run,omitempty"`
	Copy      []ImageCopy `json:"copy,omitempty"`
	// NAT lets the build VM reach the network (e.g. to install packages).
	NAT bool `json:"nat,omitempty"`
}

// ImageCopy copies a host file or directory into a build VM.
type ImageCopy struct {
	Src string `json:"src"` // absolute host path
	Dst string `json:"dst"` // absolute guest path
}

// ImagePullParams pulls an image from the catalog (a name) or from an
// OCI registry (a reference such as docker.io/library/alpine:3.20).
type ImagePullParams struct {
	Ref string `json:"ref"`
	// Name registers the image under another name (default: the catalog
	// name, or one derived from the reference).
	Name string `json:"name,omitempty"`
	// Kernel pairs an OCI image with this kernel (default: the config's
	// or the only one; a missing catalog kernel is pulled).
	Kernel string `json:"kernel,omitempty"`
	// Catalog overrides the configured catalog (path or URL).
	Catalog string `json:"catalog,omitempty"`
}

// KernelPullParams pulls a kernel from the catalog.
type KernelPullParams struct {
	Name    string `json:"name"`
	Catalog string `json:"catalog,omitempty"`
}

// PullResult says what a pull did.
type PullResult struct {
	Name string `json:"name"`
	// AlreadyPresent: nothing was downloaded, the name existed.
	AlreadyPresent bool   `json:"already_present,omitempty"`
	Source         string `json:"source,omitempty"`
}

// ImageRegisterParams registers an existing ext4 file.
type ImageRegisterParams struct {
	Name   string `json:"name"`
	Rootfs string `json:"rootfs"`
	Kernel string `json:"kernel"`
}

// ErrorTrailer is the HTTP trailer in which a download that fails after
// its first byte (e.g. an image bundle) reports its error as JSON.
const ErrorTrailer = "X-Banger-Error"

// Upgrade is the value of the Upgrade header for exec and run.
const Upgrade = "banger-stream"
