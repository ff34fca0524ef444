package banger

import (
	"context"
	"net/http"

	"banger/internal/api"
	"banger/internal/model"
)

// VM is a VM as the daemon describes it.
type VM = model.VM

// CreateParams says how to create a VM; the zero value takes the
// daemon's defaults (a generated name, the default image, booted, ready
// when its agent answers).
type CreateParams = api.VMCreateParams

// Progress reports one stage of a long call.
type Progress = api.Progress

// Readiness levels for CreateParams.Wait and Wait.
const (
	WaitAgent  = api.WaitAgent
	WaitSSH    = api.WaitSSH
	WaitSystem = api.WaitSystem
)

// Create creates a VM and, unless p.NoStart, boots it; it returns once
// the VM is ready (p.Wait).
func (c *Client) Create(ctx context.Context, p CreateParams) (*VM, error) {
	var v VM
	if err := c.stream(ctx, http.MethodPost, "/vms", p, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Get returns one VM by name or id.
func (c *Client) Get(ctx context.Context, name string) (*VM, error) {
	var v VM
	if err := c.call(ctx, http.MethodGet, vmPath(name, ""), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// List returns every VM.
func (c *Client) List(ctx context.Context) ([]VM, error) {
	var vms []VM
	if err := c.call(ctx, http.MethodGet, "/vms", nil, &vms); err != nil {
		return nil, err
	}
	return vms, nil
}

// Start boots a stopped VM.
func (c *Client) Start(ctx context.Context, name string) (*VM, error) {
	var v VM
	if err := c.stream(ctx, http.MethodPost, vmPath(name, "/start"), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Stop syncs the guest's disks and powers the VM off.
func (c *Client) Stop(ctx context.Context, name string) (*VM, error) {
	var v VM
	if err := c.call(ctx, http.MethodPost, vmPath(name, "/stop"), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Pause stops a VM's vCPUs; its memory and VMM stay.
func (c *Client) Pause(ctx context.Context, name string) (*VM, error) {
	var v VM
	if err := c.call(ctx, http.MethodPost, vmPath(name, "/pause"), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Resume continues a paused VM and sets its clock from the host's.
func (c *Client) Resume(ctx context.Context, name string) (*VM, error) {
	var v VM
	if err := c.call(ctx, http.MethodPost, vmPath(name, "/resume"), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Delete stops (if need be) and deletes a VM and its disks.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, vmPath(name, ""), nil, nil)
}

// Readiness says how far a VM's guest has booted.
type Readiness = api.Readiness

// Wait blocks until a running VM's guest reaches level (WaitAgent,
// WaitSSH or WaitSystem); timeout 0 means the daemon's boot_timeout.
func (c *Client) Wait(ctx context.Context, name, level string, timeoutMS int64) (*Readiness, error) {
	var r Readiness
	if err := c.call(ctx, http.MethodPost, vmPath(name, "/wait"), api.VMWaitParams{For: level, TimeoutMS: timeoutMS}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
