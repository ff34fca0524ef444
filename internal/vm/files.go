package vm

// Files in a running VM: the agent connection the files API uses.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
)

// defaultFileMax applies when the config sets no file_max_mib.
const defaultFileMax = 4096 << 20

// FileMax is the largest file or archive the files API moves in either
// direction (file_max_mib).
func (m *Manager) FileMax() int64 {
	if m.cfg.FileMaxMiB > 0 {
		return int64(m.cfg.FileMaxMiB) << 20
	}
	return defaultFileMax
}

// FileAgent returns the agent connection of the running VM ref for file
// operations; a VM that is not running is refused with a hint.
func (m *Manager) FileAgent(ctx context.Context, ref string) (*agent.Client, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	rt, err := m.requireRunning(vm)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == api.CodeNotRunning {
			return nil, api.Errorf(api.CodeNotRunning, "%s: start it with `banger vm start %s`", ae.Message, vm.Name)
		}
		return nil, err
	}
	c, err := m.agentClient(ctx, rt, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("vm %q: guest agent unreachable: %w", vm.Name, err)
	}
	return c, nil
}
