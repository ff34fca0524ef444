package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"banger/internal/model"
)

const imageColumns = `name, rootfs, kernel, size_bytes, source, created_at`

// CreateImage inserts img. A zero CreatedAt is set to the current time (and
// written back to img). It returns an error wrapping ErrExists if an image
// with the same name exists.
func (s *Store) CreateImage(ctx context.Context, img *model.Image) error {
	if img == nil {
		return errors.New("create image: nil image")
	}
	if img.Name == "" {
		return errors.New("create image: name is required")
	}
	createdAt := img.CreatedAt
	if createdAt.IsZero() {
		createdAt = s.stamp()
	}
	created, err := formatTime(createdAt)
	if err != nil {
		return fmt.Errorf("create image %q: created_at: %w", img.Name, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO images (`+imageColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
		img.Name, img.Rootfs, img.Kernel, img.SizeBytes, img.Source, created)
	if err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("image %q: %w", img.Name, ErrExists)
		}
		return fmt.Errorf("create image %q: %w", img.Name, err)
	}
	img.CreatedAt = createdAt.UTC()
	return nil
}

// GetImage returns the named image.
func (s *Store) GetImage(ctx context.Context, name string) (*model.Image, error) {
	img, err := scanImage(s.db.QueryRowContext(ctx, `SELECT `+imageColumns+` FROM images WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("image %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get image %q: %w", name, err)
	}
	return img, nil
}

// ListImages returns all images ordered by name. It returns an empty,
// non-nil slice if there are none.
func (s *Store) ListImages(ctx context.Context) ([]*model.Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+imageColumns+` FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	defer rows.Close()
	images := []*model.Image{}
	for rows.Next() {
		img, err := scanImage(rows)
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		images = append(images, img)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return images, nil
}

// DeleteImage deletes the named image. It returns an error wrapping
// ErrNotFound if there is no such image. It does not check whether VMs
// still use it; see CountVMsUsingImage.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete image %q: %w", name, err)
	}
	return checkAffected(res, fmt.Sprintf("image %q", name))
}

func scanImage(sc scanner) (*model.Image, error) {
	var (
		img     model.Image
		created string
	)
	if err := sc.Scan(&img.Name, &img.Rootfs, &img.Kernel, &img.SizeBytes, &img.Source, &created); err != nil {
		return nil, err
	}
	var err error
	if img.CreatedAt, err = parseTime(created); err != nil {
		return nil, fmt.Errorf("image %q: created_at: %w", img.Name, err)
	}
	return &img, nil
}
