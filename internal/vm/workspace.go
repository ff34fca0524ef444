package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/workspace"
)

// OpenUntar starts an extraction of a tar stream into dir in a running VM
// and returns the agent stream (stdin frames in, one exit frame out).
func (m *Manager) OpenUntar(ctx context.Context, ref, dir string, clean bool) (net.Conn, error) {
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
	return c.Open(ctx, agent.Request{Op: agent.OpUntar, Untar: &agent.UntarRequest{Dir: dir, Clean: clean}})
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

// Capture runs a command in a running VM and collects its output.
func (m *Manager) Capture(ctx context.Context, ref string, argv []string) (stdout, stderr []byte, code int, err error) {
	return m.CaptureFunc(ctx, ref, argv, nil)
}

// CaptureFunc is Capture that also hands each piece of output to out (when
// not nil) as it arrives.
func (m *Manager) CaptureFunc(ctx context.Context, ref string, argv []string, out func(p []byte)) (stdout, stderr []byte, code int, err error) {
	st, err := m.OpenExec(ctx, ref, api.ExecParams{Argv: argv, Cwd: "/"})
	if err != nil {
		return nil, nil, 0, err
	}
	defer st.Close()
	agent.NewFrameWriter(st).Write(agent.FrameStdin, nil)
	var so, se bytes.Buffer
	for {
		t, p, err := agent.ReadFrame(st)
		if err != nil {
			return so.Bytes(), se.Bytes(), 0, fmt.Errorf("exec stream: %w", err)
		}
		switch t {
		case agent.FrameStdout:
			so.Write(p)
			if out != nil {
				out(p)
			}
		case agent.FrameStderr:
			se.Write(p)
			if out != nil {
				out(p)
			}
		case agent.FrameExit:
			var es agent.ExitStatus
			json.Unmarshal(p, &es)
			if es.Error != "" {
				return so.Bytes(), se.Bytes(), es.Code, fmt.Errorf("%s", es.Error)
			}
			return so.Bytes(), se.Bytes(), es.Code, nil
		}
	}
}

// Export returns the guest's changes to its workspace as a patch against
// base (default: the guest's HEAD). It never changes the guest's index or
// work tree.
func (m *Manager) Export(ctx context.Context, ref, base string) ([]byte, error) {
	vm, err := m.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	if _, err := m.requireRunning(vm); err != nil {
		return nil, err
	}
	argv := []string{"sh", "-c", workspace.ExportScript, "banger-export"}
	if base != "" {
		argv = append(argv, base)
	}
	out, errOut, code, err := m.Capture(ctx, vm.ID, argv)
	if err != nil {
		return nil, fmt.Errorf("export from vm %q: %w", vm.Name, err)
	}
	switch code {
	case 0:
		return out, nil
	case 3:
		return nil, api.Errorf(api.CodeBadRequest, "export from vm %q: %s", vm.Name, bytes.TrimSpace(errOut))
	case 127:
		return nil, api.Errorf(api.CodeOperationFailed, "export from vm %q: git is not installed in the guest", vm.Name)
	}
	return nil, fmt.Errorf("export from vm %q: exit %d: %s", vm.Name, code, bytes.TrimSpace(errOut))
}
