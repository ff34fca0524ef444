package banger

import (
	"context"
	"net/http"
	"net/url"

	"banger/internal/api"
	"banger/internal/model"
)

// Snapshot is a saved VM (memory, device state and disks).
type Snapshot = model.Snapshot

// SnapshotParams says what to snapshot: the VM, an optional name and
// whether the VM stays paused afterwards.
type SnapshotParams = api.SnapshotCreateParams

// CreateSnapshot snapshots a running or paused VM.
func (c *Client) CreateSnapshot(ctx context.Context, p SnapshotParams) (*Snapshot, error) {
	var s Snapshot
	if err := c.call(ctx, http.MethodPost, "/snapshots", p, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Snapshots lists every snapshot.
func (c *Client) Snapshots(ctx context.Context) ([]Snapshot, error) {
	var list []Snapshot
	if err := c.call(ctx, http.MethodGet, "/snapshots", nil, &list); err != nil {
		return nil, err
	}
	return list, nil
}

// GetSnapshot returns a snapshot by name or id.
func (c *Client) GetSnapshot(ctx context.Context, name string) (*Snapshot, error) {
	var s Snapshot
	if err := c.call(ctx, http.MethodGet, "/snapshots/"+url.PathEscape(name), nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// DeleteSnapshot removes a snapshot and its files.
func (c *Client) DeleteSnapshot(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/snapshots/"+url.PathEscape(name), nil, nil)
}
