package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/patchcheck"
	"banger/internal/workspace"
)

// OpenUntar starts an extraction of a tar stream into dir in a running VM
// and returns the agent stream (stdin frames in, one exit frame out).
func (m *Manager) OpenUntar(ctx context.Context, ref, dir string, clean bool) (net.Conn, error) {
	return m.openUntar(ctx, ref, agent.UntarRequest{Dir: dir, Clean: clean})
}

// OpenWorkspaceUntar starts the extraction of a workspace stream
// (workspace.WriteTar) at workspace.GuestDir, emptied first, in a running
// VM; the agent lays out HEAD's blobs from the work tree's files.
func (m *Manager) OpenWorkspaceUntar(ctx context.Context, ref string) (net.Conn, error) {
	return m.openUntar(ctx, ref, agent.UntarRequest{Dir: workspace.GuestDir, Clean: true, Workspace: true})
}

func (m *Manager) openUntar(ctx context.Context, ref string, req agent.UntarRequest) (net.Conn, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	rt, err := m.requireRunning(vm)
	if err != nil {
		return nil, err
	}
	c, err := m.agentClient(ctx, rt, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("vm %q: guest agent unreachable: %w", vm.Name, err)
	}
	return c.Open(ctx, agent.Request{Op: agent.OpUntar, Untar: &req})
}

// RecordWorkspace remembers the workspace prepared in a VM, with the
// options it was prepared with.
func (m *Manager) RecordWorkspace(ctx context.Context, ref string, p api.WorkspaceParams) error {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return err
	}
	defer m.lock(vm.ID)()
	if vm, err = m.Get(ctx, vm.ID); err != nil {
		return err
	}
	vm.WorkspacePath, vm.WorkspaceMode, vm.WorkspaceHead = p.Path, p.Mode, p.Head
	vm.WorkspaceIncludeUntracked = p.IncludeUntracked
	return m.store.UpdateVM(context.WithoutCancel(ctx), vm)
}

// Export output limits and deadlines.
const (
	// defaultExportMax applies when the config sets no export_max_mib.
	defaultExportMax = 256 << 20
	// exportIdle ends an export whose guest sends nothing for this long.
	exportIdle = 5 * time.Minute
	// stderrKeep is how much of a command's stderr is kept for errors.
	stderrKeep = 64 << 10
)

// errTooLarge is returned by a capWriter once its cap is reached.
var errTooLarge = errors.New("output over its size limit")

// capWriter passes at most max bytes to w, then fails.
type capWriter struct {
	w   io.Writer
	max int64
	n   int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if c.n+int64(len(p)) > c.max {
		return 0, errTooLarge
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.b = append(t.b[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.b) + len(p) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

func (t *tailBuffer) Bytes() []byte { return t.b }

// captureTo runs a command in a running VM and writes its output to
// stdout and stderr as it arrives; it ends with an error when the guest
// stays silent for idle. Every byte goes through the writers, so the
// caller decides what is kept (a capped spool file, a bounded tail).
func (m *Manager) captureTo(ctx context.Context, ref string, argv []string, stdout, stderr io.Writer, idle time.Duration) (code int, err error) {
	st, err := m.OpenExec(ctx, ref, api.ExecParams{Argv: argv, Cwd: "/"})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	agent.NewFrameWriter(st).Write(agent.FrameStdin, nil)
	r := agent.IdleReader(st, idle)
	for {
		t, p, err := agent.ReadFrame(r)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return 0, fmt.Errorf("exec stream: %w", err)
		}
		var w io.Writer
		switch t {
		case agent.FrameStdout:
			w = stdout
		case agent.FrameStderr:
			w = stderr
		case agent.FrameExit:
			var es agent.ExitStatus
			if err := json.Unmarshal(p, &es); err != nil {
				return 0, fmt.Errorf("exec stream: bad exit status: %w", err)
			}
			if es.Error != "" {
				return es.Code, fmt.Errorf("%s", es.Error)
			}
			return es.Code, nil
		}
		if w != nil {
			if _, err := w.Write(p); err != nil {
				return 0, err
			}
		}
	}
}

// exportArgv is the guest command that writes the patch (replaced by
// tests, whose fake guest is the test host).
func (m *Manager) exportArgv(base string) []string {
	if m.exportCmd != nil {
		return m.exportCmd(base)
	}
	argv := []string{"sh", "-c", workspace.ExportScript, "banger-export"}
	if base != "" {
		argv = append(argv, base)
	}
	return argv
}

// exportMax is the configured export cap in bytes.
func (m *Manager) exportMax() int64 {
	if m.cfg.ExportMaxMiB > 0 {
		return int64(m.cfg.ExportMaxMiB) << 20
	}
	return defaultExportMax
}

// Export returns the guest's changes to its workspace as a patch against
// base (default: the guest's HEAD), as an open file positioned at its
// start that the caller closes. It never changes the guest's index or
// work tree. The patch is written by the guest, so it is treated as
// hostile: spooled to an unlinked file in the VM's directory (never held
// in memory), refused beyond the export cap, and checked with patchcheck
// (paths inside the repository, nothing under .git, no symlink leading
// out) before anyone sees it.
func (m *Manager) Export(ctx context.Context, ref, base string) (io.ReadCloser, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if _, err := m.requireRunning(vm); err != nil {
		return nil, err
	}
	argv := m.exportArgv(base)
	spool, err := os.CreateTemp(m.layout.VMDir(vm.ID), ".export-*")
	if err != nil {
		return nil, fmt.Errorf("export from vm %q: spool file: %w", vm.Name, err)
	}
	os.Remove(spool.Name()) // nothing is left behind, whatever happens
	ok := false
	defer func() {
		if !ok {
			spool.Close()
		}
	}()
	max := m.exportMax()
	var errOut tailBuffer
	errOut.max = stderrKeep
	code, err := m.captureTo(ctx, vm.ID, argv, &capWriter{w: spool, max: max}, &errOut, exportIdle)
	if errors.Is(err, errTooLarge) {
		return nil, api.Errorf(api.CodeOperationFailed, "export from vm %q: patch larger than %d MiB (export_max_mib in the config)", vm.Name, max>>20)
	}
	if err != nil {
		return nil, fmt.Errorf("export from vm %q: %w", vm.Name, err)
	}
	switch code {
	case 0:
	case 3:
		return nil, api.Errorf(api.CodeBadRequest, "export from vm %q: %s", vm.Name, printable(bytes.TrimSpace(errOut.Bytes())))
	case 127:
		return nil, api.Errorf(api.CodeOperationFailed, "export from vm %q: git is not installed in the guest", vm.Name)
	default:
		return nil, fmt.Errorf("export from vm %q: exit %d: %s", vm.Name, code, printable(bytes.TrimSpace(errOut.Bytes())))
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("export from vm %q: %w", vm.Name, err)
	}
	if _, err := patchcheck.Check(spool); err != nil {
		m.log.Warn("refused a guest patch", "vm", vm.Name, "err", err)
		return nil, api.Errorf(api.CodeOperationFailed, "export from vm %q: refused the guest's patch: %v", vm.Name, err)
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("export from vm %q: %w", vm.Name, err)
	}
	ok = true
	return spool, nil
}
