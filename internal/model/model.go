// Package model holds banger's domain types (VMs, images, kernels) and the
// rules that apply to them regardless of transport or storage.
package model

import (
	"time"

	"banger/internal/egress/policy"
)

// VMState is the lifecycle state of a VM as recorded in the store.
type VMState string

// VM states. A VM is "created" until first started; "stopped" after a clean
// stop or a kill; "error" only when banger lost track of it unexpectedly
// (e.g. the VMM died on its own); "paused" while its vCPUs are stopped (its
// VMM and memory stay; `banger vm resume` continues it).
const (
	StateCreated  VMState = "created"
	StateStarting VMState = "starting"
	StateRunning  VMState = "running"
	StateStopping VMState = "stopping"
	StatePaused   VMState = "paused"
	StateStopped  VMState = "stopped"
	StateError    VMState = "error"
)

// VM is one microVM known to banger.
type VM struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Image      string    `json:"image"`
	Kernel     string    `json:"kernel"`
	VCPU       int       `json:"vcpu"`
	MemoryMiB  int       `json:"memory_mib"`
	DiskSize   int64     `json:"disk_size"` // bytes, the work disk mounted at /root
	State      VMState   `json:"state"`
	PID        int       `json:"pid,omitempty"` // VMM process while running
	Accel      string    `json:"accel,omitempty"`
	AutoRemove bool      `json:"auto_remove,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	StartedAt  time.Time `json:"started_at,omitempty"`
	// The workspace last prepared in the guest: host path, mode, whether
	// untracked files were included, and the host HEAD it was prepared
	// from. Empty when none was. --auto-prepare repeats the prepare with
	// the same options.
	WorkspacePath             string `json:"workspace_path,omitempty"`
	WorkspaceMode             string `json:"workspace_mode,omitempty"`
	WorkspaceIncludeUntracked bool   `json:"workspace_include_untracked,omitempty"`
	WorkspaceHead             string `json:"workspace_head,omitempty"`

	// Network is "bridge", "user" or "none".
	Network string `json:"network,omitempty"`
	// IP is the guest's address on the bridge (bridge mode).
	IP string `json:"ip,omitempty"`
	// NAT lets the guest reach beyond the host (bridge: masquerade for
	// its /32; user: outbound not restricted).
	NAT bool `json:"nat,omitempty"`
	// Egress is the VM's egress policy as given (flags and policy file
	// merged) with its effective mode in Egress.Egress; nil for VMs made
	// before policies existed (NAT then says all or none). NAT is kept
	// equal to Egress.Egress == "all".
	Egress *policy.Spec `json:"egress,omitempty"`
	// EgressPlaceholders maps each secret of the policy to the VM's
	// placeholder for it, stable across restarts (not shown).
	EgressPlaceholders map[string]string `json:"-"`
	// Publish lists host ports forwarded to guest ports.
	Publish []PortMap `json:"publish,omitempty"`
	// SSHPort is the host loopback port forwarded to the guest's sshd
	// (user mode).
	SSHPort int `json:"ssh_port,omitempty"`
	// Engine is the VMM ("qemu" or "firecracker"), fixed at create: the
	// root disk's format depends on it.
	Engine string `json:"engine,omitempty"`
	// DiskClone says how the root disk was made from the image:
	// "qcow2-overlay", "reflink" or "sparse-copy".
	DiskClone string `json:"disk_clone,omitempty"`
	// NoWorkDisk: /root stays on the root disk (VMs that build images,
	// whose whole root disk becomes the new image).
	NoWorkDisk bool `json:"no_work_disk,omitempty"`

	// Memory is what the running VM costs the host and what its guest
	// uses, measured when the VM is shown or listed; never stored.
	Memory *MemoryUsage `json:"memory_usage,omitempty"`
}

// Balloon states (MemoryUsage.Balloon).
const (
	// BalloonReporting: the VM has a balloon and the guest drives it, so
	// pages the guest frees go back to the host.
	BalloonReporting = "reporting"
	// BalloonNoDriver: the VM has a balloon but its guest kernel does not
	// drive it (an initramfs made before banger loaded virtio_balloon:
	// re-import the kernel).
	BalloonNoDriver = "no-driver"
	// BalloonOff: the VM has no balloon (config balloon = false, or a VM
	// started by an older banger).
	BalloonOff = "off"
)

// MemoryUsage is a running VM's memory, in bytes. Guest figures come from
// the guest's /proc/meminfo through its agent and are zero, with
// GuestError set, when the guest did not answer; list leaves them out.
type MemoryUsage struct {
	// HostRSS is the VMM process's resident memory (VmRSS): what the VM
	// holds of the host's RAM.
	HostRSS int64 `json:"host_rss"`
	// GuestTotal is the guest's MemTotal.
	GuestTotal int64 `json:"guest_total,omitempty"`
	// GuestUsed is MemTotal - MemFree, page cache included: what the
	// guest holds, and so the least the host can hold for it.
	GuestUsed int64 `json:"guest_used,omitempty"`
	// GuestAvailable is the guest's MemAvailable.
	GuestAvailable int64 `json:"guest_available,omitempty"`
	// Balloon is BalloonReporting, BalloonNoDriver or BalloonOff, as the
	// guest sees it ("" when the guest did not answer).
	Balloon    string `json:"balloon,omitempty"`
	GuestError string `json:"guest_error,omitempty"`
}

// PortMap forwards HostIP:HostPort on the host to GuestPort in the guest.
type PortMap struct {
	HostIP    string `json:"host_ip"`
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
}

// Kernel is an imported guest kernel: an ELF vmlinux plus the initramfs
// banger generated for it.
type Kernel struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	Vmlinux   string    `json:"vmlinux"`
	Initramfs string    `json:"initramfs"`
	SHA256    string    `json:"sha256"` // of the vmlinux
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
}

// Image is a root filesystem (ext4) paired with a default kernel.
type Image struct {
	Name      string    `json:"name"`
	Rootfs    string    `json:"rootfs"`
	Kernel    string    `json:"kernel"`
	SizeBytes int64     `json:"size_bytes"`
	Source    string    `json:"source"`
	CreatedAt time.Time `json:"created_at"`
}
