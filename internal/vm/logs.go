package vm

// The guest serial console log.

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/model"
	"banger/internal/seriallog"
)

// Logs returns the VM's serial console output (at most serial_log_max_mib,
// oldest first) as a stream the caller closes.
func (m *Manager) Logs(ctx context.Context, ref string) (io.ReadCloser, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	return seriallog.Open(filepath.Join(m.layout.VMDir(vm.ID), "serial.log"))
}

// followSerial keeps the VM's serial console, served by the VMM on
// rt.spec.SerialSocket, in its size-capped log until the VM exits or the
// daemon lets go of it (a restarted daemon reconnects in Recover).
func (m *Manager) followSerial(vm *model.VM, rt *runtime) {
	if rt.spec.SerialSocket == "" || rt.spec.SerialLog == "" {
		return
	}
	max := int64(defaultSerialMax)
	if m.cfg.SerialLogMaxMiB > 0 {
		max = int64(m.cfg.SerialLogMaxMiB) << 20
	}
	w, err := seriallog.OpenWriter(rt.spec.SerialLog, max)
	if err != nil {
		m.log.Warn("serial log", "vm", vm.Name, "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-rt.closed:
		case <-rt.inst.Done():
			// The console's last bytes (a panic) are still in flight.
			time.Sleep(time.Second)
		}
		cancel()
	}()
	go func() {
		seriallog.Follow(ctx, rt.spec.SerialSocket, w, time.Second)
		w.Close()
	}()
}

// consoleTailBytes bounds how much of a serial log consoleTail reads.
const consoleTailBytes = 16 << 10

// consoleTail returns the last n lines of the serial log at path, at most
// consoleTailBytes of it, with the guest's control bytes escaped ("" when
// there is no log). The guest wrote it: it is shown, never interpreted.
func consoleTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > consoleTailBytes {
		if _, err := f.Seek(fi.Size()-consoleTailBytes, io.SeekStart); err != nil {
			return ""
		}
	}
	b, _ := io.ReadAll(io.LimitReader(f, consoleTailBytes))
	lines := strings.Split(strings.TrimRight(string(b), "\r\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = printable([]byte(strings.TrimRight(l, "\r")))
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}
