package firecracker

import (
	"context"
	"fmt"

	"banger/internal/engine"
)

var _ engine.Pauser = (*Driver)(nil)

func instanceOf(inst engine.Instance) (*Instance, error) {
	fi, ok := inst.(*Instance)
	if !ok {
		return nil, fmt.Errorf("not a firecracker instance: %T", inst)
	}
	return fi, nil
}

// Pause stops the microVM's vCPUs (PATCH /vm Paused).
func (d *Driver) Pause(ctx context.Context, inst engine.Instance) error {
	fi, err := instanceOf(inst)
	if err != nil {
		return err
	}
	if err := fi.api.PatchVm(ctx, VM{State: VMPaused}); err != nil {
		return fmt.Errorf("pause vm %q: %w", fi.spec.Name, err)
	}
	return nil
}

// Resume continues the microVM's vCPUs (PATCH /vm Resumed).
func (d *Driver) Resume(ctx context.Context, inst engine.Instance) error {
	fi, err := instanceOf(inst)
	if err != nil {
		return err
	}
	if err := fi.api.PatchVm(ctx, VM{State: VMResumed}); err != nil {
		return fmt.Errorf("resume vm %q: %w", fi.spec.Name, err)
	}
	return nil
}

// Paused asks Firecracker for the instance's state (GET /).
func (d *Driver) Paused(ctx context.Context, inst engine.Instance) (bool, error) {
	fi, err := instanceOf(inst)
	if err != nil {
		return false, err
	}
	info, err := fi.api.DescribeInstance(ctx)
	if err != nil {
		return false, fmt.Errorf("describe vm %q: %w", fi.spec.Name, err)
	}
	return info.State == StatePaused, nil
}
