package qemu

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"banger/internal/engine"
	"banger/internal/engine/vmmproc"
)

var _ engine.Snapshotter = (*Driver)(nil)

const (
	// snapshotFD is the name the state file's descriptor gets in QEMU.
	snapshotFD = "banger-snapshot"
	// saveTimeout bounds a state save on top of the caller's context.
	saveTimeout = 5 * time.Minute
	// migratePoll is how often query-migrate is asked.
	migratePoll = 20 * time.Millisecond
	// maxBandwidth lifts QEMU's default migration rate cap (128 MiB/s),
	// which is meant for a live migration over a network, not a file.
	maxBandwidth = int64(1) << 40
)

// migrateStatus is the part of QMP query-migrate's answer used here.
type migrateStatus struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
	RAM       *struct {
		Transferred int64 `json:"transferred"`
	} `json:"ram"`
}

// SaveState migrates a paused QEMU's state into f: the file's descriptor
// goes to QEMU over the QMP socket (getfd), then "migrate" to "fd:NAME",
// then query-migrate is polled until the migration completes or fails
// (its error-desc, and the end of the VMM log, say why). Nothing is run
// by QEMU (its sandbox forbids it) and it needs no rights on f's path.
//
// After SaveState QEMU is in "postmigrate": paused, its disks flushed and
// inactive until "cont" (Resume) reactivates them.
func (d *Driver) SaveState(ctx context.Context, inst engine.Instance, f *os.File) error {
	qi, err := instanceOf(inst)
	if err != nil {
		return err
	}
	if err := qi.saveState(ctx, f); err != nil {
		return fmt.Errorf("save state of vm %q: %w", qi.spec.Name, err)
	}
	return nil
}

func (i *Instance) saveState(ctx context.Context, f *os.File) error {
	ctx, cancel := context.WithTimeout(ctx, saveTimeout)
	defer cancel()
	st, err := i.status(ctx)
	if err != nil {
		return err
	}
	if st.Running {
		return fmt.Errorf("the vm must be paused (it is %s)", st.Status)
	}
	if err := i.qmp.ExecuteWithFile(ctx, "getfd", map[string]string{"fdname": snapshotFD}, nil, f); err != nil {
		return err
	}
	used := false
	defer func() {
		if !used {
			i.qmp.Execute(context.WithoutCancel(ctx), "closefd", map[string]string{"fdname": snapshotFD}, nil)
		}
	}()
	if err := i.qmp.Execute(ctx, "migrate-set-parameters", map[string]int64{"max-bandwidth": maxBandwidth}, nil); err != nil {
		return err
	}
	if err := i.qmp.Execute(ctx, "migrate", map[string]string{"uri": "fd:" + snapshotFD}, nil); err != nil {
		return err
	}
	used = true // QEMU owns (and closes) the descriptor once migrate started
	tick := time.NewTicker(migratePoll)
	defer tick.Stop()
	for {
		var ms migrateStatus
		if err := i.qmp.Execute(ctx, "query-migrate", nil, &ms); err != nil {
			i.cancelMigration()
			return err
		}
		switch ms.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			why := ms.ErrorDesc
			if why == "" {
				why = "no error description"
			}
			if log := strings.TrimSpace(vmmproc.ReadBounded(i.spec.VMMLog, 64<<10)); log != "" {
				why += "; vmm log: " + vmmproc.LastLines(log, 3)
			}
			return fmt.Errorf("migration %s: %s", ms.Status, why)
		}
		select {
		case <-ctx.Done():
			i.cancelMigration()
			return fmt.Errorf("migration did not complete: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// cancelMigration stops a migration still under way, best effort.
func (i *Instance) cancelMigration() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	i.qmp.Execute(ctx, "migrate_cancel", nil, nil)
}

// VMMVersion is the QEMU version inst runs, from its QMP greeting.
func (d *Driver) VMMVersion(_ context.Context, inst engine.Instance) (string, error) {
	qi, err := instanceOf(inst)
	if err != nil {
		return "", err
	}
	return qi.qmp.Greeting().Version(), nil
}
