package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"banger/internal/model"
)

const snapshotColumns = `id, name, vm_id, vm_name, engine, vmm_version, kernel, image, vcpu, memory_mib, disk_size, no_work_disk, state_bytes, disk_bytes, save_ms, created_at`

// CreateSnapshot inserts sn. A zero CreatedAt is set to the current time
// (and written back). A snapshot with the same name or id fails with an
// error wrapping ErrExists.
func (s *Store) CreateSnapshot(ctx context.Context, sn *model.Snapshot) error {
	if sn == nil || sn.ID == "" || sn.Name == "" || sn.Engine == "" {
		return errors.New("create snapshot: id, name and engine are required")
	}
	createdAt := sn.CreatedAt
	if createdAt.IsZero() {
		createdAt = s.stamp()
	}
	created, err := formatTime(createdAt)
	if err != nil {
		return fmt.Errorf("create snapshot %q: created_at: %w", sn.Name, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO snapshots (`+snapshotColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		sn.ID, sn.Name, sn.VMID, sn.VMName, sn.Engine, sn.VMMVersion, sn.Kernel, sn.Image,
		sn.VCPU, sn.MemoryMiB, sn.DiskSize, boolInt(sn.NoWorkDisk), sn.StateBytes, sn.DiskBytes, sn.SaveMS, created)
	if err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("snapshot %q: %w", sn.Name, ErrExists)
		}
		return fmt.Errorf("create snapshot %q: %w", sn.Name, err)
	}
	sn.CreatedAt = createdAt.UTC()
	return nil
}

// GetSnapshot returns the snapshot with the given name or id.
func (s *Store) GetSnapshot(ctx context.Context, ref string) (*model.Snapshot, error) {
	sn, err := scanSnapshot(s.db.QueryRowContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots WHERE name = ? OR id = ? ORDER BY name = ? DESC LIMIT 1`, ref, ref, ref))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("snapshot %q: %w", ref, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get snapshot %q: %w", ref, err)
	}
	return sn, nil
}

// ListSnapshots returns every snapshot, oldest first; never nil.
func (s *Store) ListSnapshots(ctx context.Context) ([]*model.Snapshot, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+snapshotColumns+` FROM snapshots ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	defer rows.Close()
	out := []*model.Snapshot{}
	for rows.Next() {
		sn, err := scanSnapshot(rows)
		if err != nil {
			return nil, fmt.Errorf("list snapshots: %w", err)
		}
		out = append(out, sn)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	return out, nil
}

// DeleteSnapshot deletes the snapshot with the given id; ErrNotFound if
// there is none.
func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete snapshot %q: %w", id, err)
	}
	return checkAffected(res, "snapshot "+id)
}

func scanSnapshot(sc scanner) (*model.Snapshot, error) {
	var sn model.Snapshot
	var noWork int
	var created string
	if err := sc.Scan(&sn.ID, &sn.Name, &sn.VMID, &sn.VMName, &sn.Engine, &sn.VMMVersion, &sn.Kernel, &sn.Image,
		&sn.VCPU, &sn.MemoryMiB, &sn.DiskSize, &noWork, &sn.StateBytes, &sn.DiskBytes, &sn.SaveMS, &created); err != nil {
		return nil, err
	}
	sn.NoWorkDisk = noWork != 0
	t, err := parseTime(created)
	if err != nil {
		return nil, fmt.Errorf("snapshot %q: created_at: %w", sn.Name, err)
	}
	sn.CreatedAt = t
	return &sn, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// CountSnapshotsUsingImage returns how many snapshots were taken of VMs of
// the named image (their root disks are layered over it).
func (s *Store) CountSnapshotsUsingImage(ctx context.Context, image string) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM snapshots WHERE image = ?`, image).Scan(&n); err != nil {
		return 0, fmt.Errorf("count snapshots using image %q: %w", image, err)
	}
	return n, nil
}
