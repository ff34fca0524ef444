package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"banger/internal/egress/policy"
	"banger/internal/model"
)

const vmColumns = `id, name, image, kernel, vcpu, memory_mib, disk_size, state, pid,
	accel, auto_remove, last_error, created_at, updated_at, started_at,
	workspace_path, workspace_mode, workspace_head,
	network, ip, nat, publish, ssh_port, engine, disk_clone, no_work_disk,
	workspace_include_untracked, egress, egress_placeholders`

// CreateVM inserts vm. A zero CreatedAt or UpdatedAt is set to the current
// time (and written back to vm). It returns an error wrapping ErrExists if a
// VM with the same ID or name exists.
func (s *Store) CreateVM(ctx context.Context, vm *model.VM) error {
	if vm == nil {
		return errors.New("create vm: nil vm")
	}
	if vm.ID == "" || vm.Name == "" {
		return fmt.Errorf("create vm %q (id %q): id and name are required", vm.Name, vm.ID)
	}
	now := s.stamp()
	createdAt, updatedAt := vm.CreatedAt, vm.UpdatedAt
	if createdAt.IsZero() {
		createdAt = now
	}
	if updatedAt.IsZero() {
		updatedAt = now
	}
	created, err := formatTime(createdAt)
	if err != nil {
		return fmt.Errorf("create vm %q: created_at: %w", vm.Name, err)
	}
	updated, err := formatTime(updatedAt)
	if err != nil {
		return fmt.Errorf("create vm %q: updated_at: %w", vm.Name, err)
	}
	started, err := formatOptionalTime(vm.StartedAt)
	if err != nil {
		return fmt.Errorf("create vm %q: started_at: %w", vm.Name, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO vms (`+vmColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		vm.ID, vm.Name, vm.Image, vm.Kernel, vm.VCPU, vm.MemoryMiB, vm.DiskSize,
		string(vm.State), vm.PID, vm.Accel, vm.AutoRemove, vm.LastError,
		created, updated, started, vm.WorkspacePath, vm.WorkspaceMode, vm.WorkspaceHead,
		vm.Network, vm.IP, vm.NAT, publishJSON(vm.Publish), vm.SSHPort, vm.Engine, vm.DiskClone, vm.NoWorkDisk,
		vm.WorkspaceIncludeUntracked, egressJSON(vm.Egress), placeholdersJSON(vm.EgressPlaceholders))
	if err != nil {
		if isUniqueViolation(err) {
			return vmExistsError(vm, err)
		}
		return fmt.Errorf("create vm %q: %w", vm.Name, err)
	}
	vm.CreatedAt, vm.UpdatedAt = createdAt.UTC(), updatedAt.UTC()
	return nil
}

// vmExistsError names the key that collided, from SQLite's constraint
// message ("UNIQUE constraint failed: vms.name").
func vmExistsError(vm *model.VM, err error) error {
	switch msg := err.Error(); {
	case strings.Contains(msg, "vms.name"):
		return fmt.Errorf("vm %q: %w", vm.Name, ErrExists)
	case strings.Contains(msg, "vms.id"):
		return fmt.Errorf("vm id %q: %w", vm.ID, ErrExists)
	default:
		return fmt.Errorf("vm %q (id %q): %w", vm.Name, vm.ID, ErrExists)
	}
}

// GetVM returns the VM whose ID or name is idOrName. An exact ID match
// takes precedence over a name match.
func (s *Store) GetVM(ctx context.Context, idOrName string) (*model.VM, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms
		WHERE id = ?1 OR name = ?1
		ORDER BY id = ?1 DESC
		LIMIT 1`, idOrName)
	vm, err := scanVM(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("vm %q: %w", idOrName, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get vm %q: %w", idOrName, err)
	}
	return vm, nil
}

// ListVMs returns all VMs ordered by creation time, then name. It returns
// an empty, non-nil slice if there are none.
func (s *Store) ListVMs(ctx context.Context) ([]*model.VM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+vmColumns+` FROM vms ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	defer rows.Close()
	vms := []*model.VM{}
	for rows.Next() {
		vm, err := scanVM(rows)
		if err != nil {
			return nil, fmt.Errorf("list vms: %w", err)
		}
		vms = append(vms, vm)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	return vms, nil
}

// UpdateVM overwrites the VM with vm.ID with every field of vm except
// CreatedAt, which is immutable, and sets UpdatedAt to the current time.
// On success vm.UpdatedAt and vm.CreatedAt hold the stored values. It
// returns an error wrapping ErrNotFound if there is no such VM and one
// wrapping ErrExists if it is renamed to a name another VM has.
func (s *Store) UpdateVM(ctx context.Context, vm *model.VM) error {
	if vm == nil {
		return errors.New("update vm: nil vm")
	}
	if vm.Name == "" {
		return fmt.Errorf("update vm id %q: name is required", vm.ID)
	}
	updatedAt := s.stamp()
	updated, err := formatTime(updatedAt)
	if err != nil {
		return fmt.Errorf("update vm %q: updated_at: %w", vm.Name, err)
	}
	started, err := formatOptionalTime(vm.StartedAt)
	if err != nil {
		return fmt.Errorf("update vm %q: started_at: %w", vm.Name, err)
	}
	var created string
	err = s.db.QueryRowContext(ctx, `UPDATE vms SET
			name = ?, image = ?, kernel = ?, vcpu = ?, memory_mib = ?, disk_size = ?,
			state = ?, pid = ?, accel = ?, auto_remove = ?, last_error = ?,
			updated_at = ?, started_at = ?,
			workspace_path = ?, workspace_mode = ?, workspace_head = ?,
			network = ?, ip = ?, nat = ?, publish = ?, ssh_port = ?,
			engine = ?, disk_clone = ?, no_work_disk = ?,
			workspace_include_untracked = ?, egress = ?, egress_placeholders = ?
		WHERE id = ?
		RETURNING created_at`,
		vm.Name, vm.Image, vm.Kernel, vm.VCPU, vm.MemoryMiB, vm.DiskSize,
		string(vm.State), vm.PID, vm.Accel, vm.AutoRemove, vm.LastError,
		updated, started, vm.WorkspacePath, vm.WorkspaceMode, vm.WorkspaceHead,
		vm.Network, vm.IP, vm.NAT, publishJSON(vm.Publish), vm.SSHPort,
		vm.Engine, vm.DiskClone, vm.NoWorkDisk, vm.WorkspaceIncludeUntracked,
		egressJSON(vm.Egress), placeholdersJSON(vm.EgressPlaceholders), vm.ID).Scan(&created)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("vm id %q: %w", vm.ID, ErrNotFound)
	}
	if err != nil {
		if isUniqueViolation(err) {
			return vmExistsError(vm, err)
		}
		return fmt.Errorf("update vm %q: %w", vm.Name, err)
	}
	createdAt, err := parseTime(created)
	if err != nil {
		return fmt.Errorf("update vm %q: %w", vm.Name, err)
	}
	vm.CreatedAt, vm.UpdatedAt = createdAt, updatedAt
	return nil
}

// DeleteVM deletes the VM with the given ID (not name). It returns an error
// wrapping ErrNotFound if there is no such VM.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete vm id %q: %w", id, err)
	}
	return checkAffected(res, fmt.Sprintf("vm id %q", id))
}

// CountVMsUsingImage returns how many VMs were created from the named image.
func (s *Store) CountVMsUsingImage(ctx context.Context, image string) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM vms WHERE image = ?`, image).Scan(&n); err != nil {
		return 0, fmt.Errorf("count vms using image %q: %w", image, err)
	}
	return n, nil
}

// CountVMsUsingKernel returns how many VMs use the named kernel.
func (s *Store) CountVMsUsingKernel(ctx context.Context, kernel string) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM vms WHERE kernel = ?`, kernel).Scan(&n); err != nil {
		return 0, fmt.Errorf("count vms using kernel %q: %w", kernel, err)
	}
	return n, nil
}

func scanVM(sc scanner) (*model.VM, error) {
	var (
		vm               model.VM
		state            string
		created, updated string
		started          sql.NullString
		publish          string
		egress, holders  string
	)
	if err := sc.Scan(&vm.ID, &vm.Name, &vm.Image, &vm.Kernel, &vm.VCPU, &vm.MemoryMiB,
		&vm.DiskSize, &state, &vm.PID, &vm.Accel, &vm.AutoRemove, &vm.LastError,
		&created, &updated, &started, &vm.WorkspacePath, &vm.WorkspaceMode, &vm.WorkspaceHead,
		&vm.Network, &vm.IP, &vm.NAT, &publish, &vm.SSHPort, &vm.Engine, &vm.DiskClone, &vm.NoWorkDisk,
		&vm.WorkspaceIncludeUntracked, &egress, &holders); err != nil {
		return nil, err
	}
	vm.State = model.VMState(state)
	var err error
	if vm.CreatedAt, err = parseTime(created); err != nil {
		return nil, fmt.Errorf("vm %q: created_at: %w", vm.Name, err)
	}
	if vm.UpdatedAt, err = parseTime(updated); err != nil {
		return nil, fmt.Errorf("vm %q: updated_at: %w", vm.Name, err)
	}
	if vm.StartedAt, err = parseOptionalTime(started); err != nil {
		return nil, fmt.Errorf("vm %q: started_at: %w", vm.Name, err)
	}
	if publish != "" && publish != "[]" {
		if err := json.Unmarshal([]byte(publish), &vm.Publish); err != nil {
			return nil, fmt.Errorf("vm %q: publish: %w", vm.Name, err)
		}
	}
	if egress != "" {
		vm.Egress = new(policy.Spec)
		if err := json.Unmarshal([]byte(egress), vm.Egress); err != nil {
			return nil, fmt.Errorf("vm %q: egress: %w", vm.Name, err)
		}
	}
	if holders != "" && holders != "{}" {
		if err := json.Unmarshal([]byte(holders), &vm.EgressPlaceholders); err != nil {
			return nil, fmt.Errorf("vm %q: egress placeholders: %w", vm.Name, err)
		}
	}
	return &vm, nil
}

// egressJSON encodes a VM's egress policy; "" for none recorded.
func egressJSON(s *policy.Spec) string {
	if s == nil {
		return ""
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func placeholdersJSON(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// checkAffected turns "no row affected" into ErrNotFound for what.
func checkAffected(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}

func publishJSON(p []model.PortMap) string {
	if len(p) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(p)
	return string(b)
}
