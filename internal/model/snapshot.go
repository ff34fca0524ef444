package model

import "time"

// Snapshot is a saved VM: its memory and device state and frozen copies
// of its disks, restorable only by the engine and VMM version that made it.
type Snapshot struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// VMID and VMName are the VM it was taken of (which may be gone).
	VMID   string `json:"vm_id"`
	VMName string `json:"vm_name"`
	// What a restore needs to be identical: engine and VMM version, the
	// kernel and image it booted, its size.
	Engine     string `json:"engine"`
	VMMVersion string `json:"vmm_version"`
	Kernel     string `json:"kernel"`
	Image      string `json:"image"`
	VCPU       int    `json:"vcpu"`
	MemoryMiB  int    `json:"memory_mib"`
	DiskSize   int64  `json:"disk_size"`
	NoWorkDisk bool   `json:"no_work_disk,omitempty"`
	// StateBytes is the size of the saved memory and device state;
	// DiskBytes the space the frozen disks take on the host.
	StateBytes int64 `json:"state_bytes"`
	DiskBytes  int64 `json:"disk_bytes"`
	// SaveMS is how long the VM was paused to take the snapshot.
	SaveMS    int64     `json:"save_ms"`
	CreatedAt time.Time `json:"created_at"`
}
