package qemu

import (
	"context"
	"fmt"

	"banger/internal/engine"
)

var _ engine.Pauser = (*Driver)(nil)

// instanceOf is the QEMU instance behind inst; any other engine's instance
// is an error.
func instanceOf(inst engine.Instance) (*Instance, error) {
	qi, ok := inst.(*Instance)
	if !ok {
		return nil, fmt.Errorf("not a qemu instance: %T", inst)
	}
	return qi, nil
}

// Pause stops the guest's vCPUs (QMP "stop"). QEMU accepts a stop of a
// stopped VM.
func (d *Driver) Pause(ctx context.Context, inst engine.Instance) error {
	qi, err := instanceOf(inst)
	if err != nil {
		return err
	}
	if err := qi.qmp.Execute(ctx, "stop", nil, nil); err != nil {
		return fmt.Errorf("pause vm %q: %w", qi.spec.Name, err)
	}
	return nil
}

// Resume continues the guest's vCPUs (QMP "cont"), a no-op on a running VM.
func (d *Driver) Resume(ctx context.Context, inst engine.Instance) error {
	qi, err := instanceOf(inst)
	if err != nil {
		return err
	}
	if err := qi.qmp.Execute(ctx, "cont", nil, nil); err != nil {
		return fmt.Errorf("resume vm %q: %w", qi.spec.Name, err)
	}
	return nil
}

// Paused asks QEMU whether the vCPUs run (QMP "query-status").
func (d *Driver) Paused(ctx context.Context, inst engine.Instance) (bool, error) {
	qi, err := instanceOf(inst)
	if err != nil {
		return false, err
	}
	st, err := qi.status(ctx)
	if err != nil {
		return false, err
	}
	return !st.Running, nil
}

// vmStatus is QMP query-status's answer.
type vmStatus struct {
	Running bool   `json:"running"`
	Status  string `json:"status"`
}

func (i *Instance) status(ctx context.Context) (vmStatus, error) {
	var st vmStatus
	if err := i.qmp.Execute(ctx, "query-status", nil, &st); err != nil {
		return st, fmt.Errorf("query status of vm %q: %w", i.spec.Name, err)
	}
	return st, nil
}
