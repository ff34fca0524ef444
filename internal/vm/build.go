package vm

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/engine"
	"banger/internal/model"
)

// BuildImage boots a throwaway VM from base, copies p.Copy into it, runs
// p.Run in order through the agent, powers it off cleanly and hands its
// root disk (a qcow2 overlay over base, the VM powered off) to save,
// which turns it into the new image. The image service calls it (it is
// the service's BuildRunner) with p already checked and base resolved.
// The VM has no work disk, so /root is part of the result. Whatever
// happens, the VM is deleted before returning; a failing step fails the
// build and save is never called.
func (m *Manager) BuildImage(ctx context.Context, base *model.Image, p api.ImageBuildParams, save func(ctx context.Context, rootDisk string) error, report func(api.Progress)) (err error) {
	progress := Progress(report)
	var suffix [3]byte
	rand.Read(suffix[:])
	create := api.VMCreateParams{
		Name:       fmt.Sprintf("build-%x", suffix),
		Image:      base.Name,
		Engine:     engine.QEMU, // the root disk is saved from its qcow2 overlay
		Network:    NetNone,
		AutoRemove: true, // a daemon restart mid-build removes it
		NoWorkDisk: true,
	}
	if p.NAT {
		// User-mode networking reaches out without touching the host's
		// network configuration.
		create.Network, create.NAT = NetUser, true
	}
	vm, err := m.Create(ctx, create, base, progress)
	if vm != nil {
		defer func() {
			if derr := m.Delete(context.WithoutCancel(ctx), vm.ID); derr != nil && err == nil {
				err = fmt.Errorf("remove build vm: %w", derr)
			}
		}()
	}
	if err != nil {
		return fmt.Errorf("boot %q: %w", base.Name, err)
	}
	for _, c := range p.Copy {
		if err := step(progress, "copy", func() error { return m.copyIn(ctx, vm, c) }); err != nil {
			return fmt.Errorf("--copy %s:%s: %w", c.Src, c.Dst, err)
		}
	}
	for _, cmd := range p.Run {
		if progress != nil {
			progress(api.Progress{Stage: api.StageOutput, Detail: "+ " + cmd + "\n"})
		}
		// The command's output reaches the user as it comes; only its
		// tail is kept, for the error of a failing command.
		so := &tailBuffer{max: stderrKeep}
		se := &tailBuffer{max: stderrKeep}
		var stdout, stderr io.Writer = so, se
		if progress != nil {
			out := progressWriter(progress)
			stdout, stderr = io.MultiWriter(so, out), io.MultiWriter(se, out)
		}
		var code int
		err := step(progress, "run", func() error {
			var err error
			code, err = m.captureTo(ctx, vm.ID, []string{"/bin/sh", "-c", cmd}, stdout, stderr, buildRunIdle)
			return err
		})
		if err != nil {
			return fmt.Errorf("--run %q: %w", cmd, err)
		}
		if code != 0 {
			return api.Errorf(api.CodeOperationFailed, "--run %q exited with status %d%s", cmd, code, outputTail(so.Bytes(), se.Bytes()))
		}
	}
	if err := step(progress, "poweroff", func() error {
		_, err := m.Stop(ctx, vm.ID)
		return err
	}); err != nil {
		return fmt.Errorf("power off build vm: %w", err)
	}
	return step(progress, "save_image", func() error { return save(ctx, m.rootDisk(vm)) })
}

// buildRunIdle ends a --run command that prints nothing for this long
// (a package download that stalled, a guest that hangs).
const buildRunIdle = 30 * time.Minute

// progressWriter turns output into progress events.
type progressWriter Progress

func (f progressWriter) Write(p []byte) (int, error) {
	f(api.Progress{Stage: api.StageOutput, Detail: string(p)})
	return len(p), nil
}

// outputTail formats the end of a failed command's output for an error.
func outputTail(stdout, stderr []byte) string {
	out := strings.TrimSpace(printable(stderr))
	if out == "" {
		out = strings.TrimSpace(printable(stdout))
	}
	if out == "" {
		return ""
	}
	if lines := strings.Split(out, "\n"); len(lines) > 10 {
		out = strings.Join(lines[len(lines)-10:], "\n")
	}
	return ":\n" + out
}

// copyIn sends a host file or directory into the guest: a directory's
// contents go into Dst; a file becomes Dst, or Dst/NAME when Dst ends in
// a slash. A guest that stops reading or never answers fails it after
// the upload idle time (agent.UploadIdle).
func (m *Manager) copyIn(ctx context.Context, vm *model.VM, c api.ImageCopy) error {
	fi, err := os.Lstat(c.Src)
	if err != nil {
		return err
	}
	dir, name := c.Dst, ""
	if !fi.IsDir() {
		if strings.HasSuffix(c.Dst, "/") {
			name = filepath.Base(c.Src)
		} else {
			dir, name = path.Dir(c.Dst), path.Base(c.Dst)
		}
	}
	st, err := m.OpenUntar(ctx, vm.ID, dir, false)
	if err != nil {
		return err
	}
	err = uploadTar(ctx, st, m.uploadIdleTime(), func(w io.Writer) error { return tarPath(w, c.Src, name) })
	if err != nil {
		return fmt.Errorf("send %s to %s in vm %q: %w", c.Src, dir, vm.Name, err)
	}
	return nil
}

// uploadIdleTime is how long an upload may go without progress.
func (m *Manager) uploadIdleTime() time.Duration {
	if m.uploadIdle > 0 {
		return m.uploadIdle
	}
	return agent.UploadIdle
}

// uploadTar sends the tar stream that write produces on an agent untar
// stream, which it closes, and waits for the guest's verdict. Nothing
// moving in either direction for idle ends it with agent.ErrIdle, as
// does ctx.
func uploadTar(ctx context.Context, raw net.Conn, idle time.Duration, write func(io.Writer) error) error {
	st := agent.IdleConn(raw, idle)
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	ctxErr := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	fw := agent.NewFrameWriter(st)
	// Buffered so that tar's small header writes do not each become a frame.
	bw := bufio.NewWriterSize(fw.StreamWriter(agent.FrameStdin), 256<<10)
	if err := write(bw); err != nil {
		return ctxErr(err)
	}
	if err := bw.Flush(); err != nil {
		return ctxErr(fmt.Errorf("guest stream: %w", err))
	}
	if err := fw.Write(agent.FrameStdin, nil); err != nil {
		return ctxErr(fmt.Errorf("guest stream: %w", err))
	}
	for {
		t, p, err := agent.ReadFrame(st)
		if err != nil {
			return ctxErr(fmt.Errorf("guest stream: %w", err))
		}
		if t == agent.FrameExit {
			var es agent.ExitStatus
			if err := json.Unmarshal(p, &es); err != nil {
				return fmt.Errorf("guest exit status: %w", err)
			}
			if es.Code != 0 {
				return fmt.Errorf("extract in the guest: %s", es.Error)
			}
			return nil
		}
	}
}

// tarPath writes src as a tar stream: a directory's contents with names
// relative to it, or one file named name. Owners are not kept (the guest
// agent writes as root).
func tarPath(w io.Writer, src, name string) error {
	tw := tar.NewWriter(w)
	add := func(p, rel string, fi fs.FileInfo) error {
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			var err error
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !fi.Mode().IsRegular() && !fi.IsDir() {
			return fmt.Errorf("%s: only files, directories and symlinks can be copied", p)
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name, h.Uid, h.Gid, h.Uname, h.Gname = rel, 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	}
	if name != "" {
		fi, err := os.Lstat(src)
		if err != nil {
			return err
		}
		if err := add(src, name, fi); err != nil {
			return err
		}
		return tw.Close()
	}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == src {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			rel += "/"
		}
		return add(p, rel, fi)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
