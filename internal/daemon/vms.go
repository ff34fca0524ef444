package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/model"
	"banger/internal/vm"
)

func (s *Server) vmList(w http.ResponseWriter, r *http.Request) error {
	vms, err := s.VMs.ListWithMemory(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, vms)
	return nil
}

func (s *Server) vmShow(w http.ResponseWriter, r *http.Request) error {
	v, err := s.VMs.Show(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) vmCreate(w http.ResponseWriter, r *http.Request) error {
	var p api.VMCreateParams
	if err := decode(r, &p); err != nil {
		return err
	}
	return s.stream(w, r, func(progress vm.Progress) (any, error) {
		v, err := s.createVM(r.Context(), p, progress)
		return v, err
	})
}

// createVM makes a VM: its parameters are checked first, then its image
// is resolved (and pulled when missing), then the VM manager creates the
// VM from it. The image service and the VM manager never call each
// other for this.
func (s *Server) createVM(ctx context.Context, p api.VMCreateParams, progress vm.Progress) (*model.VM, error) {
	if err := s.VMs.CheckCreate(p); err != nil {
		return nil, err
	}
	img, err := s.Images.ResolveImage(ctx, p.Image, image.Progress(progress))
	if err != nil {
		return nil, err
	}
	return s.VMs.Create(ctx, p, img, progress)
}

func (s *Server) vmStart(w http.ResponseWriter, r *http.Request) error {
	return s.stream(w, r, func(progress vm.Progress) (any, error) {
		return s.VMs.Start(r.Context(), r.PathValue("name"), progress)
	})
}

func (s *Server) vmRestart(w http.ResponseWriter, r *http.Request) error {
	return s.stream(w, r, func(progress vm.Progress) (any, error) {
		return s.VMs.Restart(r.Context(), r.PathValue("name"), progress)
	})
}

func (s *Server) vmStop(w http.ResponseWriter, r *http.Request) error {
	v, err := s.VMs.Stop(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) vmPause(w http.ResponseWriter, r *http.Request) error {
	v, err := s.VMs.Pause(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) vmResume(w http.ResponseWriter, r *http.Request) error {
	v, err := s.VMs.Resume(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) vmKill(w http.ResponseWriter, r *http.Request) error {
	var p api.VMKillParams
	if err := decode(r, &p); err != nil {
		return err
	}
	sig, err := model.ParseSignal(p.Signal)
	if err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	v, err := s.VMs.Kill(r.Context(), r.PathValue("name"), sig)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) vmDelete(w http.ResponseWriter, r *http.Request) error {
	if err := s.VMs.Delete(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

func (s *Server) vmSet(w http.ResponseWriter, r *http.Request) error {
	var p api.VMSetParams
	if err := decode(r, &p); err != nil {
		return err
	}
	v, err := s.VMs.Set(r.Context(), r.PathValue("name"), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) vmPrune(w http.ResponseWriter, r *http.Request) error {
	deleted, err := s.VMs.Prune(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.VMPruneResult{Deleted: deleted})
	return nil
}

func (s *Server) vmLogs(w http.ResponseWriter, r *http.Request) error {
	rc, err := s.VMs.Logs(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain")
	io.Copy(w, rc)
	return nil
}

// vmExec upgrades the connection and splices it to an exec stream of the
// guest agent: the CLI and the agent speak the frame protocol end to end.
func (s *Server) vmExec(w http.ResponseWriter, r *http.Request) error {
	var p api.ExecParams
	if err := decode(r, &p); err != nil {
		return err
	}
	st, err := s.VMs.OpenExec(r.Context(), r.PathValue("name"), p)
	if err != nil {
		return err
	}
	return s.spliceUpgraded(w, st)
}

// spliceUpgraded upgrades the client's connection and splices it to an
// agent stream until either side ends.
func (s *Server) spliceUpgraded(w http.ResponseWriter, st net.Conn) error {
	conn, rw, err := hijack(w)
	if err != nil {
		st.Close()
		return err
	}
	s.wg.Add(1)
	defer s.wg.Done()
	splice(conn, rw.Reader, st)
	return nil
}

// splice copies client frames to the agent stream and agent frames back
// until the agent ends the stream (after the exit frame) or the client
// goes away (the agent then kills the command).
func splice(conn net.Conn, client io.Reader, st net.Conn) {
	done := make(chan struct{})
	go func() {
		io.Copy(st, client)
		st.Close()
		close(done)
	}()
	io.Copy(conn, st)
	st.Close()
	conn.Close()
	<-done
}

// run creates a VM, boots it, runs one command and (with auto-remove)
// deletes the VM, all over one upgraded connection. Because the daemon
// owns the whole sequence, the VM is deleted whatever happens: the
// command fails, the boot fails, or the client disconnects (Ctrl-C).
func (s *Server) run(w http.ResponseWriter, r *http.Request) error {
	var p api.RunParams
	if err := decode(r, &p); err != nil {
		return err
	}
	if len(p.Exec.Argv) == 0 {
		return api.Errorf(api.CodeBadRequest, "no command given")
	}
	conn, rw, err := hijack(w)
	if err != nil {
		return err
	}
	s.wg.Add(1)
	defer s.wg.Done()
	defer conn.Close()
	id := opID(r.Context())
	fw := agent.NewFrameWriter(conn)

	// The client sends nothing but exec frames; while the VM boots, a
	// read error means it went away, which cancels the boot.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, rw.Reader)
		if err == nil {
			err = io.EOF
		}
		pw.CloseWithError(err)
		cancel()
	}()

	fail := func(err error) {
		ae := s.toAPIError(err, id)
		s.Log.Warn("run failed", "op", id, "code", ae.Code, "err", ae.Message)
		fw.WriteJSON(agent.FrameError, ae)
	}
	cleanup := func(v *model.VM) {
		if v == nil || !p.Create.AutoRemove {
			return
		}
		if err := s.VMs.Delete(context.Background(), v.ID); err != nil {
			fail(err)
		}
	}

	p.Create.NoStart = false
	v, err := s.createVM(ctx, p.Create, func(pg api.Progress) {
		fw.WriteJSON(agent.FrameProgress, pg)
	})
	if v != nil {
		fw.WriteJSON(agent.FrameProgress, api.Progress{Stage: "vm", Detail: v.Name})
	}
	if err != nil {
		fail(err)
		cleanup(v)
		return nil
	}
	if p.Workspace != nil {
		start := time.Now()
		if err := s.runUpload(ctx, v.ID, v.Name, *p.Workspace, pr, fw); err != nil {
			fail(err)
			cleanup(v)
			return nil
		}
		fw.WriteJSON(agent.FrameProgress, api.Progress{Stage: "prepare_workspace", DurationMS: time.Since(start).Milliseconds()})
	}
	st, err := s.VMs.OpenExec(ctx, v.ID, p.Exec)
	if err != nil {
		fail(err)
		cleanup(v)
		return nil
	}
	fw.WriteJSON(agent.FrameProgress, api.Progress{Stage: "exec"})
	go func() {
		io.Copy(st, pr)
		st.Close()
	}()
	io.Copy(conn, st)
	st.Close()
	cleanup(v)
	return nil
}

// runUpload asks the client for the workspace and relays it into the VM.
func (s *Server) runUpload(ctx context.Context, vmID, vmName string, p api.WorkspaceParams, client io.Reader, fw *agent.FrameWriter) error {
	st, err := s.VMs.OpenWorkspaceUntar(ctx, vmID)
	if err != nil {
		return err
	}
	defer st.Close()
	fw.WriteJSON(agent.FrameProgress, api.Progress{Stage: api.StageSendWorkspace})
	es, err := relayUpload(client, st, s.uploadIdle())
	if err != nil {
		return fmt.Errorf("send workspace %s to vm %q: %w", p.Path, vmName, err)
	}
	if err := workspaceVerdict(es, vmName); err != nil {
		return err
	}
	return s.VMs.RecordWorkspace(ctx, vmID, p)
}

func (s *Server) vmPorts(w http.ResponseWriter, r *http.Request) error {
	ports, err := s.VMs.Ports(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	if ports == nil {
		ports = []agent.PortInfo{}
	}
	writeJSON(w, http.StatusOK, ports)
	return nil
}

// vmReadiness answers how far the VM's guest has booted.
func (s *Server) vmReadiness(w http.ResponseWriter, r *http.Request) error {
	rd, err := s.VMs.Readiness(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rd)
	return nil
}

// maxWait caps a wait a client asks for.
const maxWait = 30 * time.Minute

// vmWait blocks until the VM's guest reaches the asked readiness, or the
// timeout passes.
func (s *Server) vmWait(w http.ResponseWriter, r *http.Request) error {
	var p api.VMWaitParams
	if err := decode(r, &p); err != nil {
		return err
	}
	if p.For == "" {
		return api.Errorf(api.CodeBadRequest, "say what to wait for: %s, %s or %s", api.WaitAgent, api.WaitSSH, api.WaitSystem)
	}
	timeout := time.Duration(p.TimeoutMS) * time.Millisecond
	if p.TimeoutMS < 0 || timeout > maxWait {
		return api.Errorf(api.CodeBadRequest, "timeout must be between 0 and %v", maxWait)
	}
	rd, err := s.VMs.WaitReady(r.Context(), r.PathValue("name"), p.For, timeout)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rd)
	return nil
}
