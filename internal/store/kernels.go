package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"banger/internal/model"
)

const kernelColumns = `name, version, vmlinux, initramfs, sha256, source, created_at`

// CreateKernel inserts k. A zero CreatedAt is set to the current time (and
// written back to k). It returns an error wrapping ErrExists if a kernel
// with the same name exists.
func (s *Store) CreateKernel(ctx context.Context, k *model.Kernel) error {
	if k == nil {
		return errors.New("create kernel: nil kernel")
	}
	if k.Name == "" {
		return errors.New("create kernel: name is required")
	}
	createdAt := k.CreatedAt
	if createdAt.IsZero() {
		createdAt = s.stamp()
	}
	created, err := formatTime(createdAt)
	if err != nil {
		return fmt.Errorf("create kernel %q: created_at: %w", k.Name, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO kernels (`+kernelColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		k.Name, k.Version, k.Vmlinux, k.Initramfs, k.SHA256, k.Source, created)
	if err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("kernel %q: %w", k.Name, ErrExists)
		}
		return fmt.Errorf("create kernel %q: %w", k.Name, err)
	}
	k.CreatedAt = createdAt.UTC()
	return nil
}

// GetKernel returns the named kernel.
func (s *Store) GetKernel(ctx context.Context, name string) (*model.Kernel, error) {
	k, err := scanKernel(s.db.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("kernel %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get kernel %q: %w", name, err)
	}
	return k, nil
}

// ListKernels returns all kernels ordered by name. It returns an empty,
// non-nil slice if there are none.
func (s *Store) ListKernels(ctx context.Context) ([]*model.Kernel, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+kernelColumns+` FROM kernels ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	defer rows.Close()
	kernels := []*model.Kernel{}
	for rows.Next() {
		k, err := scanKernel(rows)
		if err != nil {
			return nil, fmt.Errorf("list kernels: %w", err)
		}
		kernels = append(kernels, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	return kernels, nil
}

// DeleteKernel deletes the named kernel. It returns an error wrapping
// ErrNotFound if there is no such kernel. It does not check whether VMs or
// images still use it; see CountVMsUsingKernel.
func (s *Store) DeleteKernel(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM kernels WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete kernel %q: %w", name, err)
	}
	return checkAffected(res, fmt.Sprintf("kernel %q", name))
}

func scanKernel(sc scanner) (*model.Kernel, error) {
	var (
		k       model.Kernel
		created string
	)
	if err := sc.Scan(&k.Name, &k.Version, &k.Vmlinux, &k.Initramfs, &k.SHA256, &k.Source, &created); err != nil {
		return nil, err
	}
	var err error
	if k.CreatedAt, err = parseTime(created); err != nil {
		return nil, fmt.Errorf("kernel %q: created_at: %w", k.Name, err)
	}
	return &k, nil
}
