package banger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"banger/internal/agent"
	"banger/internal/api"
)

// Cmd is a command to run in a guest.
type Cmd struct {
	Argv []string
	// Env adds KEY=VALUE pairs to the guest's default environment.
	Env []string
	// Cwd defaults to /root/repo when the VM has a workspace, else /root.
	Cwd string
	// TTY runs the command on a terminal of Rows x Cols (its output then
	// all comes as Stdout).
	TTY        bool
	Rows, Cols uint16
	Term       string
	// Stdin is sent to the command, then closed; nil means no input.
	Stdin io.Reader
	// Stdout and Stderr receive the command's output; nil discards it.
	Stdout, Stderr io.Writer
}

// ExitStatus is how a command ended: Code is its exit code (128+N when
// killed by signal N, which Signal names); Error is set when it could not
// be started at all (Code 127: not found, 126: otherwise).
type ExitStatus = agent.ExitStatus

// Exec runs cmd in a running VM and returns its exit status. A command
// that ran and failed is not an error: look at the status's Code.
// Cancelling ctx kills the command.
func (c *Client) Exec(ctx context.Context, vm string, cmd Cmd) (*ExitStatus, error) {
	if len(cmd.Argv) == 0 {
		return nil, errors.New("exec: no command given")
	}
	p := api.ExecParams{VM: vm, Argv: cmd.Argv, Env: cmd.Env, Cwd: cmd.Cwd, TTY: cmd.TTY, Rows: cmd.Rows, Cols: cmd.Cols, Term: cmd.Term}
	conn, err := c.upgrade(ctx, vmPath(vm, "/exec"), p)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return c.pump(ctx, conn, cmd, false, nil)
}

// Output is the result of a command whose output was collected.
type Output struct {
	ExitStatus
	Stdout, Stderr []byte
}

// Output runs argv in a running VM and collects what it prints (keep it
// for commands of modest output: it is held in memory).
func (c *Client) Output(ctx context.Context, vm string, argv ...string) (*Output, error) {
	var so, se bytes.Buffer
	st, err := c.Exec(ctx, vm, Cmd{Argv: argv, Stdout: &so, Stderr: &se})
	if err != nil {
		return nil, err
	}
	return &Output{ExitStatus: *st, Stdout: so.Bytes(), Stderr: se.Bytes()}, nil
}

// Run creates a VM, boots it and runs cmd in it, in one call; with
// create.AutoRemove the daemon deletes the VM when the command ends,
// fails or the client goes away (Run returns once it is deleted; a
// failure to delete it is returned with the exit status). It returns the VM's name (known once
// the VM was created, also on most failures) and the exit status.
func (c *Client) Run(ctx context.Context, create CreateParams, cmd Cmd) (string, *ExitStatus, error) {
	if len(cmd.Argv) == 0 {
		return "", nil, errors.New("run: no command given")
	}
	p := api.RunParams{Create: create, Exec: api.ExecParams{Argv: cmd.Argv, Env: cmd.Env, Cwd: cmd.Cwd, TTY: cmd.TTY, Rows: cmd.Rows, Cols: cmd.Cols, Term: cmd.Term}}
	conn, err := c.upgrade(ctx, "/run", p)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close()
	var name string
	st, err := c.pump(ctx, conn, cmd, true, func(pg Progress) {
		if pg.Stage == "vm" {
			name = pg.Detail
		}
	})
	if err != nil {
		return name, st, err
	}
	// With auto_remove the daemon deletes the VM after the exit frame
	// and reports a failure to do so in one more frame before it hangs up.
	for {
		t, p, rerr := agent.ReadFrame(conn)
		if rerr != nil {
			return name, st, nil
		}
		if t == agent.FrameError {
			var ae Error
			if json.Unmarshal(p, &ae) == nil && ae.Code != "" {
				return name, st, &ae
			}
		}
	}
}

// upgrade makes an upgraded call and returns the frame connection; ctx
// ending closes it.
func (c *Client) upgrade(ctx context.Context, path string, in any) (io.ReadWriteCloser, error) {
	body, ct, err := jsonBody(in)
	if err != nil {
		return nil, err
	}
	req, err := c.newRequest(ctx, http.MethodPost, path, nil, body, ct)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", api.Upgrade)
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if resp.StatusCode != http.StatusSwitchingProtocols || !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("%s: daemon answered %s instead of switching to the frame protocol", path, resp.Status)
	}
	stop := context.AfterFunc(ctx, func() { rwc.Close() })
	return &ctxConn{ReadWriteCloser: rwc, stop: stop}, nil
}

type ctxConn struct {
	io.ReadWriteCloser
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.ReadWriteCloser.Close()
}

// stdinChunk is the most stdin one frame carries.
const stdinChunk = 64 << 10

// pump runs the client side of the frame protocol: stdin frames out
// (from the start, or after the "exec" progress frame of a run), output
// frames to cmd's writers, until the exit frame. It returns the exit
// status, or the daemon's error frame as an *Error.
func (c *Client) pump(ctx context.Context, conn io.ReadWriteCloser, cmd Cmd, waitExec bool, onProgress func(Progress)) (*ExitStatus, error) {
	fw := agent.NewFrameWriter(conn)
	started := false
	startStdin := func() {
		if started {
			return
		}
		started = true
		go func() {
			if cmd.Stdin != nil {
				buf := make([]byte, stdinChunk)
				for {
					n, err := cmd.Stdin.Read(buf)
					if n > 0 {
						if fw.Write(agent.FrameStdin, buf[:n]) != nil {
							return
						}
					}
					if err != nil {
						break
					}
				}
			}
			fw.Write(agent.FrameStdin, nil)
		}()
	}
	if !waitExec {
		startStdin()
	}
	stdout, stderr := cmd.Stdout, cmd.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	for {
		t, p, err := agent.ReadFrame(conn)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("connection to the daemon ended before the command finished: %w", err)
		}
		switch t {
		case agent.FrameStdout:
			stdout.Write(p)
		case agent.FrameStderr:
			stderr.Write(p)
		case agent.FrameExit:
			var es ExitStatus
			if err := json.Unmarshal(p, &es); err != nil {
				return nil, fmt.Errorf("bad exit frame: %w", err)
			}
			return &es, nil
		case agent.FrameProgress:
			var pg Progress
			if json.Unmarshal(p, &pg) != nil {
				continue
			}
			if onProgress != nil {
				onProgress(pg)
			}
			if c.progress != nil {
				c.progress(pg)
			}
			if pg.Stage == "exec" {
				startStdin()
			}
		case agent.FrameError:
			var ae Error
			if err := json.Unmarshal(p, &ae); err != nil || ae.Code == "" {
				return nil, fmt.Errorf("bad error frame from daemon: %q", p)
			}
			return nil, &ae
		}
	}
}
