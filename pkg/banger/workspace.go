package banger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/workspace"
)

// WorkspaceOptions says what a workspace ships.
type WorkspaceOptions struct {
	// IncludeUntracked also ships untracked (never ignored) files.
	IncludeUntracked bool
	// FullCopy includes submodules.
	FullCopy bool
}

// Workspace describes a shipped workspace.
type Workspace = api.WorkspaceParams

// GuestRepoDir is where a workspace lands in the guest (and where
// commands start once a VM has one).
const GuestRepoDir = workspace.GuestDir

// PrepareWorkspace ships the git repository containing hostPath (its
// tracked files, plus a minimal .git at the same HEAD) to /root/repo in a
// running VM, replacing what was there.
func (c *Client) PrepareWorkspace(ctx context.Context, vm, hostPath string, o WorkspaceOptions) (*Workspace, error) {
	mode := workspace.ModeCopy
	if o.FullCopy {
		mode = workspace.ModeFullCopy
	}
	plan, err := workspace.Inspect(ctx, hostPath, workspace.Options{IncludeUntracked: o.IncludeUntracked, Mode: mode})
	if err != nil {
		if errors.Is(err, workspace.ErrNotRepo) {
			return nil, fmt.Errorf("%s is not inside a git repository: %w", hostPath, err)
		}
		return nil, err
	}
	params := plan.Params()
	conn, err := c.upgrade(ctx, vmPath(vm, "/workspace"), params)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	fw := agent.NewFrameWriter(conn)
	sendErr := make(chan error, 1)
	go func() {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(workspace.WriteTar(ctx, plan, pw)) }()
		_, err := io.Copy(fw.StreamWriter(agent.FrameStdin), pr)
		if err == nil {
			err = fw.Write(agent.FrameStdin, nil)
		}
		if err != nil {
			pr.CloseWithError(err)
			conn.Close()
		}
		sendErr <- err
	}()
	for {
		t, p, err := agent.ReadFrame(conn)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			select {
			case serr := <-sendErr:
				if serr != nil {
					return nil, fmt.Errorf("send workspace: %w", serr)
				}
			default:
			}
			return nil, fmt.Errorf("workspace upload ended early: %w", err)
		}
		switch t {
		case agent.FrameError:
			var ae Error
			if err := json.Unmarshal(p, &ae); err != nil || ae.Code == "" {
				return nil, fmt.Errorf("bad error frame from daemon: %q", p)
			}
			return nil, &ae
		case agent.FrameExit:
			var es ExitStatus
			json.Unmarshal(p, &es)
			if es.Code != 0 {
				return nil, fmt.Errorf("extract workspace in the guest: %s", es.Error)
			}
			return params, nil
		}
	}
}

// ExportWorkspace writes the guest's changes to /root/repo (since the
// prepared HEAD, or since baseCommit with the guest's commits) to w as a
// binary git patch for `git apply`. The patch is written by the guest:
// treat it as untrusted input.
func (c *Client) ExportWorkspace(ctx context.Context, vm string, w io.Writer, baseCommit string) error {
	body, ct, err := jsonBody(api.ExportParams{BaseCommit: baseCommit})
	if err != nil {
		return err
	}
	req, err := c.newRequest(ctx, http.MethodPost, vmPath(vm, "/workspace/export"), nil, body, ct)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("export workspace: %w", err)
	}
	return nil
}
