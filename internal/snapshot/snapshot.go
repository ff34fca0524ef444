// Package snapshot is the on-disk form of a VM snapshot: a directory with
// the VMM's saved state, frozen copies of the VM's disks and a metadata
// file saying what can restore it. Everything read back from a snapshot
// directory is treated as hostile: the metadata is size-capped and
// checked, and every file is opened inside the directory (os.Root), by a
// fixed name.
package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"banger/internal/fsutil"
	"banger/internal/model"
)

// File names in a snapshot directory. They are part of the on-disk
// format.
const (
	MetaFile  = "meta.json"
	StateFile = "state"      // the VMM's device and memory state
	RootDisk  = "root.qcow2" // the root disk as it was, a qcow2 over the image
	WorkDisk  = "work.ext4"  // the work disk as it was (raw)
)

// MaxMeta caps the metadata file.
const MaxMeta = 64 << 10

// FormatVersion is the version of this layout, recorded in the metadata.
const FormatVersion = 1

// Meta is the metadata file.
type Meta struct {
	Format   int            `json:"format"`
	Snapshot model.Snapshot `json:"snapshot"`
}

// WriteMeta writes sn's metadata into dir atomically.
func WriteMeta(dir string, sn *model.Snapshot) error {
	b, err := json.MarshalIndent(Meta{Format: FormatVersion, Snapshot: *sn}, "", "  ")
	if err != nil {
		return err
	}
	if len(b) > MaxMeta {
		return fmt.Errorf("snapshot metadata is %d bytes, over the %d limit", len(b), MaxMeta)
	}
	return fsutil.AtomicWriteFile(filepath.Join(dir, MetaFile), append(b, '\n'), 0o600)
}

// ReadMeta reads and checks the metadata of the snapshot in dir.
func ReadMeta(dir string) (*model.Snapshot, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open snapshot dir: %w", err)
	}
	defer root.Close()
	f, err := root.Open(MetaFile)
	if err != nil {
		return nil, fmt.Errorf("snapshot metadata: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, errors.New("snapshot metadata: not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxMeta+1))
	if err != nil {
		return nil, fmt.Errorf("snapshot metadata: %w", err)
	}
	if len(b) > MaxMeta {
		return nil, fmt.Errorf("snapshot metadata is over %d bytes", MaxMeta)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("snapshot metadata: %w", err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("snapshot metadata: format %d, this banger reads %d", m.Format, FormatVersion)
	}
	sn := &m.Snapshot
	if err := model.ValidateName(sn.Name); err != nil {
		return nil, fmt.Errorf("snapshot metadata: %w", err)
	}
	if sn.Engine == "" || sn.VMMVersion == "" || sn.VCPU <= 0 || sn.MemoryMiB <= 0 || sn.DiskSize < 0 || sn.StateBytes < 0 {
		return nil, errors.New("snapshot metadata: engine, vmm version, vcpu or memory missing or out of range")
	}
	return sn, nil
}

// Open opens the file called name (one of the constants above) in the
// snapshot directory dir, refusing anything that is not a regular file
// inside it.
func Open(dir, name string) (*os.File, error) {
	switch name {
	case StateFile, RootDisk, WorkDisk, MetaFile:
	default:
		return nil, fmt.Errorf("snapshot: no file %q", name)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open snapshot dir: %w", err)
	}
	defer root.Close()
	f, err := root.OpenFile(name, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", name, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("snapshot %s: not a regular file", name)
	}
	return f, nil
}

// Compatible says why a snapshot cannot be restored by engine running VMM
// version vmmVersion (nil if it can). A VMM restores only state saved by
// the same version: device state formats change between releases.
func Compatible(sn *model.Snapshot, engine, vmmVersion string) error {
	if sn.Engine != engine {
		return fmt.Errorf("snapshot %q was taken with engine %q; it cannot be restored with %q", sn.Name, sn.Engine, engine)
	}
	if sn.VMMVersion != vmmVersion {
		return fmt.Errorf("snapshot %q was taken with %s %s; this host runs %s, which cannot restore it", sn.Name, sn.Engine, sn.VMMVersion, vmmVersion)
	}
	return nil
}
